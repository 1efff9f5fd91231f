import { Code, ConnectError } from "@connectrpc/connect";
import { IDBFactory as FakeIDBFactory } from "fake-indexeddb";
import { describe, expect, it } from "vitest";
import { useSessionContexts } from "../../../test/support/contexts.js";
import { bytes, dbName, names, rawPut } from "../../../test/support/idb.js";
import { until } from "../../../test/support/wait.js";
import type { PersistenceAdapter } from "../persistence.js";
import { idbPersistence } from "./idb.js";

const rejection = (p: Promise<unknown>) =>
  p.then(
    () => {
      throw new Error("expected a rejection");
    },
    (e: unknown) => e,
  );

/** An IDBFactory whose open() throws, as Firefox's private mode used to. */
function throwingFactory(): IDBFactory & { opens: number } {
  const factory = {
    opens: 0,
    open() {
      factory.opens++;
      throw new DOMException(
        "A mutation operation was attempted on a database that did not allow mutations.",
        "InvalidStateError",
      );
    },
    deleteDatabase() {
      throw new DOMException("not allowed", "InvalidStateError");
    },
  };
  return factory as unknown as IDBFactory & { opens: number };
}

/** An IDBFactory whose open request fails with `error`, as a browser out of disk space does. */
function failingOpenFactory(error: DOMException): IDBFactory {
  return {
    open() {
      const request = { error, result: undefined } as unknown as IDBOpenDBRequest;
      setTimeout(() => request.onerror?.(new Event("error")), 0);
      return request;
    },
  } as unknown as IDBFactory;
}

describe("idbPersistence", () => {
  it("opens nothing until first use, then one database per session", async () => {
    const factory = new FakeIDBFactory();
    const adapter = idbPersistence({ indexedDB: factory });
    expect(await names(factory)).toEqual([]);

    await adapter.save("s1", [{ id: "a", bytes: bytes(1, 2) }]);
    await adapter.save("s2", [{ id: "a", bytes: bytes(9) }]);
    expect(await names(factory)).toEqual([await dbName("s1"), await dbName("s2")].sort());
    expect(await adapter.load("s1")).toEqual([bytes(1, 2)]);
    expect(await adapter.load("s2")).toEqual([bytes(9)]);
  });

  it("replaces by id, removes, and clear() drops the session's database", async () => {
    const factory = new FakeIDBFactory();
    const adapter = idbPersistence({ indexedDB: factory });
    await adapter.save("s", [
      { id: "a", bytes: bytes(1) },
      { id: "b", bytes: bytes(2) },
    ]);
    await adapter.save("s", [{ id: "a", bytes: bytes(3) }]);
    expect((await adapter.load("s")).sort((x, y) => (x[0] ?? 0) - (y[0] ?? 0))).toEqual([
      bytes(2),
      bytes(3),
    ]);
    await adapter.remove("s", ["b"]);
    expect(await adapter.load("s")).toEqual([bytes(3)]);

    await adapter.clear("s");
    expect(await names(factory)).toEqual([]);
    // Still usable afterwards: the database is opened again.
    expect(await idbPersistence({ indexedDB: factory }).load("s")).toEqual([]);
  });

  it("stores a view on a larger buffer as just its bytes", async () => {
    const factory = new FakeIDBFactory();
    const adapter = idbPersistence({ indexedDB: factory });
    const big = new Uint8Array(4096).fill(7);
    await adapter.save("s", [{ id: "a", bytes: big.subarray(10, 13) }]);
    const [loaded] = await adapter.load("s");
    expect(loaded).toEqual(bytes(7, 7, 7));
    expect(loaded?.buffer.byteLength).toBe(3);
  });

  it("discards the store when the buster changes", async () => {
    const factory = new FakeIDBFactory();
    await idbPersistence({ indexedDB: factory, buster: "v1" }).save("s", [
      { id: "a", bytes: bytes(1) },
    ]);
    expect(await idbPersistence({ indexedDB: factory, buster: "v1" }).load("s")).toEqual([
      bytes(1),
    ]);

    expect(await idbPersistence({ indexedDB: factory, buster: "v2" }).load("s")).toEqual([]);
    // Discarded, not merely hidden: going back does not bring it back.
    expect(await idbPersistence({ indexedDB: factory, buster: "v1" }).load("s")).toEqual([]);
  });

  it("discards a store written in another format", async () => {
    const factory = new FakeIDBFactory();
    await idbPersistence({ indexedDB: factory }).save("s", [{ id: "a", bytes: bytes(1) }]);
    await rawPut(factory, await dbName("s"), "meta", { format: 0, buster: "" });
    expect(await idbPersistence({ indexedDB: factory }).load("s")).toEqual([]);
  });

  it("rejects with Unimplemented where the runtime has no IndexedDB", async () => {
    expect(globalThis.indexedDB).toBeUndefined(); // Node: the premise of this test
    const error = await rejection(idbPersistence().load("s"));
    expect(error).toBeInstanceOf(ConnectError);
    expect((error as ConnectError).code).toBe(Code.Unimplemented);
    expect((error as ConnectError).rawMessage).toMatch(/IndexedDB is not available/);
  });

  it("rejects with Unavailable when open() throws (private mode), and retries next time", async () => {
    const factory = throwingFactory();
    const adapter = idbPersistence({ indexedDB: factory });
    const error = await rejection(adapter.save("s", [{ id: "a", bytes: bytes(1) }]));
    expect((error as ConnectError).code).toBe(Code.Unavailable);
    expect((error as ConnectError).rawMessage).toMatch(
      new RegExp(`^IndexedDB '${await dbName("s")}': saving 1`),
    );
    expect((error as ConnectError).cause).toBeInstanceOf(DOMException);
    await rejection(adapter.load("s"));
    expect(factory.opens).toBe(2);
  });

  it("rejects with ResourceExhausted when the storage quota is exhausted", async () => {
    const quota = new DOMException("The quota has been exceeded.", "QuotaExceededError");
    const error = await rejection(
      idbPersistence({ indexedDB: failingOpenFactory(quota) }).load("s"),
    );
    expect((error as ConnectError).code).toBe(Code.ResourceExhausted);
    expect((error as ConnectError).rawMessage).toMatch(/quota/);
    expect((error as ConnectError).cause).toBe(quota);
  });
});

describe("idbPersistence with a SessionContext on the real bridge", () => {
  const suite = useSessionContexts();
  const context = suite.context;

  /** A session with three persisted variables, closed (so its writes are flushed). */
  async function persistedSession(persistence: PersistenceAdapter) {
    const { ctx } = await context({ persistence, watch: false });
    await ctx.register("temperature", "float", 0.7, { constraints: { min: 0, max: 2 } });
    await ctx.register("model", "string", "small");
    await ctx.register("steps", "integer", 3);
    await ctx.set("temperature", 0.9);
    await ctx.close();
    return ctx.sessionId;
  }

  it.each([
    { watch: true, streams: 1 },
    { watch: false, streams: 0 },
  ])(
    "serves values before revalidation, then revalidates in exactly one GetVariables (watch: $watch)",
    async ({ watch, streams }) => {
      const factory = new FakeIDBFactory();
      const sessionId = await persistedSession(idbPersistence({ indexedDB: factory }));

      let release = () => {};
      const held = new Promise<void>((resolve) => {
        release = resolve;
      });
      const { ctx, counting } = await context(
        { sessionId, watch, persistence: idbPersistence({ indexedDB: factory }) },
        (method) => (method === "GetVariables" ? held : undefined),
      );
      let revalidated = false;
      void ctx.revalidated.then(() => {
        revalidated = true;
      });

      expect(ctx.peek("temperature")).toMatchObject({
        possiblyStale: true,
        snapshot: { value: 0.9, version: 1 },
      });
      expect(
        ctx
          .cached()
          .map((p) => p.snapshot.name)
          .sort(),
      ).toEqual(["model", "steps", "temperature"]);
      // The revalidation call is out but its answer is held: still stale.
      await until(() => counting.calls.get("GetVariables") === 1, "the revalidation call");
      expect(revalidated).toBe(false);
      expect(ctx.peek("model")?.possiblyStale).toBe(true);

      release();
      await ctx.revalidated;
      expect(ctx.cached().every((p) => !p.possiblyStale)).toBe(true);
      expect(Object.fromEntries(counting.calls)).toEqual({ InitializeSession: 1, GetVariables: 1 });
      expect(counting.streams.get("WatchVariables") ?? 0).toBe(streams);
      expect(await ctx.get("steps")).toBe(3);
      expect(counting.total()).toBe(2);
    },
  );

  it("revalidation brings changes made elsewhere, into the cache and the store", async () => {
    const factory = new FakeIDBFactory();
    const sessionId = await persistedSession(idbPersistence({ indexedDB: factory }));
    // Another client changes and deletes while this browser is away.
    const { ctx: elsewhere } = await context({ sessionId, watch: false, tabSync: false });
    await elsewhere.set("temperature", 1.2);
    await elsewhere.set("steps", 4);
    await elsewhere.delete("model");

    const persistence = idbPersistence({ indexedDB: factory });
    const { ctx } = await context({ sessionId, watch: false, persistence });
    await ctx.revalidated;
    expect(ctx.peek("model")).toBeUndefined();
    expect(ctx.peek("temperature")).toMatchObject({
      possiblyStale: false,
      snapshot: { value: 1.2, version: 2 },
    });
    expect(ctx.peek("steps")).toMatchObject({
      possiblyStale: false,
      snapshot: { value: 4, version: 1 },
    });
    await ctx.close();
    expect(await persistence.load(sessionId)).toHaveLength(2);
  });

  it("a buster change starts empty: nothing hydrated, no revalidation call", async () => {
    const factory = new FakeIDBFactory();
    const sessionId = await persistedSession(idbPersistence({ indexedDB: factory, buster: "1" }));
    const { ctx, counting } = await context({
      sessionId,
      watch: false,
      persistence: idbPersistence({ indexedDB: factory, buster: "2" }),
    });
    await ctx.revalidated;
    expect(ctx.cached()).toEqual([]);
    expect(Object.fromEntries(counting.calls)).toEqual({ InitializeSession: 1 });
    expect(await ctx.get("temperature")).toBe(0.9);
  });

  it("a database that cannot open degrades to memory: event, and every server write succeeds", async () => {
    const { ctx } = await context({
      watch: false,
      persistence: idbPersistence({ indexedDB: throwingFactory() }),
    });
    const degraded: unknown[] = [];
    ctx.on("persistence-degraded", (e) => degraded.push(e.error));

    await ctx.register("a", "integer", 1);
    await ctx.set("a", 2);
    await ctx.setMany({ a: 3 });
    await until(() => degraded.length > 0, "persistence to degrade");
    await ctx.set("a", 4);
    expect(await ctx.get("a")).toBe(4);
    // close() flushes: every write persistence would still attempt is over.
    await ctx.close();

    expect(degraded).toHaveLength(1);
    expect((degraded[0] as ConnectError).code).toBe(Code.Unavailable);
    const stored = await suite.bridge
      .client()
      .getVariable({ sessionId: ctx.sessionId, variableIdentifier: "a" });
    expect(stored.variable?.version).toBe(3);
  });

  it("reports a failing load to listeners attached right after creation", async () => {
    const { ctx } = await context({
      watch: false,
      persistence: idbPersistence({ indexedDB: throwingFactory() }),
    });
    const degraded: unknown[] = [];
    ctx.on("persistence-degraded", (e) => degraded.push(e.error));
    await until(() => degraded.length > 0, "the failed load to be reported");
    expect((degraded[0] as ConnectError).code).toBe(Code.Unavailable);
  });

  it("a save refused for quota degrades once; server writes still succeed", async () => {
    const factory = new FakeIDBFactory();
    const adapter = idbPersistence({ indexedDB: factory });
    let saves = 0;
    const full: PersistenceAdapter = {
      ...adapter,
      save: async () => {
        saves++;
        throw new DOMException("The quota has been exceeded.", "QuotaExceededError");
      },
    };
    const { ctx } = await context({ watch: false, persistence: full });
    const degraded: unknown[] = [];
    ctx.on("persistence-degraded", (e) => degraded.push(e.error));

    await ctx.register("a", "string", "x");
    await until(() => degraded.length > 0, "persistence to degrade");
    for (let i = 0; i < 5; i++) await ctx.set("a", `x${i}`);
    await ctx.close();

    expect(degraded).toHaveLength(1);
    expect((degraded[0] as DOMException).name).toBe("QuotaExceededError");
    expect(saves).toBe(1);
    const stored = await suite.bridge
      .client()
      .getVariable({ sessionId: ctx.sessionId, variableIdentifier: "a" });
    expect(stored.variable?.version).toBe(5);
  });

  it("close({ cleanup: true }) clears the session's store", async () => {
    const factory = new FakeIDBFactory();
    const persistence = idbPersistence({ indexedDB: factory });
    const { ctx } = await context({ watch: false, persistence });
    await ctx.register("a", "integer", 1);
    await ctx.close({ cleanup: false });
    expect(await persistence.load(ctx.sessionId)).toHaveLength(1);

    const again = await context({ sessionId: ctx.sessionId, watch: false, persistence });
    await again.ctx.revalidated;
    await again.ctx.close({ cleanup: true });
    expect(await names(factory)).toEqual([]);
    expect(await idbPersistence({ indexedDB: factory }).load(ctx.sessionId)).toEqual([]);
  });

  // close() cancels a revalidation in flight and stops persistence for
  // good: the late GetVariables answer must not re-create the store.
  it("close({ cleanup: true }) during revalidation still leaves no store behind", async () => {
    const factory = new FakeIDBFactory();
    const persistence = idbPersistence({ indexedDB: factory });
    const sessionId = await persistedSession(persistence);

    let release = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const { ctx, counting } = await context({ sessionId, watch: false, persistence }, (method) =>
      method === "GetVariables" ? held : undefined,
    );
    await until(() => counting.calls.get("GetVariables") === 1, "the revalidation call");
    await ctx.close({ cleanup: true });
    expect(await names(factory)).toEqual([]);
    release();
    // The held call was cancelled by close(), and the writer is stopped:
    // a round of IndexedDB work later, still nothing.
    await persistence.sweep();
    expect(await names(factory)).toEqual([]);
  });
});
