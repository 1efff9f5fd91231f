/**
 * SessionContext against a real server on a real socket: round trips,
 * group commit, local validation, cache, watch coherence, handles, tools,
 * lifecycle and stream loss.
 *
 * (Over 400 lines: one area per describe block, all on one shared server;
 * socket-free unit tests live in src/client/.)
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import {
  createSessionContext,
  type PersistenceAdapter,
  type SessionContext,
} from "../../src/client/index.js";
import { createMemoryStore } from "../../src/server/index.js";
import { encodeValue } from "../../src/values/index.js";
import { startBridge } from "../support/bridge.js";
import { useSessionContexts } from "../support/contexts.js";
import { countingTransport } from "../support/counting.js";
import { rejectionOf } from "../support/errors.js";
import { until } from "../support/wait.js";

const suite = useSessionContexts();
const context = suite.context;

/** Waits until the context's cache is kept live by its watch stream. */
async function live(ctx: SessionContext) {
  await until(() => ctx.cache.live, "the watch stream to catch up");
}

const errorOf = (p: Promise<unknown>) => rejectionOf(p);

describe("round trips", () => {
  it("costs 0 for a cache hit, 1 for a set, 1 for getMany and setMany of any size", async () => {
    const { ctx, counting } = await context({ watch: false });
    for (let i = 0; i < 50; i++) await ctx.register(`v${i}`, "integer", i);
    counting.reset();

    expect(await ctx.get("v1")).toBe(1);
    expect(counting.total()).toBe(0);

    const written = await ctx.set("v1", 100);
    expect(written.version).toBe(1);
    expect(counting.total()).toBe(1);
    // Write-through: the stored value and version are served without a refetch.
    expect((await ctx.getVariable("v1")).version).toBe(1);
    expect(await ctx.get("v1")).toBe(100);
    expect(counting.total()).toBe(1);

    ctx.cache.clear();
    counting.reset();
    const names = Array.from({ length: 50 }, (_, i) => `v${i}`);
    const many = await ctx.getMany(names);
    expect(Object.keys(many)).toHaveLength(50);
    expect(counting.calls.get("GetVariables")).toBe(1);
    expect(counting.total()).toBe(1);

    counting.reset();
    const updates = Object.fromEntries(names.map((n, i) => [n, i * 2]));
    const result = await ctx.setMany(updates);
    expect(result.success).toBe(true);
    expect(Object.keys(result.variables)).toHaveLength(50);
    expect(counting.total()).toBe(1);
    counting.reset();
    expect(await ctx.get("v7")).toBe(14);
    expect(counting.total()).toBe(0);
  });

  it("binds a schema in one round trip, whether or not the variables exist", async () => {
    const { ctx, counting } = await context({ watch: false });
    const schema = {
      temperature: { type: "float", default: 0.7, constraints: { min: 0, max: 2 } },
      module: {
        type: "module",
        default: "Predict",
        constraints: { allowed_modules: ["Predict", "ChainOfThought"] },
      },
      max_tokens: { type: "integer", default: 256 },
    } as const;
    counting.reset();
    const first = await ctx.bind(schema);
    expect(counting.total()).toBe(1);
    await first.temperature.set(1.2);

    const other = await context({ sessionId: ctx.sessionId, watch: false });
    other.counting.reset();
    const second = await other.ctx.bind(schema);
    expect(other.counting.total()).toBe(1);
    // Existing values are kept, not reset to the defaults; reads are free.
    const temperature: number = await second.temperature.get();
    const module: string = await second.module.get();
    expect([temperature, module]).toEqual([1.2, "Predict"]);
    expect(other.counting.total()).toBe(1);
  });

  it("shares one request between concurrent misses of the same variable", async () => {
    const { ctx, counting } = await context({ watch: false });
    await ctx.register("x", "string", "hello");
    ctx.cache.clear();
    counting.reset();
    const values = await Promise.all(Array.from({ length: 20 }, () => ctx.get("x")));
    expect(new Set(values)).toEqual(new Set(["hello"]));
    expect(counting.calls.get("GetVariable")).toBe(1);
  });
});

describe("group commit", () => {
  it("sends concurrent writes together, each settling with its own result or error", async () => {
    const { ctx, counting } = await context({ watch: false });
    for (let i = 0; i < 20; i++)
      await ctx.register(`v${i}`, "integer", 0, { constraints: { max: 100 } });
    await ctx.register("locked", "integer", 0);
    await suite.bridge.client().startOptimization({
      sessionId: ctx.sessionId,
      variableIdentifier: "locked",
      optimizerId: "other",
    });
    const blind = await context({ sessionId: ctx.sessionId, watch: false });
    blind.counting.reset();
    // A context that knows none of the variables cannot refuse anything
    // locally: every outcome comes from the server.
    const writes = [
      ...Array.from({ length: 20 }, (_, i) => blind.ctx.set(`v${i}`, i + 1)),
      blind.ctx.set("v3", 500),
      blind.ctx.set("locked", 1),
      blind.ctx.set("missing", 1),
    ];
    const outcomes = await Promise.allSettled(writes);
    const calls = blind.counting.total();
    expect(calls).toBeLessThan(8);
    expect(
      outcomes.slice(0, 20).map((o) => (o.status === "fulfilled" ? o.value.value : o.reason)),
    ).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    const codes = outcomes
      .slice(20)
      .map((o) => (o.status === "rejected" ? ConnectError.from(o.reason).code : "ok"));
    expect(codes).toEqual([Code.InvalidArgument, Code.FailedPrecondition, Code.NotFound]);
    // Order per variable holds: v3's second write came later and failed,
    // so its first write's value stays.
    counting.reset();
    expect(await ctx.get("v3", { bypassCache: true })).toBe(4);
  });

  it("keeps writes to one variable in order", async () => {
    const { ctx } = await context({ watch: false });
    await ctx.register("x", "integer", 0);
    const results = await Promise.all([1, 2, 3, 4, 5].map((v) => ctx.set("x", v)));
    expect(results.map((r) => r.version)).toEqual([1, 2, 3, 4, 5]);
    expect(await ctx.get("x", { bypassCache: true })).toBe(5);
  });
});

describe("local validation", () => {
  it("refuses bad input without a round trip, with the server's message", async () => {
    const { ctx, counting } = await context({ watch: false });
    await ctx.register("temperature", "float", 0.5, { constraints: { min: 0, max: 2 } });
    counting.reset();
    const local = await errorOf(ctx.set("temperature", 2.5));
    expect(counting.total()).toBe(0);
    expect(local.code).toBe(Code.InvalidArgument);

    // The same write sent by a context that knows nothing reaches the server.
    const blind = await context({ sessionId: ctx.sessionId, watch: false });
    blind.counting.reset();
    const remote = await errorOf(blind.ctx.set("temperature", 2.5));
    expect(blind.counting.total()).toBe(1);
    expect(remote.code).toBe(Code.InvalidArgument);
    expect(local.rawMessage).toBe(remote.rawMessage);
    expect(local.rawMessage).toBe("variable 'temperature': value 2.5 is above maximum 2");
    expect(await ctx.get("temperature", { bypassCache: true })).toBe(0.5);
  });

  it("keeps local failures of an atomic batch local and reports each key", async () => {
    const { ctx, counting } = await context({ watch: false });
    await ctx.register("a", "integer", 1, { constraints: { max: 10 } });
    await ctx.register("b", "integer", 1, { constraints: { max: 10 } });
    counting.reset();
    const res = await ctx.batch().set("a", 5).set("b", 50).commit({ atomic: true });
    expect(res.success).toBe(false);
    expect(res.errors.b).toContain("above maximum");
    expect(counting.total()).toBe(0);
    const partial = await ctx.setMany({ a: 5, b: 50 });
    expect(partial.success).toBe(true);
    expect(partial.errors.b).toContain("above maximum");
    expect(partial.errorCodes).toEqual({ b: Code.InvalidArgument });
    expect(partial.variables.a?.value).toBe(5);
  });

  it("reports the server's error code per key of a batch", async () => {
    const { ctx } = await context({ watch: false });
    await ctx.register("a", "integer", 1, { constraints: { max: 10 } });
    await ctx.register("locked", "integer", 1);
    await ctx.startOptimization("locked", "other");
    // A context that knows none of the variables leaves every check to the server.
    const blind = await context({ sessionId: ctx.sessionId, watch: false });
    const res = await blind.ctx.setMany({ a: 50, locked: 2, missing: 3 });
    expect(Object.keys(res.errors).sort()).toEqual(["a", "locked", "missing"]);
    expect(res.errorCodes).toEqual({
      a: Code.InvalidArgument,
      locked: Code.FailedPrecondition,
      missing: Code.NotFound,
    });
  });
});

describe("cache", () => {
  it("expires entries after their TTL when not watching, per variable if asked", async () => {
    let now = 1_000_000;
    const timers = {
      now: () => now,
      setTimeout: (fn: () => void, ms: number) => setTimeout(fn, ms),
      clearTimeout: (h: unknown) => clearTimeout(h as NodeJS.Timeout),
    };
    const { ctx, counting } = await context({ watch: false, timers, cache: { ttlMs: 5000 } });
    await ctx.register("a", "integer", 1);
    await ctx.register("b", "integer", 2);
    const b = ctx.variable<number>("b", { ttlMs: 60_000 });
    counting.reset();
    now += 4000;
    await ctx.get("a");
    expect(counting.total()).toBe(0);
    now += 2000;
    await ctx.get("a");
    await b.get();
    expect(counting.calls.get("GetVariable")).toBe(1);
    expect(await ctx.get("a", { maxAgeMs: 10_000 })).toBe(1);
    expect(counting.total()).toBe(1);
    await ctx.get("a", { bypassCache: true });
    expect(counting.total()).toBe(2);
  });

  it("keeps at most maxEntries variables, evicting the least recently used", async () => {
    const { ctx, counting } = await context({ watch: false, cache: { maxEntries: 3 } });
    for (let i = 0; i < 3; i++) await ctx.register(`v${i}`, "integer", i);
    // A hit gives v0 a second chance: the ones to go are v1, v2 and v3.
    counting.reset();
    expect(await ctx.get("v0")).toBe(0);
    expect(counting.total()).toBe(0);
    for (let i = 3; i < 6; i++) await ctx.register(`v${i}`, "integer", i);
    expect(ctx.cache.size).toBe(3);
    const cachedNames = ctx
      .cached()
      .map((p) => p.snapshot.name)
      .sort();
    expect(cachedNames).toEqual(["v0", "v4", "v5"]);
    counting.reset();
    expect(await ctx.get("v5")).toBe(5);
    expect(counting.total()).toBe(0);
    // An evicted variable costs a call again.
    expect(await ctx.get("v1")).toBe(1);
    expect(counting.calls.get("GetVariable")).toBe(1);
  });

  it("never lets a late response replace a newer version", async () => {
    let hold: (() => void) | undefined;
    const gate = new Promise<void>((resolve) => {
      hold = resolve;
    });
    const counting = countingTransport(suite.bridge.url, (method) =>
      method === "GetVariable" ? gate : undefined,
    );
    const ctx = await createSessionContext({ transport: counting.transport, watch: false });
    suite.track(ctx);
    await ctx.register("x", "integer", 0);
    ctx.cache.clear();
    const late = ctx.getVariable("x"); // answered at version 0, delivered late
    await until(() => counting.calls.get("GetVariable") === 1, "the read to be answered");
    const writer = await context({ sessionId: ctx.sessionId, watch: false });
    await writer.ctx.set("x", 5);
    await ctx.set("x", 6); // write-through: version 2
    hold?.();
    const seen = await late;
    expect(seen.version).toBe(2);
    expect(ctx.peek("x")?.snapshot).toMatchObject({ version: 2, value: 6 });
  });

  it("peek hands out one frozen object per cached version, and a new one for a new version", async () => {
    const { ctx } = await context({ watch: false });
    await ctx.register("x", "integer", 1);
    const first = ctx.peek("x");
    expect(first).toMatchObject({ possiblyStale: false, snapshot: { value: 1, version: 0 } });
    // Built once when the version was cached, not per call: shared, so frozen.
    expect(ctx.peek("x")).toBe(first);
    expect(Object.isFrozen(first)).toBe(true);
    expect(ctx.cached()).toHaveLength(1);
    expect(ctx.cached()[0]).toBe(first);
    await ctx.set("x", 2);
    const second = ctx.peek("x");
    expect(second).not.toBe(first);
    expect(second?.snapshot).toMatchObject({ value: 2, version: 1 });
    expect(first?.snapshot.value).toBe(1);
  });
});

describe("watch coherence", () => {
  it("updates the cache from pushed changes, so reads need no round trip", async () => {
    const a = await context();
    const b = await context({ sessionId: a.ctx.sessionId });
    await a.ctx.register("lr", "float", 0.1);
    await b.ctx.get("lr");
    await live(b.ctx);
    const changed = new Promise((resolve) => b.ctx.on("change", resolve));
    await a.ctx.set("lr", 0.2);
    await changed;
    b.counting.reset();
    expect(await b.ctx.get("lr")).toBe(0.2);
    expect(b.counting.total()).toBe(0);
  });

  it("shows lock changes and deletes pushed by others", async () => {
    const a = await context();
    const b = await context({ sessionId: a.ctx.sessionId });
    await a.ctx.register("x", "integer", 1);
    await b.ctx.get("x");
    await live(b.ctx);
    const events: (string | undefined)[] = [];
    b.ctx.on("change", (e) =>
      events.push(e.snapshot === undefined ? "deleted" : `locked:${e.snapshot.lockedBy}`),
    );
    await a.ctx.withOptimizationLock(["x"], "tuner", async () => {
      await a.ctx.set("x", 2, { optimizerId: "tuner" });
      const refused = await errorOf(b.ctx.set("x", 3));
      expect(refused.code).toBe(Code.FailedPrecondition);
    });
    await a.ctx.delete("x");
    await until(() => events.length === 4, "the delete to be pushed");
    expect(events).toEqual(["locked:tuner", "locked:tuner", "locked:undefined", "deleted"]);
    expect(b.ctx.peek("x")).toBeUndefined();
  });
});

describe("typed handles and auto-registration", () => {
  it("gets, sets and subscribes through a handle", async () => {
    const { ctx } = await context();
    await ctx.register("temperature", "float", 0.5);
    const t = ctx.variable<number>("temperature");
    const seen: number[] = [];
    const off = t.subscribe((s) => {
      if (s !== undefined) seen.push(s.value);
    });
    await t.set(0.6);
    await t.set(0.7);
    off();
    await t.set(0.8);
    expect(seen).toEqual([0.6, 0.7]);
    expect(await t.get()).toBe(0.8);
  });

  it("registers on assign only when opted in, and says so", async () => {
    const off = await context();
    expect((await errorOf(off.ctx.assign("x", 1))).code).toBe(Code.FailedPrecondition);
    const on = await context({ autoRegister: true });
    const registered: string[] = [];
    on.ctx.on("registered", (e) => registered.push(`${e.name}:${e.type}`));
    await on.ctx.assign("count", 3);
    await on.ctx.assign("ratio", 0.25);
    await on.ctx.assign("label", "spam");
    await on.ctx.assign("emb", [0.1, 0.2]);
    await on.ctx.assign("count", 4);
    expect(registered).toEqual(["count:integer", "ratio:float", "label:string", "emb:embedding"]);
    expect(await on.ctx.get("count")).toBe(4);
  });
});

describe("variables API", () => {
  it("lists, checks existence, deletes, and reads history and rollback", async () => {
    const { ctx } = await context();
    await ctx.register("model.temperature", "float", 0.1);
    await ctx.register("model.top_p", "float", 0.9);
    await ctx.register("prompt", "string", "v1");
    expect((await ctx.list("model.*")).map((s) => s.name)).toEqual([
      "model.temperature",
      "model.top_p",
    ]);
    expect(await ctx.exists("prompt")).toBe(true);
    expect(await ctx.exists("nope")).toBe(false);
    await ctx.set("prompt", "v2");
    await ctx.set("prompt", "v3");
    expect((await ctx.history("prompt")).map((h) => [h.version, h.value])).toEqual([
      [2, "v3"],
      [1, "v2"],
      [0, "v1"],
    ]);
    const rolled = await ctx.rollback("prompt", 0);
    expect([rolled.version, rolled.value]).toEqual([3, "v1"]);
    await ctx.delete("prompt");
    expect(await ctx.exists("prompt")).toBe(false);
    expect((await errorOf(ctx.get("prompt"))).code).toBe(Code.NotFound);
    expect((await errorOf(ctx.getMany(["model.top_p", "nope"]))).rawMessage).toContain("nope");
  });

  it("refuses a rollback of a locked variable, whatever the lock holder is called", async () => {
    const { ctx } = await context({ watch: false });
    await ctx.register("x", "integer", 0);
    await ctx.set("x", 1);
    // "rollback" is how a rollback labels its history entry, not a writer.
    for (const holder of ["tuner", "rollback"]) {
      await ctx.withOptimizationLock(["x"], holder, async () => {
        const refused = await errorOf(ctx.rollback("x", 0));
        expect(refused.code).toBe(Code.FailedPrecondition);
        expect(refused.rawMessage).toContain(`locked by optimizer '${holder}'`);
      });
    }
    expect((await ctx.rollback("x", 0)).value).toBe(0);
  });

  it("compare-and-swap through expectedVersion", async () => {
    const { ctx } = await context();
    await ctx.register("n", "integer", 0);
    await ctx.set("n", 1, { expectedVersion: 0 });
    const stale = await errorOf(ctx.set("n", 2, { expectedVersion: 0 }));
    expect(stale.code).toBe(Code.Aborted);
    expect(stale.rawMessage).toContain("current version is 1");
  });
});

describe("tools", () => {
  it("lists, calls and streams tools; failures are ConnectErrors", async () => {
    const { ctx } = await context();
    const tools = await ctx.listTools();
    expect(tools.find((t) => t.name === "conversation_append")?.parameters[0]?.name).toBe("role");
    const result = (await ctx.callTool("conversation_append", { role: "user", content: "hi" })) as {
      count: number;
    };
    expect(result.count).toBe(1);
    await ctx.register("a", "integer", 1);
    await ctx.register("b", "integer", 2);
    const chunks = [];
    for await (const chunk of ctx.streamTool("export_variables", { pattern: "*" }))
      chunks.push(chunk);
    expect(chunks).toEqual([
      { name: "a", type: "integer", value: 1, version: 0 },
      { name: "b", type: "integer", value: 2, version: 0 },
      { count: 2 },
    ]);
    expect((await errorOf(ctx.callTool("nope"))).code).toBe(Code.NotFound);
    expect((await errorOf(ctx.callTool("conversation_append", { role: "user" }))).code).toBe(
      Code.InvalidArgument,
    );
  });
});

describe("lifecycle", () => {
  it("cleans up the session on close when asked", async () => {
    const { ctx } = await context();
    await ctx.register("x", "integer", 1);
    await ctx.close({ cleanup: true });
    const probe = await context({ watch: false });
    const res = await suite.bridge.client().heartbeat({ sessionId: ctx.sessionId });
    expect(res.sessionValid).toBe(false);
    expect(probe.ctx.sessionId).not.toBe(ctx.sessionId);
  });
});

describe("stream loss", () => {
  it("falls back to TTLs, reconnects with backoff and resynchronizes in one call", async () => {
    // Two servers in turn on one port, sharing one store: a restart that
    // keeps the sessions, as with a Redis store or a rolling deploy.
    const store = createMemoryStore();
    const first = await startBridge({ sessionStore: store });
    const port = first.port;
    const counting = countingTransport(first.url);
    const ctx = await createSessionContext({
      transport: counting.transport,
      watch: { initialBackoffMs: 20, maxBackoffMs: 100 },
    });
    suite.track(ctx);
    await ctx.register("a", "integer", 1);
    await ctx.register("b", "integer", 2);
    await live(ctx);
    const seen: string[] = [];
    ctx.on("stale", () => seen.push("stale"));
    ctx.on("reconnecting", () => {
      if (seen.at(-1) !== "reconnecting") seen.push("reconnecting");
    });
    const resynced = new Promise<number>((resolve) =>
      ctx.on("resynchronized", (e) => resolve(e.variables)),
    );

    await first.stop();
    await until(() => seen.includes("stale"), "the stream loss to be noticed");
    expect(ctx.cache.live).toBe(false);
    // Changes made while the client is away, through another server on
    // another port, so the client cannot reconnect before they are made.
    const side = await startBridge({ sessionStore: store });
    const other = side.client();
    await other.setVariable({
      sessionId: ctx.sessionId,
      variableIdentifier: "a",
      value: encodeValue("integer", 10).any,
    });
    await other.deleteVariable({ sessionId: ctx.sessionId, variableIdentifier: "b" });
    await side.stop();
    counting.reset();
    const second = await startBridge({ sessionStore: store, port });
    try {
      expect(await resynced).toBe(2);
      expect(counting.calls.get("GetVariables")).toBe(1);
      expect(counting.total()).toBe(1);
      expect(seen.slice(0, 2)).toEqual(["stale", "reconnecting"]);
      expect(ctx.cache.live).toBe(true);
      expect(ctx.peek("a")?.snapshot.value).toBe(10);
      expect(ctx.peek("b")).toBeUndefined();
      expect(await ctx.get("a")).toBe(10);
      expect(counting.total()).toBe(1);
    } finally {
      await ctx.close();
      await second.stop();
      await store.close();
    }
  });

  it("discards what an earlier life of a recreated session left behind", async () => {
    const { saved, adapter: memoryPersistence } = inMemoryPersistence();
    const sessionId = `recreated-${Date.now()}`;
    const first = await createSessionContext({
      transport: countingTransport(suite.bridge.url).transport,
      sessionId,
      persistence: memoryPersistence,
    });
    expect(first.created).toBe(true);
    await first.register("x", "integer", 41);
    await first.set("x", 42);
    await first.close();
    expect(saved.size).toBe(1);
    await suite.bridge.client().cleanupSession({ sessionId });

    const again = await createSessionContext({
      transport: countingTransport(suite.bridge.url).transport,
      sessionId,
      persistence: memoryPersistence,
    });
    suite.track(again);
    expect(again.created).toBe(true);
    expect(again.peek("x")).toBeUndefined();
    expect(saved.size).toBe(0);
    // The new life's variable, with the same id as the old one, is not
    // shadowed by the old life's higher version.
    await again.register("x", "integer", 1);
    expect(await again.get("x", { bypassCache: true })).toBe(1);
    expect(again.peek("x")?.snapshot.version).toBe(0);
  });

  it("hydrates from persistence and revalidates in one call", async () => {
    const { saved, adapter: memoryPersistence } = inMemoryPersistence();
    const { ctx } = await context({ persistence: memoryPersistence });
    await ctx.register("x", "float", 0.5);
    await ctx.register("y", "string", "kept");
    await ctx.close();
    expect(saved.size).toBe(2);
    const writer = await context({ sessionId: ctx.sessionId, watch: false });
    await writer.ctx.set("x", 0.75);

    const counting = countingTransport(suite.bridge.url);
    const again = await createSessionContext({
      transport: counting.transport,
      sessionId: ctx.sessionId,
      persistence: memoryPersistence,
    });
    suite.track(again);
    expect(again.peek("x")).toMatchObject({ possiblyStale: true, snapshot: { value: 0.5 } });
    counting.reset();
    await again.revalidated;
    expect(counting.calls.get("GetVariables")).toBe(1);
    expect(counting.total()).toBe(1);
    expect(again.peek("x")).toMatchObject({
      possiblyStale: false,
      snapshot: { value: 0.75, version: 1 },
    });
    expect(await again.get("y")).toBe("kept");
    expect(counting.total()).toBe(1);
  });
});

/** A PersistenceAdapter over a Map, to observe what the context stores. */
function inMemoryPersistence(): { saved: Map<string, Uint8Array>; adapter: PersistenceAdapter } {
  const saved = new Map<string, Uint8Array>();
  return {
    saved,
    adapter: {
      load: async () => [...saved.values()],
      save: async (_s, entries) => {
        for (const e of entries) saved.set(e.id, e.bytes);
      },
      remove: async (_s, ids) => {
        for (const id of ids) saved.delete(id);
      },
      clear: async () => saved.clear(),
    },
  };
}
