/**
 * cache-hit: what a cached read costs next to a plain `Map.get` of the
 * decoded value, in-process, with tinybench. The SessionContext runs against
 * a real bridge server (in this process, over a real socket) with watch on
 * and the cache live (`ctx.cache.live`), so every read below is a hit; an
 * interceptor on the transport checks that no RPC was made while measuring.
 *
 * One sample is a batch of calls (a Map.get is a few ns, below what one
 * timer reading costs), cycling over the session's 100 variables in the same
 * order for every variant; each variant's loop is the same apart from the
 * call measured. Every round runs all variants in one tinybench instance,
 * the order rotating between rounds; the ratios are taken per round and the
 * median over rounds is reported.
 *
 * Rows with a target:
 * - `await ctx.get(name)` ≤ 1.5× an awaited async `Map.get`: the cache's
 *   own cost over a Promise-returning lookup. The `await` itself, which no
 *   Promise-returning API can avoid, is on both sides; the `await-floor`
 *   row measures it (an `await` of an async function that returns
 *   `map.get(name)`, against the bare `map.get`).
 * - the synchronous `ctx.peek(name)` ≤ 3× `map.get(name)`.
 * Information: `await ctx.get` ÷ the bare `Map.get`, and the typed
 * handle's `get()` and `peek()`.
 */
import type { Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Bench } from "tinybench";
import { createSessionContext, type VariableSchema } from "unified-session-bridge";
import { createBridgeServer, createLogger } from "unified-session-bridge/server";
import type { BenchContext, BenchResult } from "./support/result.ts";
import { median, round } from "./support/stats.ts";

const variableCount = 100;
/** Calls per sample. */
const batch = 1000;
/** Targets: awaited `get` over an awaited Map.get, and `peek` over a bare Map.get. */
const getTarget = 1.5;
const peekTarget = 3;
const names = Array.from({ length: variableCount }, (_, i) => `v${String(i).padStart(3, "0")}`);

// Every loop adds what it read here, so no engine can drop the reads.
let sink = 0;

type Variant = "mapGet" | "asyncMapGet" | "ctxGet" | "handleGet" | "ctxPeek" | "handlePeek";

/** Runs the benchmark; see the module comment. */
export async function run(ctx: BenchContext): Promise<BenchResult[]> {
  const rounds = Math.max(3, Math.round(9 * ctx.scale));
  const timeMs = Math.round(300 * ctx.scale);
  const server = createBridgeServer({
    host: "127.0.0.1",
    port: 0,
    logger: createLogger({ level: "warn" }),
  });
  const { url } = await server.start();
  let rpcs = 0;
  const counter: Interceptor = (next) => (req) => {
    rpcs++;
    return next(req);
  };
  try {
    const session = await createSessionContext({
      transport: createGrpcTransport({ baseUrl: url, interceptors: [counter] }),
    });
    try {
      const schema: VariableSchema = Object.fromEntries(
        names.map((name, i) => [name, { type: "float", default: i / 100 + 0.5 }]),
      );
      const handles = Object.values(await session.bind(schema));
      await waitUntil(() => session.cache.live, 5000, "the watch stream never went live");
      // The decoded values, as an application holding them itself would.
      const map = new Map<string, number>();
      for (const name of names) map.set(name, session.peek(name)?.snapshot.value as number);

      const asyncMapGet = async (name: string) => map.get(name);
      const loops: Record<Variant, () => number | Promise<number>> = {
        mapGet() {
          let s = 0;
          for (let i = 0; i < batch; i++)
            s += map.get(names[i % variableCount] as string) as number;
          return s;
        },
        async asyncMapGet() {
          let s = 0;
          for (let i = 0; i < batch; i++)
            s += (await asyncMapGet(names[i % variableCount] as string)) as number;
          return s;
        },
        async ctxGet() {
          let s = 0;
          for (let i = 0; i < batch; i++)
            s += (await session.get(names[i % variableCount] as string)) as number;
          return s;
        },
        async handleGet() {
          let s = 0;
          for (let i = 0; i < batch; i++)
            s += (await (handles[i % variableCount] as (typeof handles)[number]).get()) as number;
          return s;
        },
        ctxPeek() {
          let s = 0;
          for (let i = 0; i < batch; i++)
            s += session.peek(names[i % variableCount] as string)?.snapshot.value as number;
          return s;
        },
        handlePeek() {
          let s = 0;
          for (let i = 0; i < batch; i++)
            s += (handles[i % variableCount] as (typeof handles)[number]).peek()?.value as number;
          return s;
        },
      };
      const expected = names.reduce((s, n) => s + (map.get(n) as number), 0) * (batch / 100);
      const variants = Object.keys(loops) as Variant[];

      const perRound: Record<Variant, number[]> = Object.fromEntries(
        variants.map((v) => [v, [] as number[]]),
      ) as Record<Variant, number[]>;
      const rpcsBefore = rpcs;
      let liveThroughout = true;
      for (let r = 0; r < rounds; r++) {
        ctx.log(`cache-hit: round ${r + 1}/${rounds}`);
        const bench = new Bench({ time: timeMs, warmupTime: Math.round(timeMs / 3), throws: true });
        for (let k = 0; k < variants.length; k++) {
          const variant = variants[(k + r) % variants.length] as Variant;
          const loop = loops[variant];
          bench.add(variant, async () => {
            const t0 = bench.now();
            const out = loop();
            // Sync loops are timed without awaiting anything.
            const s = typeof out === "number" ? out : await out;
            const elapsed = bench.now() - t0;
            // A wrong sum would mean a read missed the cache or returned something else.
            if (Math.abs(s - expected) > 1e-6)
              throw new Error(`${variant}: read ${s}, expected ${expected}`);
            sink += s;
            return { overriddenDuration: elapsed / batch, overriddenIterationCost: elapsed };
          });
        }
        await bench.run();
        for (const task of bench.tasks) {
          const result = task.result;
          if (!("latency" in result)) throw new Error(`${task.name}: ${result.state}`);
          // ms per call → ns per call.
          perRound[task.name as Variant].push(result.latency.p50 * 1e6);
        }
        liveThroughout &&= session.cache.live;
      }
      const rpcsWhileMeasuring = rpcs - rpcsBefore;
      if (!Number.isFinite(sink)) throw new Error("unreachable: keeps the sink alive");

      const ns = (v: Variant) => median(perRound[v]);
      const ratio = (a: Variant, b: Variant) =>
        median(perRound[a].map((x, i) => x / (perRound[b][i] as number)));
      const common = {
        rounds,
        tinybenchTimeMsPerTask: timeMs,
        callsPerSample: batch,
        variables: variableCount,
        cacheLive: liveThroughout,
        rpcsWhileMeasuring,
        nsPerCall: Object.fromEntries(variants.map((v) => [v, round(ns(v), 3)])),
        nsPerCallPerRound: Object.fromEntries(
          variants.map((v) => [v, perRound[v].map((x) => round(x, 3))]),
        ),
      };
      const hitsOnly = liveThroughout && rpcsWhileMeasuring === 0;
      const row = (
        name: string,
        a: Variant,
        b: Variant,
        label: string,
        target: string,
        pass: boolean | null,
      ): BenchResult => {
        const value = ratio(a, b);
        return {
          name: `cache-hit/${name}`,
          value: round(value, 3),
          unit: `× ${b}`,
          target,
          pass,
          ratio: round(value, 3),
          display: `${label}: ${ns(a).toFixed(1)} ns vs ${ns(b).toFixed(1)} ns`,
          details: { a, b, ...common },
        };
      };
      // A verdict only when every read measured was a cache hit.
      const verdict = (a: Variant, b: Variant, target: number) => hitsOnly && ratio(a, b) <= target;
      return [
        row(
          "await-get-vs-async-map-get",
          "ctxGet",
          "asyncMapGet",
          "await ctx.get vs await async Map.get",
          `≤ ${getTarget}× awaited Map.get`,
          verdict("ctxGet", "asyncMapGet", getTarget),
        ),
        row(
          "peek-vs-map-get",
          "ctxPeek",
          "mapGet",
          "ctx.peek vs Map.get",
          `≤ ${peekTarget}× Map.get`,
          verdict("ctxPeek", "mapGet", peekTarget),
        ),
        row("await-get-vs-map-get", "ctxGet", "mapGet", "await ctx.get vs Map.get", "info", null),
        row("await-floor", "asyncMapGet", "mapGet", "await async Map.get vs Map.get", "info", null),
        row(
          "await-handle-get-vs-map-get",
          "handleGet",
          "mapGet",
          "await handle.get() vs Map.get",
          "info",
          null,
        ),
        row(
          "handle-peek-vs-map-get",
          "handlePeek",
          "mapGet",
          "handle.peek() vs Map.get",
          "info",
          null,
        ),
      ];
    } finally {
      await session.close();
    }
  } finally {
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
