/**
 * watch-fanout: one SetVariable delivered to 1,000 watch streams (4 load
 * processes × 250 streams, each process on one HTTP/2 connection, gRPC).
 * The writer (this process) puts its clock reading in the written value;
 * every watcher records arrival − write time. Several writes, spaced so
 * that each fan-out is measured on its own. Target: p99 ≤ 50 ms on
 * loopback, the bound on how stale a watching client's cache may be.
 */
import { encodeValue } from "unified-bridge/values";
import { type BridgeProcess, startBridgeProcess } from "./support/bridge-process.ts";
import { type ChildWorker, startChild } from "./support/child-processes.ts";
import { clockOffset, wallClock } from "./support/clock.ts";
import type { BenchContext, BenchResult } from "./support/result.ts";
import { median, percentile, round } from "./support/stats.ts";
import type { WatchDeliveries } from "./workers/load-watch.ts";
import type { ServeCpu } from "./workers/serve-bridge.ts";

const processes = 4;
const streamsPerProcess = 250;
const sessionId = "bench-fanout-session";
const variable = "tick";
const p99Target = 50;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Runs the benchmark; see the module comment. */
export async function run(ctx: BenchContext): Promise<BenchResult[]> {
  const writes = Math.max(5, Math.round(20 * ctx.scale));
  const spacingMs = 300;
  const server = await startBridgeProcess();
  const watchers: ChildWorker[] = [];
  try {
    await server.client.initializeSession({
      sessionId,
      initialVariables: [
        { name: variable, type: "float", initialValue: encodeValue("float", 0).any },
      ],
    });
    const file = new URL("./workers/load-watch.ts", import.meta.url);
    watchers.push(
      ...(await Promise.all(Array.from({ length: processes }, () => startChild(file)))),
    );
    const clockOffsets = await Promise.all(watchers.map(clockOffset));
    const opened = performance.now();
    await Promise.all(
      watchers.map((w) =>
        w.request({
          type: "open",
          url: server.bridgeUrl,
          sessionId,
          variable,
          streams: streamsPerProcess,
        }),
      ),
    );
    const total = processes * streamsPerProcess;
    ctx.log(
      `watch-fanout: ${total} streams open in ${Math.round(performance.now() - opened)} ms; ${writes} writes`,
    );

    // A discarded write first: the first delivery compiles the code paths.
    await write(server.client);
    await sleep(1000);
    await Promise.all(watchers.map((w) => w.request({ type: "collect" })));

    const serverCpuBefore = await server.worker.request<ServeCpu>({ type: "cpu" });
    for (let i = 0; i < writes; i++) {
      await write(server.client);
      await sleep(spacingMs);
    }
    await sleep(1000);
    const collected = await Promise.all(
      watchers.map((w) => w.request<WatchDeliveries>({ type: "collect" })),
    );
    const serverCpuAfter = await server.worker.request<ServeCpu>({ type: "cpu" });

    const all: number[] = [];
    const perWrite = new Map<string, number[]>();
    for (const c of collected) {
      for (const [version, latencies] of Object.entries(c.byVersion)) {
        all.push(...latencies);
        perWrite.set(version, [...(perWrite.get(version) ?? []), ...latencies]);
      }
    }
    const ended = collected.reduce((s, c) => s + c.ended, 0);
    const firstError = collected.find((c) => c.firstError !== undefined)?.firstError;
    const expected = writes * total;
    const p50 = percentile(all, 50);
    const p99 = percentile(all, 99);
    // A lost delivery is worse than a late one: it fails the target outright.
    const complete = all.length === expected && ended === 0;
    const details = {
      watchers: total,
      processes,
      writes,
      spacingMs,
      deliveries: all.length,
      expectedDeliveries: expected,
      streamsEnded: ended,
      ...(firstError === undefined ? {} : { firstError }),
      p50Ms: round(p50),
      p90Ms: round(percentile(all, 90)),
      p99Ms: round(p99),
      maxMs: round(Math.max(...all)),
      perWriteP99Ms: [...perWrite.values()].map((l) => round(percentile(l, 99), 3)),
      perWriteLastDeliveryMs: [...perWrite.values()].map((l) => round(Math.max(...l), 3)),
      // Watcher clock minus writer clock, estimated by round trip: the
      // latencies are only as good as this is small.
      clockOffsetMs: clockOffsets.map((o) => round(o, 2)),
      // Where the time goes, per write (idle waiting between writes excluded).
      cpuMsPerWrite: {
        server: round((serverCpuAfter.cpuMicros - serverCpuBefore.cpuMicros) / 1000 / writes, 3),
        watchersTotal: round(collected.reduce((s, c) => s + c.cpuMs, 0) / writes, 3),
      },
    };
    return [
      {
        name: "watch-fanout/p99",
        value: round(p99, 3),
        unit: "ms",
        target: `≤ ${p99Target} ms`,
        pass: complete && p99 <= p99Target,
        ratio: round(p99 / p99Target, 3),
        display: `p99 ${p99.toFixed(1)} ms (p50 ${p50.toFixed(1)} ms), ${all.length}/${expected} deliveries`,
        details,
      },
      {
        name: "watch-fanout/p50",
        value: round(p50, 3),
        unit: "ms",
        target: "info",
        pass: null,
        ratio: null,
        display: `p50 ${p50.toFixed(1)} ms; median per-write last delivery ${median(details.perWriteLastDeliveryMs).toFixed(1)} ms`,
        details: { p50Ms: round(p50) },
      },
    ];
  } finally {
    await Promise.all(watchers.map((w) => w.request({ type: "close" }).catch(() => null)));
    await Promise.all(watchers.map((w) => w.close()));
    await server.close();
  }
}

/** Writes the current wall-clock time as the variable's value. */
async function write(client: BridgeProcess["client"]): Promise<void> {
  const stamp = wallClock();
  await client.setVariable({
    sessionId,
    variableIdentifier: variable,
    value: encodeValue("float", stamp).any,
  });
}
