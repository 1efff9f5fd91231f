/**
 * rpc-counts: round trips per client operation, counted (not timed) by an
 * interceptor on the SessionContext's transport, against a real bridge
 * server (in this process, over a real socket, gRPC). Every context runs
 * with its defaults (watch on), and counting starts only once its watch
 * stream is live, so the one-off resynchronization of a new stream is not
 * charged to the operation measured.
 *
 * Targets (round trips, the fewest each operation can take): cache hit 0, set 1, getMany(100) 1
 * (cold cache), setMany(100) 1, bind of 10 declarations 1 when nothing is
 * missing, hydrate-and-revalidate 1. Rows pass when the count is exactly the
 * target. The hydrate row counts unary calls from before
 * `createSessionContext` until `revalidated` resolves, with InitializeSession
 * and the WatchVariables stream (both paid by every context, persisted or
 * not) reported beside it rather than in it.
 */
import type { Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  createSessionContext,
  type PersistenceAdapter,
  type SessionContext,
  type SessionContextOptions,
  type VariableSchema,
} from "unified-session-bridge";
import { createBridgeServer, createLogger } from "unified-session-bridge/server";
import type { BenchContext, BenchResult } from "./support/result.ts";

/** Calls seen by one counting transport. */
interface Counter {
  /** Unary calls by method since the last reset. */
  readonly unary: Map<string, number>;
  /** Streams opened by method since the last reset. */
  readonly streams: Map<string, number>;
  reset(): void;
  /** Unary calls, optionally without some methods. */
  total(except?: readonly string[]): number;
  /** A copy of both tallies, for the details. */
  snapshot(): { unary: Record<string, number>; streams: Record<string, number> };
}

function createCounter(): Counter & { interceptor: Interceptor } {
  const unary = new Map<string, number>();
  const streams = new Map<string, number>();
  return {
    unary,
    streams,
    interceptor: (next) => (req) => {
      const bucket = req.stream ? streams : unary;
      bucket.set(req.method.name, (bucket.get(req.method.name) ?? 0) + 1);
      return next(req);
    },
    reset() {
      unary.clear();
      streams.clear();
    },
    total(except = []) {
      let sum = 0;
      for (const [method, n] of unary) if (!except.includes(method)) sum += n;
      return sum;
    },
    snapshot: () => ({
      unary: Object.fromEntries(unary),
      streams: Object.fromEntries(streams),
    }),
  };
}

/** A PersistenceAdapter over a Map: what idb-keyval would hold, in memory. */
function memoryPersistence(): PersistenceAdapter & { readonly size: (id: string) => number } {
  const sessions = new Map<string, Map<string, Uint8Array>>();
  const of = (id: string) => {
    let store = sessions.get(id);
    if (store === undefined) {
      store = new Map();
      sessions.set(id, store);
    }
    return store;
  };
  return {
    load: async (id) => [...of(id).values()],
    save: async (id, entries) => {
      for (const e of entries) of(id).set(e.id, e.bytes);
    },
    remove: async (id, ids) => {
      for (const key of ids) of(id).delete(key);
    },
    clear: async (id) => {
      sessions.delete(id);
    },
    size: (id) => of(id).size,
  };
}

const ten = Array.from({ length: 10 }, (_, i) => `setting_${i}`);
const hundred = Array.from({ length: 100 }, (_, i) => `v${String(i).padStart(3, "0")}`);
const schemaOf = (names: readonly string[]): VariableSchema =>
  Object.fromEntries(
    names.map((name, i) => [
      name,
      { type: "float", default: i / 10, constraints: { min: 0, max: 1000 } },
    ]),
  );

/** Runs the benchmark; see the module comment. */
export async function run(ctx: BenchContext): Promise<BenchResult[]> {
  const server = createBridgeServer({
    host: "127.0.0.1",
    port: 0,
    logger: createLogger({ level: "warn" }),
  });
  const { url } = await server.start();
  const open: SessionContext[] = [];
  const context = async (options: Partial<SessionContextOptions> = {}) => {
    const counter = createCounter();
    const session = await createSessionContext({
      transport: createGrpcTransport({ baseUrl: url, interceptors: [counter.interceptor] }),
      ...options,
    });
    open.push(session);
    if (options.watch !== false)
      await waitUntil(() => session.cache.live, 5000, "the watch stream never went live");
    counter.reset();
    return { session, counter };
  };
  const results: BenchResult[] = [];
  const row = (
    name: string,
    measured: number,
    expected: number | null,
    label: string,
    details: Record<string, unknown>,
  ) => {
    results.push({
      name: `rpc-counts/${name}`,
      value: measured,
      unit: "RPCs",
      target: expected === null ? "info" : `= ${expected}`,
      pass: expected === null ? null : measured === expected,
      ratio: expected === null || expected === 0 ? null : measured / expected,
      display: `${label}: ${measured} RPC${measured === 1 ? "" : "s"}`,
      details,
    });
  };

  try {
    // --- bind: a new session (everything missing), then a second app
    // instance binding the same schema (nothing missing).
    ctx.log("rpc-counts: bind, hits, set");
    const first = await context();
    const boundFresh = await first.session.bind(schemaOf(ten));
    row("bind-10-all-missing", first.counter.total(), null, "bind(10), all missing", {
      calls: first.counter.snapshot(),
      note: "registers all 10 in the same call",
    });

    const second = await context({ sessionId: first.session.sessionId });
    const bound = await second.session.bind(schemaOf(ten));
    row("bind-10-none-missing", second.counter.total(), 1, "bind(10), none missing", {
      calls: second.counter.snapshot(),
    });

    // --- cache hits: by name through the context and through the handles,
    // one by one and as a batch, after bind filled the cache.
    second.counter.reset();
    const values: unknown[] = [];
    for (const name of ten) values.push(await second.session.get(name));
    for (const handle of Object.values(bound)) values.push(await handle.get());
    const batch = await second.session.getMany(ten);
    values.push(...ten.map((name) => batch[name]?.value));
    const defaults = ten.map((_, i) => i / 10);
    row("cache-hit", second.counter.total(), 0, "get ×10, handle.get ×10, getMany(10) cached", {
      calls: second.counter.snapshot(),
      reads: values.length,
      valuesAsBound: values.every((v, i) => v === defaults[i % 10]),
      cacheLive: second.session.cache.live,
    });

    // --- set: one write, then reading it back (write-through: no refetch).
    second.counter.reset();
    const written = await bound.setting_3?.set(7.5);
    const setCalls = second.counter.total();
    const readBack = await second.session.get("setting_3");
    row("set", setCalls, 1, "set ×1", {
      calls: second.counter.snapshot(),
      version: written?.version,
      readBackValue: readBack,
      callsIncludingReadBack: second.counter.total(),
    });
    if (boundFresh.setting_0 === undefined) throw new Error("bind returned no handle");

    // --- getMany(100) with a cold cache, setMany(100).
    ctx.log("rpc-counts: getMany(100), setMany(100)");
    await first.session.bind(schemaOf(hundred));
    const cold = await context({ sessionId: first.session.sessionId });
    const many = await cold.session.getMany(hundred);
    if (Object.keys(many).length !== 100) throw new Error("getMany(100) returned too few");
    row("getMany-100", cold.counter.total(), 1, "getMany(100), cold cache", {
      calls: cold.counter.snapshot(),
      returned: Object.keys(many).length,
    });

    cold.counter.reset();
    const setMany = await cold.session.setMany(
      Object.fromEntries(hundred.map((name, i) => [name, i + 0.25])),
    );
    if (!setMany.success || Object.keys(setMany.variables).length !== 100)
      throw new Error(`setMany(100) failed: ${JSON.stringify(setMany.errors)}`);
    const setManyCalls = cold.counter.total();
    for (const name of hundred) await cold.session.get(name);
    row("setMany-100", setManyCalls, 1, "setMany(100)", {
      calls: cold.counter.snapshot(),
      callsIncludingReadingAll100Back: cold.counter.total(),
    });

    // --- hydrate and revalidate: an app instance that read 100 variables
    // (persisted on the way) goes away; the next one starts from storage.
    ctx.log("rpc-counts: hydrate and revalidate");
    for (const watch of [true, false]) {
      const persistence = memoryPersistence();
      const sessionId = first.session.sessionId;
      const before = await context({ sessionId, persistence, watch });
      await before.session.getMany(hundred);
      await before.session.close();
      const persisted = persistence.size(sessionId);

      const counter = createCounter();
      const started = performance.now();
      const after = await createSessionContext({
        transport: createGrpcTransport({ baseUrl: url, interceptors: [counter.interceptor] }),
        sessionId,
        persistence,
        watch,
      });
      open.push(after);
      const hydrated = after.cache.size;
      const stale = after.cached().filter((p) => p.possiblyStale).length;
      await after.revalidated;
      const revalidateMs = performance.now() - started;
      const calls = counter.snapshot();
      const excluded = ["InitializeSession"];
      const counted = counter.total(excluded);
      // Anything arriving just after would be a second, late revalidation.
      await new Promise((resolve) => setTimeout(resolve, 200));
      const lateCalls = counter.total(excluded) - counted;
      const freshAfter = after.cached().filter((p) => !p.possiblyStale).length;
      row(
        watch ? "hydrate-revalidate" : "hydrate-revalidate-no-watch",
        counted,
        watch ? 1 : null,
        `hydrate ${hydrated} from storage, revalidate${watch ? "" : " (watch off)"}`,
        {
          watch,
          persisted,
          hydrated,
          possiblyStaleAtStart: stale,
          freshAfterRevalidation: freshAfter,
          revalidateMs: Math.round(revalidateMs),
          callsUntilRevalidated: calls,
          excludedFromCount: "InitializeSession (unary) and WatchVariables (stream)",
          initializeSession: calls.unary.InitializeSession ?? 0,
          watchStreams: calls.streams.WatchVariables ?? 0,
          callsWithin200msAfter: lateCalls,
        },
      );
    }
    return results;
  } finally {
    await Promise.all(open.map((s) => s.close()));
    await server.stop();
  }
}

async function waitUntil(condition: () => boolean, timeoutMs: number, what: string) {
  const deadline = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(what);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
