/**
 * watch-fanout: SetVariable delivered to many watch streams, the watchers in
 * 4 load processes (HTTP/2, gRPC, 200 streams per connection). The writer
 * (this process) puts its clock reading in the written value; every
 * watcher records arrival − write time. Several writes, spaced so that each
 * fan-out is measured on its own. Target (DESIGN.md): p99 ≤ 50 ms at 1,000
 * watchers on loopback, 10,000 streams held with the memory stated.
 *
 * Cases, side by side in one run:
 * - `1k`: one session, 1,000 streams, connect-node's gRPC client in the
 *   load processes (the client of the earlier runs).
 * - `1k-lean`, `10k`: the lean node:http2 client (see workers/load-watch.ts),
 *   so the client side costs little next to the server; 10k is one hot
 *   session of 5,000 streams and 5 sessions of 1,000, each round writing the
 *   hot one and one of the others.
 * - `1k-raw`, `10k-raw`: the same fan-outs from a server written straight on
 *   node:http2 that writes one pre-encoded frame to every stream
 *   (workers/raw-fanout.ts): the platform limit. Its writes arrive by IPC,
 *   not by an RPC.
 *
 * Figures: p50/p99/max delivery latency, deliveries lost (must be 0),
 * server CPU per delivery, server RSS and JS heap per open stream (after a
 * full collection in the server).
 */
import { encodeValue } from "unified-session-bridge/values";
import { type BridgeProcess, startBridgeProcess } from "./support/bridge-process.ts";
import { type ChildWorker, startChild } from "./support/child-processes.ts";
import { clockOffset, wallClock } from "./support/clock.ts";
import type { ServeCpu } from "./support/process-readings.ts";
import type { BenchContext, BenchResult } from "./support/result.ts";
import { percentile, round } from "./support/stats.ts";
import type { WatchDeliveries } from "./workers/load-watch.ts";
import type { RawFanoutRequest } from "./workers/raw-fanout.ts";

const processes = 4;
const variable = "tick";
const p99Target = 50;

interface Case {
  readonly name: string;
  readonly server: "bridge" | "raw";
  readonly client: "connect" | "h2";
  /** Streams per session; the first session is written every round. */
  readonly sessions: readonly number[];
}

const cases: readonly Case[] = [
  { name: "1k", server: "bridge", client: "connect", sessions: [1000] },
  { name: "1k-lean", server: "bridge", client: "h2", sessions: [1000] },
  { name: "1k-raw", server: "raw", client: "h2", sessions: [1000] },
  { name: "10k", server: "bridge", client: "h2", sessions: [5000, 1000, 1000, 1000, 1000, 1000] },
  { name: "10k-raw", server: "raw", client: "h2", sessions: [5000, 1000, 1000, 1000, 1000, 1000] },
];

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Waits until the watchers have recorded `expected` deliveries, or `ms`
 * passed: on a loaded machine late deliveries are late, not lost, and
 * must not count in the next window.
 */
async function settle(watchers: readonly ChildWorker[], expected: number, ms: number) {
  const until = performance.now() + ms;
  for (;;) {
    const counts = await Promise.all(watchers.map((w) => w.request<number>({ type: "count" })));
    if (counts.reduce((a, b) => a + b, 0) >= expected || performance.now() > until) return;
    await sleep(100);
  }
}

/** The server under test, bridge or raw, as the case needs it. */
interface Target {
  readonly url: string;
  readonly worker: ChildWorker;
  write(sessionId: string, version: number): Promise<void>;
  close(): Promise<void>;
}

async function startTarget(c: Case, sessionIds: readonly string[]): Promise<Target> {
  if (c.server === "raw") {
    const worker = await startChild(new URL("./workers/raw-fanout.ts", import.meta.url), {
      execArgv: ["--expose-gc"],
    });
    const url = await worker.request<string>({ type: "start" } satisfies RawFanoutRequest);
    return {
      url,
      worker,
      write: async (sessionId, version) => {
        const stamp = wallClock();
        await worker.request({ type: "write", sessionId, variable, version, stamp });
      },
      close: async () => {
        await worker.request({ type: "stop" }).catch(() => null);
        await worker.close();
      },
    };
  }
  const total = c.sessions.reduce((a, b) => a + b, 0);
  const server: BridgeProcess = await startBridgeProcess({
    // Every stream comes from one client (loopback), so the per-client
    // ceiling is raised with the others.
    bridgeOptions: {
      maxWatchersPerSession: Math.max(...c.sessions),
      maxWatchersPerClient: total,
      maxWatchers: total,
    },
    execArgv: ["--expose-gc"],
  });
  for (const sessionId of sessionIds) {
    await server.client.initializeSession({
      sessionId,
      initialVariables: [
        { name: variable, type: "float", initialValue: encodeValue("float", 0).any },
      ],
    });
  }
  return {
    url: server.bridgeUrl,
    worker: server.worker,
    write: async (sessionId) => {
      const stamp = wallClock();
      await server.client.setVariable({
        sessionId,
        variableIdentifier: variable,
        value: encodeValue("float", stamp).any,
      });
    },
    close: () => server.close(),
  };
}

async function runCase(ctx: BenchContext, c: Case): Promise<BenchResult> {
  const writes = Math.max(5, Math.round(20 * ctx.scale));
  const spacingMs = c.sessions.length > 1 ? 500 : 300;
  const sessionIds = c.sessions.map((_, i) => `bench-fanout-session-${i}`);
  const target = await startTarget(c, sessionIds);
  const watchers: ChildWorker[] = [];
  try {
    const file = new URL("./workers/load-watch.ts", import.meta.url);
    watchers.push(
      ...(await Promise.all(Array.from({ length: processes }, () => startChild(file)))),
    );
    const clockOffsets = await Promise.all(watchers.map(clockOffset));
    const memoryBefore = await target.worker.request<NodeJS.MemoryUsage>({ type: "memory" });
    const opened = performance.now();
    await Promise.all(
      watchers.map(async (w) => {
        for (const [i, sessionId] of sessionIds.entries()) {
          await w.request({
            type: "open",
            url: target.url,
            sessionId,
            variable,
            streams: Math.round((c.sessions[i] as number) / processes),
            client: c.client,
          });
        }
      }),
    );
    const total = c.sessions.reduce((a, b) => a + b, 0);
    const openMs = Math.round(performance.now() - opened);
    await sleep(500);
    const memoryAfter = await target.worker.request<NodeJS.MemoryUsage>({ type: "memory" });
    ctx.log(`watch-fanout/${c.name}: ${total} streams open in ${openMs} ms; ${writes} rounds`);

    // Versions: the bridge counts them; the raw server is told.
    const versions = sessionIds.map(() => 0);
    const writeOne = async (i: number) => {
      versions[i] = (versions[i] as number) + 1;
      await target.write(sessionIds[i] as string, versions[i] as number);
    };
    // A discarded round first: the first delivery compiles the code paths.
    await writeOne(0);
    await settle(watchers, c.sessions[0] as number, 15_000);
    await Promise.all(watchers.map((w) => w.request({ type: "collect" })));

    let expected = 0;
    const cpuBefore = await target.worker.request<ServeCpu>({ type: "cpu" });
    for (let round = 0; round < writes; round++) {
      await writeOne(0);
      expected += c.sessions[0] as number;
      if (c.sessions.length > 1) {
        const other = 1 + (round % (c.sessions.length - 1));
        await writeOne(other);
        expected += c.sessions[other] as number;
      }
      await sleep(spacingMs);
    }
    await settle(watchers, expected, 15_000);
    const collected = await Promise.all(
      watchers.map((w) => w.request<WatchDeliveries>({ type: "collect" })),
    );
    const cpuAfter = await target.worker.request<ServeCpu>({ type: "cpu" });

    const all: number[] = [];
    for (const got of collected) for (const l of Object.values(got.byVersion)) all.push(...l);
    const ended = collected.reduce((s, got) => s + got.ended, 0);
    const firstError = collected.find((got) => got.firstError !== undefined)?.firstError;
    const lost = expected - all.length;
    const p50 = percentile(all, 50);
    const p99 = percentile(all, 99);
    const max = all.length === 0 ? Number.NaN : Math.max(...all);
    const serverCpuUs = cpuAfter.cpuMicros - cpuBefore.cpuMicros;
    const perDeliveryUs = serverCpuUs / Math.max(1, all.length);
    // After a full collection in the server, so garbage is not counted.
    const rssPerStream = (memoryAfter.rss - memoryBefore.rss) / total;
    const heapPerStream = (memoryAfter.heapUsed - memoryBefore.heapUsed) / total;
    // A lost delivery is worse than a late one: it fails the target outright.
    const complete = lost === 0 && ended === 0;
    const gated = c.name === "1k" || c.name === "1k-lean";
    return {
      name: `watch-fanout/${c.name}/p99`,
      value: round(p99, 3),
      unit: "ms",
      target: gated ? `≤ ${p99Target} ms` : "info",
      pass: gated ? complete && p99 <= p99Target : null,
      ratio: gated ? round(p99 / p99Target, 3) : null,
      display: `p99 ${p99.toFixed(1)} ms, p50 ${p50.toFixed(1)}, max ${max.toFixed(1)}; ${lost} lost of ${expected}${ended > 0 ? ` (${ended} streams ended${firstError === undefined ? "" : `: ${firstError}`})` : ""}; server ${perDeliveryUs.toFixed(1)} µs CPU/delivery, ${(rssPerStream / 1024).toFixed(1)} KiB RSS/stream (heap ${(heapPerStream / 1024).toFixed(1)} KiB)`,
      details: {
        server: c.server,
        client: c.client,
        sessions: c.sessions,
        streams: total,
        processes,
        rounds: writes,
        spacingMs,
        openMs,
        deliveries: all.length,
        expectedDeliveries: expected,
        lost,
        streamsEnded: ended,
        ...(firstError === undefined ? {} : { firstError }),
        p50Ms: round(p50),
        p90Ms: round(percentile(all, 90)),
        p99Ms: round(p99),
        maxMs: round(max),
        serverCpuUsPerDelivery: round(perDeliveryUs, 2),
        serverCpuMsPerRound: round(serverCpuUs / 1000 / writes, 3),
        watchersCpuMsPerRound: round(collected.reduce((s, got) => s + got.cpuMs, 0) / writes, 3),
        serverRssBytesPerStream: Math.round(rssPerStream),
        serverHeapBytesPerStream: Math.round(heapPerStream),
        serverRssBytesAfterOpen: memoryAfter.rss,
        // Watcher clock minus writer clock, estimated by round trip: the
        // latencies are only as good as this is small.
        clockOffsetMs: clockOffsets.map((o) => round(o, 2)),
      },
    };
  } finally {
    await Promise.all(watchers.map((w) => w.request({ type: "close" }).catch(() => null)));
    await Promise.all(watchers.map((w) => w.close()));
    await target.close();
  }
}

/** Runs the benchmark; see the module comment. */
export async function run(ctx: BenchContext): Promise<BenchResult[]> {
  const only = process.env.UB_BENCH_FANOUT_CASES?.split(",");
  const results: BenchResult[] = [];
  for (const c of cases) {
    if (only !== undefined && !only.includes(c.name)) continue;
    results.push(await runCase(ctx, c));
  }
  return results;
}
