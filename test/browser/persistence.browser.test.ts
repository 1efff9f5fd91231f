import type { Page } from "playwright-core";
import { describe, expect, it } from "vitest";
import { pageSuite } from "./page-suite.js";

// Real Chromium, real IndexedDB and BroadcastChannel, the real suite.bridge. The
// page reaches the bridge through the page server's same-origin proxy, which
// counts calls per tab and can hold one back (see app-server.ts). `window.app`
// is typed by the global declaration in fixture/app.ts.

const suite = pageSuite();

const tab = (name: string): Promise<Page> => suite.open(`tab=${name}`);

/** A session with three variables, persisted by the page `page`. */
async function seed(page: Page, options: { watch?: boolean } = {}): Promise<string> {
  const sessionId = await page.evaluate((o) => window.app.open(o), options);
  await page.evaluate(async () => {
    await window.app.register("temperature", "float", 0.7);
    await window.app.register("model", "string", "small");
    await window.app.register("steps", "integer", 3);
    await window.app.set("temperature", 0.9);
  });
  // Persistence writes happen off the write path: wait until they landed.
  await expect
    .poll(async () => (await page.evaluate((id) => window.app.stored(id), sessionId)).keys.length)
    .toBe(4);
  return sessionId;
}

describe("persistence in Chromium", { timeout: 30_000 }, () => {
  it("survives a reload: values shown before the one revalidation call returns", async () => {
    const page = await tab("reload");
    const sessionId = await seed(page);

    suite.server.reset();
    const release = suite.server.hold("GetVariables");
    try {
      await page.reload();
      await page.waitForFunction(() => window.app !== undefined);
      await page.evaluate((id) => window.app.open({ sessionId: id }), sessionId);

      // The revalidation call has reached the proxy and is held there...
      await expect.poll(() => suite.server.calls("reload").GetVariables).toBe(1);
      // ...and the page already shows the persisted values.
      expect(await page.evaluate(() => window.app.isRevalidated())).toBe(false);
      expect(await page.evaluate(() => window.app.cached())).toEqual([
        { name: "model", value: "small", version: 0, possiblyStale: true },
        { name: "steps", value: 3, version: 0, possiblyStale: true },
        { name: "temperature", value: 0.9, version: 1, possiblyStale: true },
      ]);
      expect(await page.locator("#vars").textContent()).toContain(
        "temperature = 0.9 (possibly stale)",
      );
    } finally {
      release();
    }

    const after = await page.evaluate(() => window.app.revalidated());
    expect(after.map((v) => [v.name, v.value, v.possiblyStale])).toEqual([
      ["model", "small", false],
      ["steps", 3, false],
      ["temperature", 0.9, false],
    ]);
    expect(suite.server.calls("reload")).toEqual({
      InitializeSession: 1,
      WatchVariables: 1,
      GetVariables: 1,
    });
    await page.evaluate(() => window.app.close(true));
    await page.close();
  });

  it("shares a change with another tab of the session without a call in that tab", async () => {
    // watch: false in both tabs, so only BroadcastChannel can bring changes
    // to the reader (for a writer with watch, see the next test).
    const writer = await tab("writer");
    const sessionId = await seed(writer, { watch: false });
    const reader = await tab("reader");
    await reader.evaluate((id) => window.app.open({ sessionId: id, watch: false }), sessionId);
    await reader.evaluate(() => window.app.revalidated());
    const seen = (await reader.evaluate(() => window.app.changes())).length;
    suite.server.reset();

    const version = await writer.evaluate(() => window.app.set("temperature", 1.5));
    await writer.evaluate(() => window.app.remove("model"));

    await expect
      .poll(async () => (await reader.evaluate(() => window.app.changes())).slice(seen))
      .toEqual([
        { name: "temperature", value: 1.5, origin: "tab" },
        { name: "model", value: null, origin: "tab" },
      ]);
    expect(await reader.evaluate(() => window.app.cached())).toEqual([
      { name: "steps", value: 3, version: 0, possiblyStale: false },
      { name: "temperature", value: 1.5, version, possiblyStale: false },
    ]);
    expect(suite.server.calls("reader")).toEqual({});
    expect(suite.server.calls("writer")).toEqual({ SetVariable: 1, DeleteVariable: 1 });

    await reader.evaluate(() => window.app.close(false));
    await writer.evaluate(() => window.app.close(true));
    await Promise.all([reader.close(), writer.close()]);
  });

  // A local write is posted to other tabs even when the writer's own watch
  // stream delivered the new version before the SetVariable answer (a race
  // it often wins): watch-less tabs must not keep the old value.
  it("shares a write whose own watch push arrived first", async () => {
    const writer = await tab("watching-writer");
    const sessionId = await seed(writer, { watch: true });
    const reader = await tab("watchless-reader");
    await reader.evaluate((id) => window.app.open({ sessionId: id, watch: false }), sessionId);
    await reader.evaluate(() => window.app.revalidated());

    const release = suite.server.hold("SetVariable", "response");
    const written = writer.evaluate(() => window.app.set("temperature", 1.5));
    try {
      // The bridge applied the write and the writer's watch delivered it...
      await expect
        .poll(async () => (await writer.evaluate(() => window.app.changes())).at(-1))
        .toEqual({ name: "temperature", value: 1.5, origin: "server" });
    } finally {
      // ...before the writer's own call returns.
      release();
    }
    await written;
    try {
      await expect
        .poll(async () =>
          (await reader.evaluate(() => window.app.cached())).find((v) => v.name === "temperature"),
        )
        .toMatchObject({ value: 1.5 });
    } finally {
      await reader.evaluate(() => window.app.close(false));
      await writer.evaluate(() => window.app.close(true));
      await Promise.all([reader.close(), writer.close()]);
    }
  });

  it("keeps one IndexedDB database per session, removed by close({ cleanup: true })", async () => {
    const page = await tab("idb");
    const sessionId = await seed(page);
    const stored = await page.evaluate((id) => window.app.stored(id), sessionId);
    const dbName = stored.name;
    // Named by a SHA-256 of the id: the name does not give the secret away.
    expect(dbName).toMatch(/^unified-bridge:[0-9a-f]{64}$/);
    expect(dbName).not.toContain(sessionId);
    expect(stored.databases).toContain(dbName);
    expect(stored.keys).toHaveLength(4); // meta + the three variables

    await page.evaluate(() => window.app.close(true));
    const after = await page.evaluate((id) => window.app.stored(id), sessionId);
    expect(after.databases).not.toContain(dbName);
    await page.close();
  });
});
