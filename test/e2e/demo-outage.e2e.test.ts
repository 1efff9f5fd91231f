/**
 * The demo through an outage of the bridge: the stack really stops its
 * bridge server (calls to it are refused, the page's watch stream ends) and
 * starts a new one on the same port with the same in-memory store. Edits
 * made in real Chromium meanwhile wait in the page's outbox (IndexedDB),
 * shown pending, survive a reload made while the bridge is down, and reach
 * the bridge when it is back; one that another client overtook is refused
 * with the bridge's value. Checked against the bridge itself over Connect.
 */
import { mkdirSync } from "node:fs";
import { type Client, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import type { Page, Request, Route } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Stack, startStack } from "../../demo/stack.ts";
import { BridgeService } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { decodeValue, encodeValue } from "../../src/values/index.js";
import { launchChromium } from "../support/chromium.js";
import { until, waitFor } from "../support/wait.js";

const SHOTS = "test-results";
/** The page's RPCs, as the Vite proxy forwards them. */
const RPCS = "**/snakepit.bridge.BridgeService/**";

let stack: Stack;
let browser: Awaited<ReturnType<typeof launchChromium>>;
let bridge: Client<typeof BridgeService>;
let page: Page;
let sessionId: string;
/** Streaming tool calls (evaluations) of the page not finished yet. */
let evaluating = 0;

beforeAll(async () => {
  stack = await startStack({
    bridgePort: 0,
    vitePort: 0,
    workerPort: 0,
    watch: false,
    // Other people open the session by its id alone, as in snakepit; the
    // view-only link's suite runs the demo as npm start does (tokens).
    access: "session-id",
    python: false,
    logLevel: "error",
    viteLogLevel: "error",
  });
  bridge = createClient(
    BridgeService,
    createConnectTransport({ baseUrl: stack.bridgeUrl, httpVersion: "1.1" }),
  );
  browser = await launchChromium();
  page = await browser.context.newPage();
  const isEvaluation = (url: string) => url.includes("/ExecuteStreamingTool");
  page.on("request", (r) => {
    if (isEvaluation(r.url())) evaluating++;
  });
  const finished = (r: Request) => {
    if (isEvaluation(r.url())) evaluating--;
  };
  page.on("requestfinished", finished);
  page.on("requestfailed", finished);
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await stack?.stop();
});

/** A variable as the bridge holds it. */
async function held(name: string): Promise<{ value: unknown; version: number }> {
  const { variable } = await bridge.getVariable({
    sessionId,
    variableIdentifier: name,
    bypassCache: true,
  });
  return { value: decodeValue(variable?.value).value, version: variable?.version ?? -1 };
}

/** What the page shows of a variable: value, version, pending marker, refusal. */
async function row(name: string) {
  return page.$eval(`tr[data-var="${name}"]`, (tr) => {
    const badge = tr.querySelector<HTMLElement>("[data-pending]");
    return {
      value: tr.querySelector<HTMLInputElement | HTMLSelectElement>("[data-input]")?.value,
      version: tr.querySelector(".version")?.textContent,
      pending: badge?.hidden === false ? badge.textContent : undefined,
      refused: tr.querySelector("[data-refused]")?.textContent || undefined,
      saving: tr.classList.contains("saving"),
    };
  });
}

async function edit(name: string, value: string): Promise<void> {
  await page.fill(`[data-input="${name}"]`, value);
  await page.press(`[data-input="${name}"]`, "Enter");
}

async function shot(name: string): Promise<void> {
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({
    path: `${SHOTS}/demo-outage-${name}.png`,
    fullPage: true,
    animations: "disabled",
  });
}

/** Stops the bridge and waits until the page says it cannot reach it. */
async function stopBridge(): Promise<void> {
  // No evaluation of the page is cut off by the stop (it would add a notice).
  await waitFor(
    () => {
      if (evaluating > 0) throw new Error(`${evaluating} evaluations still running`);
    },
    { timeoutMs: 60_000 },
  );
  await stack.stopBridge();
  expect(stack.bridgeListening).toBe(false);
  await page.waitForSelector('[data-conn="down"]', { timeout: 15_000 });
}

describe("the demo through an outage of the bridge", () => {
  it("opens live, scored, with the initial values", async () => {
    await page.goto(`${stack.url}?trials=3&seed=7`);
    await page.waitForSelector('.pill[data-freshness="live"]', { timeout: 30_000 });
    sessionId = (await page.getAttribute("[data-session]", "data-session")) ?? "";
    expect(sessionId).not.toBe("");
    await page.waitForSelector('[data-current-score][data-score^="0."]', { timeout: 60_000 });
    expect([await held("threshold"), await held("smoothing")]).toEqual([
      { value: 0.5, version: 0 },
      { value: 1, version: 0 },
    ]);
  }, 90_000);

  it("keeps edits made while the bridge is stopped, shown pending, without a row stuck saving", async () => {
    await stopBridge();
    expect(await page.textContent("[data-conn]")).toContain(
      "Bridge unreachable · edits are kept in this browser",
    );

    await edit("threshold", "0.3");
    await edit("smoothing", "2.5");
    await page.waitForSelector('[data-pending="smoothing"]:not([hidden])');
    expect([await row("threshold"), await row("smoothing")]).toEqual([
      {
        value: "0.3",
        version: "v0",
        pending: "pending · waiting for the bridge",
        refused: undefined,
        saving: false,
      },
      {
        value: "2.5",
        version: "v0",
        pending: "pending · waiting for the bridge",
        refused: undefined,
        saving: false,
      },
    ]);
    // Untouched variables show no marker.
    expect((await row("ngrams")).pending).toBeUndefined();
    await shot("pending");
  }, 90_000);

  it("after a reload with the bridge still down, opens offline with the saved values and the kept edits", async () => {
    await page.reload();
    await page.waitForSelector('.pill[data-freshness="saved"]', { timeout: 15_000 });
    await page.waitForSelector('[data-pending="smoothing"]:not([hidden])', { timeout: 15_000 });
    expect({
      conn: await page.getAttribute("[data-conn]", "data-conn"),
      connText: await page.textContent("[data-conn]"),
      notice: await page.textContent('[data-notice="warn"][data-unreachable]'),
      session: await page.getAttribute("[data-session]", "data-session"),
      threshold: await row("threshold"),
      smoothing: await row("smoothing"),
      ngrams: await row("ngrams"),
    }).toEqual({
      conn: "down",
      connText: expect.stringContaining("Bridge unreachable · edits are kept in this browser"),
      notice: expect.stringContaining(
        "Edits you make are kept here and sent when the bridge is back",
      ),
      session: sessionId,
      threshold: expect.objectContaining({
        value: "0.3",
        version: "v0",
        pending: "pending · waiting for the bridge",
      }),
      smoothing: expect.objectContaining({
        value: "2.5",
        version: "v0",
        pending: "pending · waiting for the bridge",
      }),
      ngrams: expect.objectContaining({ value: "unigrams", version: "v0", pending: undefined }),
    });
    // Nothing reached the bridge.
    expect(stack.bridgeListening).toBe(false);
    await shot("reloaded");
  }, 60_000);

  it("when the bridge is back, the kept edits are committed once and the page goes live", async () => {
    await stack.startBridge();
    await page.waitForSelector('[data-conn="live"]', { timeout: 20_000 });
    await page.waitForSelector('[data-pending="threshold"][hidden]', {
      state: "attached",
      timeout: 20_000,
    });
    await page.waitForSelector('[data-pending="smoothing"][hidden]', { state: "attached" });
    await waitFor(async () =>
      expect([await row("threshold"), await row("smoothing")]).toEqual([
        { value: "0.3", version: "v1", pending: undefined, refused: undefined, saving: false },
        { value: "2.5", version: "v1", pending: undefined, refused: undefined, saving: false },
      ]),
    );
    // The bridge holds them, one version step each (applied once).
    expect([await held("threshold"), await held("smoothing")]).toEqual([
      { value: 0.3, version: 1 },
      { value: 2.5, version: 1 },
    ]);
    expect(await page.$$eval('[data-unreachable], [data-notice="error"]', (n) => n.length)).toBe(0);
    await page.waitForSelector('.pill[data-freshness="live"]');
    await shot("committed");
  }, 60_000);

  it("an edit made offline that another client overtook is refused, with the bridge's value shown", async () => {
    await stopBridge();
    await edit("vocab_size", "800");
    await page.waitForSelector('[data-pending="vocab_size"]:not([hidden])');
    expect((await row("vocab_size")).value).toBe("800");

    // Keep the page cut off while the bridge is back, so that another
    // client writes first: the page's watch attempts are refused as by a
    // stopped bridge. Once one was refused here, none from before is pending.
    let refused = 0;
    await page.route(RPCS, async (route: Route) => {
      if (route.request().url().includes("/WatchVariables")) refused++;
      await route.abort("connectionrefused");
    });
    await until(() => refused > 0, "a watch attempt of the page refused");
    await stack.startBridge();
    await bridge.setVariable({
      sessionId,
      variableIdentifier: "vocab_size",
      value: encodeValue("integer", 1000).any,
      metadata: { source: "another-client" },
    });
    expect(await held("vocab_size")).toEqual({ value: 1000, version: 1 });

    await page.unroute(RPCS);
    await page.waitForSelector('[data-refused="vocab_size"]:not(:empty)', { timeout: 20_000 });
    await page.waitForSelector('[data-pending="vocab_size"][hidden]', { state: "attached" });
    const shown = await row("vocab_size");
    expect(shown).toEqual({
      value: "1000",
      version: "v1",
      pending: undefined,
      refused: expect.stringContaining("Someone else changed it first."),
      saving: false,
    });
    expect(shown.refused).toContain("Your 800 was not saved; the bridge holds 1000 (v1)");
    expect(await page.textContent('[data-current="vocab_size"]')).toBe("1000");
    // The notice gives the bridge's own reason.
    expect(await page.textContent('[data-notice="error"]')).toContain(
      "Someone else changed it first",
    );
    // The bridge kept the other client's value: the page's edit was never applied.
    expect(await held("vocab_size")).toEqual({ value: 1000, version: 1 });
    await page.waitForSelector('[data-conn="live"]');
    await shot("refused");
  }, 90_000);
});
