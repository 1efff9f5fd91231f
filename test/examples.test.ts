/**
 * The README's usage examples are real files in examples/, and this suite
 * runs each one where it is meant to run: Node against a real bridge, the
 * browser example in Chromium, the Worker in workerd. It also checks that
 * the README shows exactly that code, so the two cannot drift apart.
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { Miniflare } from "miniflare";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { nodeExample } from "../examples/node.js";
import { decodeJsonAny, encodeValue } from "../src/values/index.js";
import { startAppServer } from "./browser/app-server.js";
import { type RunningBridge, startBridge } from "./support/bridge.js";
import { launchChromium } from "./support/chromium.js";

const root = (path: string) => fileURLToPath(new URL(`../${path}`, import.meta.url));
const readme = readFileSync(root("README.md"), "utf8");

/** The code between `// #region readme` and `// #endregion`, dedented. */
function region(file: string): string {
  const text = readFileSync(root(file), "utf8");
  const match = /\/\/ #region readme\n([\s\S]*?)\n\s*\/\/ #endregion/.exec(text);
  if (match?.[1] === undefined) return text.trimEnd();
  const lines = match[1].split("\n");
  const indent = Math.min(
    ...lines.filter((l) => l.trim() !== "").map((l) => /^ */.exec(l)?.[0].length ?? 0),
  );
  return lines.map((l) => l.slice(indent)).join("\n");
}

/** Bundles an entry for a browser or Worker, the package name resolved to the sources. */
async function bundle(entry: string, conditions: string[]): Promise<string> {
  const result = await build({
    entryPoints: [root(entry)],
    bundle: true,
    write: false,
    format: "esm",
    platform: "browser",
    conditions,
    target: "es2022",
    logLevel: "silent",
    // The package name resolves through tsconfig.json's "paths", the one alias map.
    tsconfig: root("tsconfig.json"),
  });
  const text = result.outputFiles[0]?.text;
  if (text === undefined) throw new Error(`esbuild produced nothing for ${entry}`);
  return text;
}

let bridge: RunningBridge;
beforeAll(async () => {
  bridge = await startBridge();
});
afterAll(async () => {
  await bridge.stop();
});

describe("README examples", () => {
  it.each(["examples/node.ts", "examples/browser.ts", "examples/worker.ts"])(
    "shows %s exactly",
    (file) => {
      expect(readme).toContain(region(file));
    },
  );

  it("Node: binds, writes through the cache, refuses bad input locally", async () => {
    const lines: string[] = [];
    const spy = vi.spyOn(console, "log").mockImplementation((line: unknown) => {
      lines.push(String(line));
    });
    try {
      await nodeExample(bridge.url);
    } finally {
      spy.mockRestore();
    }
    expect(lines).toEqual([
      "0.9",
      "ConnectError: [invalid_argument] variable 'temperature': value 2.5 is above maximum 2",
    ]);
  });

  it("Worker: appends to the session's conversation from workerd", async () => {
    const script = await bundle("examples/worker.ts", ["workerd", "worker", "browser"]);
    const mf = new Miniflare({
      modules: true,
      script,
      bindings: { BRIDGE_URL: bridge.url },
      compatibilityDate: "2026-04-26",
    });
    try {
      const { sessionId } = await bridge.client().initializeSession({});
      const res = await mf.dispatchFetch("http://worker/", {
        method: "POST",
        headers: { "x-session": sessionId },
        body: "hello from the edge",
      });
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({
        count: 1,
        messages: [{ role: "user", content: "hello from the edge" }],
      });
      const history = await bridge
        .client()
        .executeTool({ sessionId, toolName: "conversation_history" });
      expect(decodeJsonAny(history.result)).toMatchObject({ count: 1 });
    } finally {
      await mf.dispose();
    }
  });

  it("browser: renders changes pushed by another client, in Chromium", async () => {
    const page = `
      import { browserExample } from ${JSON.stringify(root("examples/browser.ts"))};
      const list = document.getElementById("vars");
      window.ready = browserExample((name, snapshot) => {
        const item = document.createElement("li");
        item.textContent = name + "=" + (snapshot === undefined ? "deleted" : JSON.stringify(snapshot.value));
        list.append(item);
      });
    `;
    const result = await build({
      stdin: { contents: page, resolveDir: root("test"), loader: "ts" },
      bundle: true,
      write: false,
      format: "esm",
      platform: "browser",
      logLevel: "silent",
      alias: {
        "unified-bridge/persist/idb": root("src/client/persist/idb.ts"),
        "unified-bridge": root("src/client/index.ts"),
      },
    });
    const app = await startAppServer(bridge.url, result.outputFiles[0]?.text ?? "");
    const chromium = await launchChromium();
    try {
      const c = bridge.client();
      const { sessionId } = await c.initializeSession({});
      await c.registerVariable({
        sessionId,
        name: "threshold",
        type: "float",
        initialValue: encodeValue("float", 0.5).any,
      });
      const tab = await chromium.context.newPage();
      await tab.goto(`${app.origin}/?session=${sessionId}`);
      await tab.waitForFunction(
        () => (window as unknown as { ready?: Promise<unknown> }).ready !== undefined,
      );
      await tab.evaluate(async () => {
        const ctx = await (window as unknown as { ready: Promise<{ cache: { live: boolean } }> })
          .ready;
        for (let i = 0; i < 200 && !ctx.cache.live; i++)
          await new Promise((r) => setTimeout(r, 10));
      });
      await c.setVariable({
        sessionId,
        variableIdentifier: "threshold",
        value: encodeValue("float", 0.8).any,
      });
      await tab.waitForFunction(() =>
        document.getElementById("vars")?.textContent?.includes("threshold=0.8"),
      );
    } finally {
      await chromium.close();
      await app.close();
    }
  });
});
