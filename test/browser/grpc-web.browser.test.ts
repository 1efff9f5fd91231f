/**
 * Google's `grpc-web` client in real Chromium (its transport is
 * XMLHttpRequest), calling a real bridge directly from another origin, as a
 * page without Envoy in front would: CORS preflights included. Both formats:
 * text (`application/grpc-web-text`, the client's default and the only one in
 * which XMLHttpRequest hands over a stream's messages as they arrive) and
 * binary (`application/grpc-web+proto`). See fixture/grpc-web-app.ts for how
 * the messages are serialized.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { type RunningBridge, startBridge } from "../support/bridge.js";
import { launchChromium } from "../support/chromium.js";
import { bundleApp } from "./app-server.js";

let page: Page;
let pageServer: Server;
let bridge: RunningBridge;
let browser: Awaited<ReturnType<typeof launchChromium>>;
const pageErrors: Error[] = [];

beforeAll(async () => {
  const js = await bundleApp("test/browser/fixture/grpc-web-app.ts");
  pageServer = createServer((req, res) => {
    if (req.url === "/app.js") {
      res.writeHead(200, { "content-type": "text/javascript; charset=utf-8" }).end(js);
    } else {
      res
        .writeHead(200, { "content-type": "text/html; charset=utf-8" })
        .end('<!doctype html><meta charset="utf-8"><script type="module" src="/app.js"></script>');
    }
  });
  await new Promise<void>((resolve) => pageServer.listen(0, "127.0.0.1", resolve));
  const origin = `http://127.0.0.1:${(pageServer.address() as AddressInfo).port}`;
  bridge = await startBridge({ corsOrigins: [origin] });
  browser = await launchChromium();
  page = await browser.context.newPage();
  page.on("pageerror", (error) => pageErrors.push(error));
  await page.goto(`${origin}/?bridge=${encodeURIComponent(bridge.url)}`);
  await page.waitForFunction(() => window.grpcWeb !== undefined);
});

afterAll(async () => {
  await browser?.close();
  await bridge?.stop();
  await new Promise<void>((resolve) =>
    pageServer ? pageServer.close(() => resolve()) : resolve(),
  );
  expect(pageErrors).toEqual([]);
});

describe.each(["text", "binary"] as const)("grpc-web (Google) in Chromium, %s format", (format) => {
  it("makes unary calls across origins, with authorization and x-request-id headers", async () => {
    expect(await page.evaluate((f) => window.grpcWeb.ping(f, `hi ${f}`), format)).toBe(
      `hi ${format}`,
    );
    // Chromium preflights these; a preflight that does not admit them fails the call.
    const headers = { authorization: "Bearer not-a-worker", "x-request-id": `req-${format}` };
    expect(
      await page.evaluate(([f, h]) => window.grpcWeb.ping(f, "with headers", h), [
        format,
        headers,
      ] as const),
    ).toBe("with headers");
    const result = await page.evaluate((f) => window.grpcWeb.append(f, "from grpc-web"), format);
    expect(result).toMatchObject({
      count: 1,
      messages: [{ role: "user", content: "from grpc-web" }],
    });
  });

  it("reports the status and message the bridge set", async () => {
    expect(await page.evaluate((f) => window.grpcWeb.missingVariable(f), format)).toEqual({
      code: 5,
      message: "Variable not found: nope",
    });
  });

  it("streams a server stream to its end", async () => {
    const chunks = await page.evaluate(
      (f) => window.grpcWeb.exportVariables(f, ["a", "b"]),
      format,
    );
    expect(chunks).toEqual([
      { name: "a", type: "integer", value: 0, version: 0 },
      { name: "b", type: "integer", value: 0, version: 0 },
      { count: 2 },
    ]);
  });
});

describe("grpc-web (Google) WatchVariables in Chromium", () => {
  it("text format: each update arrives while the stream is open", async () => {
    const sessionId = await page.evaluate(() => window.grpcWeb.startWatch("text"));
    await vi.waitFor(async () => {
      expect(await page.evaluate(() => window.grpcWeb.updates())).toEqual([
        { type: "initial_value", value: 0 },
      ]);
    });
    for (let v = 1; v <= 3; v++) {
      expect(
        await page.evaluate(([id, n]) => window.grpcWeb.setX("text", id, n), [
          sessionId,
          v,
        ] as const),
      ).toBe(v);
      await vi.waitFor(async () => {
        const updates = await page.evaluate(() => window.grpcWeb.updates());
        expect(updates.at(-1)).toEqual({ type: "value_changed", value: v });
      });
    }
    expect(await page.evaluate(() => window.grpcWeb.updates())).toHaveLength(4);
    await page.evaluate(() => window.grpcWeb.stopWatch());
  });

  it("binary format: XMLHttpRequest hands over the updates only when the stream ends", async () => {
    // The client reads a binary reply as one ArrayBuffer, which
    // XMLHttpRequest provides once the response is complete: live updates
    // need the text format. Ending the session ends the stream.
    const sessionId = await page.evaluate(() => window.grpcWeb.startWatch("binary"));
    expect(await page.evaluate((id) => window.grpcWeb.setX("binary", id, 1), sessionId)).toBe(1);
    await page.evaluate((id) => window.grpcWeb.cleanup("binary", id), sessionId);
    await vi.waitFor(async () => {
      const updates = await page.evaluate(() => window.grpcWeb.updates());
      expect(updates.slice(0, 2)).toEqual([
        { type: "initial_value", value: 0 },
        { type: "value_changed", value: 1 },
      ]);
    });
  });
});
