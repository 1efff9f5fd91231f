/**
 * The offline outbox in real Chromium: the page (fixture/outbox-app.ts)
 * opens its context with idbPersistence() and idbOutbox(), and the bridge
 * really goes away: it runs on Redis, is stopped, and a new bridge is
 * started on the same Redis and key prefix (the session survives, as in a
 * redeploy), with the page server's proxy retargeted to it. The proxy also
 * counts calls per tab. The Node twin of these scenarios, over a TCP proxy
 * with memoryOutbox, is test/client/outbox.test.ts.
 *
 * Screenshots of the key moments are saved as test-results/outbox-*.png.
 */
import { mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { BrowserContext, JSHandle, Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { createRedisStore, type RedisStore } from "../../src/server/store/redis-store.js";
import { decodeValue, encodeValue } from "../../src/values/index.js";
import { type RunningBridge, startBridge } from "../support/bridge.js";
import { launchChromium } from "../support/chromium.js";
import { startRedis, type TestRedis } from "../support/redis-server.js";
import { until, waitFor } from "../support/wait.js";
import { type AppServer, bundleApp, startAppServer } from "./app-server.js";
import type { App } from "./fixture/outbox-app.js";

const screenshots = fileURLToPath(new URL("../../test-results/", import.meta.url));

let redis: TestRedis;
let appJs: string;
let browser: { context: BrowserContext; close(): Promise<void> };
/** Uncaught errors of any page: each fails the test that caused it. */
const pageErrors: Error[] = [];

beforeAll(async () => {
  [redis, appJs, browser] = await Promise.all([
    startRedis(),
    bundleApp("test/browser/fixture/outbox-app.ts"),
    launchChromium(),
  ]);
  mkdirSync(screenshots, { recursive: true });
});

afterAll(async () => {
  await browser?.close();
  await redis?.stop();
});

afterEach(() => {
  expect(pageErrors.splice(0)).toEqual([]);
});

/**
 * Runs `fn` on a page's `window.app`. Through a handle: fixture/app.ts
 * types the global for its own page's App.
 */
async function app<R, A = undefined>(
  page: Page,
  fn: (app: App, arg: A) => R | Promise<R>,
  arg?: A,
): Promise<R> {
  const handle = (await page.evaluateHandle(
    () => (window as unknown as { app: App }).app,
  )) as JSHandle<App>;
  try {
    return (await handle.evaluate(fn as never, arg)) as R;
  } finally {
    await handle.dispose();
  }
}

async function screenshot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: `${screenshots}outbox-${name}.png` });
}

/** The cells of a variable's row, as the user reads them. */
const rowText = (page: Page, name: string) =>
  page.locator(`#vars tr[data-name="${name}"] td`).allTextContents();

let deployments = 0;

/**
 * One bridge at a time on the shared Redis under a key prefix of this
 * test's own, and the page server in front of it; everything is stopped
 * when the test ends.
 */
async function deployment() {
  const keyPrefix = `outbox-browser-${++deployments}:`;
  const startOne = async () => {
    const store: RedisStore = await createRedisStore({ url: redis.url, keyPrefix });
    const bridge = await startBridge({ sessionStore: store });
    return { bridge, store };
  };
  let running: { bridge: RunningBridge; store: RedisStore } | undefined = await startOne();
  const server: AppServer = await startAppServer(running.bridge.url, appJs);
  const pages: Page[] = [];
  onTestFinished(async () => {
    for (const page of pages) await page.close();
    await server.close();
    await running?.bridge.stop();
    await running?.store.close();
  });

  /** Stops the bridge (its Redis store closes with it: the process is gone). */
  const stop = async () => {
    const stopping = running;
    running = undefined;
    await stopping?.bridge.stop();
    await stopping?.store.close();
  };
  /** A new bridge on the same Redis and key prefix; the page server still forwards elsewhere. */
  const start = async () => {
    running = await startOne();
    return running.bridge;
  };
  /** Forwards the pages' calls to `bridge` from now on, counting them from zero. */
  const reconnect = (bridge: RunningBridge) => {
    // In one step: every call counted from here on reaches the new bridge.
    server.reset();
    server.retarget(bridge.url);
  };
  /** A page of the app whose calls the page server counts under `name`. */
  const tab = async (name: string) => {
    const page = await browser.context.newPage();
    pages.push(page);
    page.on("pageerror", (error) => pageErrors.push(error));
    await page.setViewportSize({ width: 760, height: 440 });
    await page.goto(`${server.origin}/?tab=${name}`);
    await page.waitForFunction(() => "app" in window);
    return page;
  };
  return {
    server,
    get bridge(): RunningBridge {
      if (running === undefined) throw new Error("the bridge is stopped");
      return running.bridge;
    },
    stop,
    start,
    reconnect,
    tab,
  };
}

/** A variable's history on the bridge, oldest first. */
async function history(bridge: RunningBridge, sessionId: string, name: string) {
  const { entries } = await bridge
    .client()
    .getVariableHistory({ sessionId, variableIdentifier: name });
  return entries
    .map((e) => ({
      version: e.version,
      value: decodeValue(e.value).value,
      at: e.timestamp === undefined ? 0 : timestampMs(e.timestamp),
    }))
    .reverse();
}

const versionsAndValues = (entries: Awaited<ReturnType<typeof history>>) =>
  entries.map((e) => [e.version, e.value]);

/** Waits until the page's context has lost its watch stream. */
const offline = (page: Page) =>
  until(async () => !(await app(page, (a) => a.live())), "the page to see the bridge gone");

describe("the offline outbox in Chromium", { timeout: 40_000 }, () => {
  it("edits made while the bridge is down stay pending across a reload and are committed in order when it is back", async () => {
    const d = await deployment();
    const page = await d.tab("editor");
    const { sessionId } = await app(page, (a) => a.open());
    await app(page, async (a) => {
      await a.register("x", "integer", 0);
      await a.register("label", "string", "a");
    });
    await until(() => app(page, (a) => a.live()), "the watch stream live");
    // The reload below can only show what persistence kept.
    await waitFor(async () =>
      expect(await app(page, (a) => a.persisted())).toEqual([
        { name: "label", version: 0 },
        { name: "x", version: 0 },
      ]),
    );

    await d.stop();
    await offline(page);
    await app(page, async (a) => {
      await a.edit("x", 1);
      await a.edit("x", 2);
      await a.edit("label", "b");
    });
    const pendingOffline = {
      rows: [
        { name: "label", value: "b", version: 0, pending: 1 },
        { name: "x", value: 2, version: 0, pending: 2 },
      ],
      writes: [
        { name: "x", value: 1, queued: true },
        { name: "x", value: 2, queued: true },
        { name: "label", value: "b", queued: true },
      ],
      x: ["x", "2", "v0", "pending (2)"],
      label: ["label", '"b"', "v0", "pending (1)"],
    };
    expect({
      rows: await app(page, (a) => a.rows()),
      writes: await app(page, (a) => a.pendingWrites()),
      x: await rowText(page, "x"),
      label: await rowText(page, "label"),
    }).toEqual(pendingOffline);
    await screenshot(page, "1-pending-offline");

    // Reloaded with the bridge still down: opened from IndexedDB alone.
    await page.reload();
    await page.waitForFunction(() => "app" in window);
    expect(await app(page, (a, id) => a.open({ sessionId: id }), sessionId)).toEqual({
      sessionId,
      openedOffline: true,
      created: false,
    });
    expect({
      rows: await app(page, (a) => a.rows()),
      writes: await app(page, (a) => a.pendingWrites()),
      x: await rowText(page, "x"),
      label: await rowText(page, "label"),
    }).toEqual(pendingOffline);
    expect(await page.locator("#status").textContent()).toContain("opened offline");
    await screenshot(page, "1-reloaded-offline");

    const back = await d.start();
    d.reconnect(back);
    await until(
      async () =>
        (await app(page, (a) => a.pendingWrites())).length === 0 &&
        (await page.locator("#vars tr.pending").count()) === 0,
      "the pending edits committed",
    );
    const x = await history(back, sessionId, "x");
    const label = await history(back, sessionId, "label");
    expect({
      x: versionsAndValues(x),
      label: versionsAndValues(label),
      rows: await app(page, (a) => a.rows()),
      shown: [await rowText(page, "x"), await rowText(page, "label")],
      // Once each: no write was sent twice.
      sent: d.server.calls("editor").SetVariable,
    }).toEqual({
      x: [
        [0, 0],
        [1, 1],
        [2, 2],
      ],
      label: [
        [0, "a"],
        [1, "b"],
      ],
      rows: [
        { name: "label", value: "b", version: 1, pending: 0 },
        { name: "x", value: 2, version: 2, pending: 0 },
      ],
      shown: [
        ["x", "2", "v2", "saved"],
        ["label", '"b"', "v1", "saved"],
      ],
      sent: 3,
    });
    // In the order they were made, across variables too.
    expect(x[2]?.at).toBeLessThanOrEqual(label[1]?.at ?? 0);
    await screenshot(page, "1-committed");
  });

  it("an offline edit that conflicts with another client's write is refused, and the page shows the bridge's value", async () => {
    const d = await deployment();
    const page = await d.tab("editor");
    const { sessionId } = await app(page, (a) => a.open());
    await app(page, (a) => a.register("x", "integer", 0));
    await until(() => app(page, (a) => a.live()), "the watch stream live");

    await d.stop();
    await offline(page);
    await app(page, async (a) => {
      await a.edit("x", 5);
      await a.edit("x", 6); // made on the first: refused with it, never sent
    });
    expect(await rowText(page, "x")).toEqual(["x", "6", "v0", "pending (2)"]);

    // The bridge is back, and another client writes x before the page reconnects.
    const back = await d.start();
    const other = await back.client().setVariable({
      sessionId,
      variableIdentifier: "x",
      value: encodeValue("integer", 9).any,
    });
    expect(other.newVersion).toBe(1);
    d.reconnect(back);

    await until(
      async () => (await app(page, (a) => a.refusals())).length === 2,
      "both edits refused",
    );
    await until(
      async () => (await page.locator("#vars tr.pending").count()) === 0,
      "no edit shown pending",
    );
    const stored = await back
      .client()
      .getVariable({ sessionId, variableIdentifier: "x", bypassCache: true });
    expect({
      refusals: await app(page, (a) => a.refusals()),
      shownRefusals: await page.locator("#refusals li").allTextContents(),
      rows: await app(page, (a) => a.rows()),
      shown: await rowText(page, "x"),
      server: [stored.variable?.version, decodeValue(stored.variable?.value).value],
      history: versionsAndValues(await history(back, sessionId, "x")),
      sent: d.server.calls("editor").SetVariable,
    }).toEqual({
      refusals: [
        { name: "x", attempted: 5, current: 9, currentVersion: 1, code: "Aborted" },
        { name: "x", attempted: 6, current: 9, currentVersion: 1, code: "Aborted" },
      ],
      shownRefusals: [
        "x: 5 was refused (Aborted); the bridge has 9 (v1)",
        "x: 6 was refused (Aborted); the bridge has 9 (v1)",
      ],
      rows: [{ name: "x", value: 9, version: 1, pending: 0 }],
      shown: ["x", "9", "v1", "saved"],
      server: [1, 9],
      history: [
        [0, 0],
        [1, 9],
      ],
      sent: 1,
    });
    await screenshot(page, "2-refused");
  });

  it("two tabs edit offline; when the bridge is back one tab replays every edit, once", async () => {
    const d = await deployment();
    const a = await d.tab("a");
    const { sessionId } = await app(a, (x) => x.open());
    await app(a, async (x) => {
      await x.register("x", "integer", 0);
      await x.register("label", "string", "a");
    });
    const b = await d.tab("b");
    await app(b, (x, id) => x.open({ sessionId: id }), sessionId);
    // Read while connected, so this tab can check its offline writes.
    await app(b, async (x) => {
      await x.read("x");
      await x.read("label");
    });
    await until(
      async () => (await app(a, (x) => x.live())) && (await app(b, (x) => x.live())),
      "both tabs live",
    );

    await d.stop();
    await offline(a);
    await offline(b);
    await app(a, (x) => x.edit("x", 1));
    // Tab b sees a's edit pending, and writes on top of it.
    await until(
      async () => (await rowText(b, "x")).join(" ") === "x 1 v0 pending (1)",
      "tab b showing a's edit",
    );
    await app(b, async (x) => {
      await x.edit("x", 2);
      await x.edit("label", "b");
    });
    await until(
      async () => (await app(a, (x) => x.pendingWrites())).length === 3,
      "tab a showing b's edits",
    );
    const pending = [
      { name: "x", value: 1, queued: true },
      { name: "x", value: 2, queued: true },
      { name: "label", value: "b", queued: true },
    ];
    expect({
      a: await app(a, (x) => x.pendingWrites()),
      b: await app(b, (x) => x.pendingWrites()),
      shown: [await rowText(a, "x"), await rowText(b, "x")],
    }).toEqual({
      a: pending,
      b: pending,
      shown: [
        ["x", "2", "v0", "pending (2)"],
        ["x", "2", "v0", "pending (2)"],
      ],
    });

    const back = await d.start();
    d.reconnect(back);
    await until(
      async () =>
        (await app(a, (x) => x.pendingWrites())).length === 0 &&
        (await app(b, (x) => x.pendingWrites())).length === 0,
      "both tabs with nothing pending",
    );
    const committed = [
      { name: "label", value: "b", version: 1, pending: 0 },
      { name: "x", value: 2, version: 2, pending: 0 },
    ];
    await waitFor(async () =>
      expect([await app(a, (x) => x.rows()), await app(b, (x) => x.rows())]).toEqual([
        committed,
        committed,
      ]),
    );
    const sent = [d.server.calls("a").SetVariable ?? 0, d.server.calls("b").SetVariable ?? 0];
    expect({
      x: versionsAndValues(await history(back, sessionId, "x")),
      label: versionsAndValues(await history(back, sessionId, "label")),
      // One tab sent all three, the other none.
      sent: [...sent].sort(),
    }).toEqual({
      x: [
        [0, 0],
        [1, 1],
        [2, 2],
      ],
      label: [
        [0, "a"],
        [1, "b"],
      ],
      sent: [0, 3],
    });
  });
});
