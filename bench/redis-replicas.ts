/**
 * redis-replicas: watch delivery across replicas on the Redis store. Two
 * bridge processes share one Redis; this process writes through replica A
 * (its clock reading in the value) and watchers in separate load processes
 * record arrival − write time on replica B.
 *
 * - one watcher on B, 100 writes/s on A: target p99 ≤ 10 ms;
 * - the 1,000-watcher fan-out split over the two replicas (500 on each,
 *   writes through A): informational, beside the single-node fan-out.
 */
import { encodeValue } from "unified-session-bridge/values";
import { type BridgeProcess, startBridgeProcess } from "./support/bridge-process.ts";
import { type ChildWorker, startChild } from "./support/child-processes.ts";
import { clockOffset, wallClock } from "./support/clock.ts";
import { startRedisServer } from "./support/redis-server.ts";
import type { BenchContext, BenchResult } from "./support/result.ts";
import { median, percentile, round } from "./support/stats.ts";
import type { WatchDeliveries } from "./workers/load-watch.ts";

const sessionId = "bench-replicas-session";
const variable = "tick";
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Runs the benchmark; see the module comment. */
export async function run(ctx: BenchContext): Promise<BenchResult[]> {
  const redis = await startRedisServer();
  const redisUrl = `redis://127.0.0.1:${redis.port}`;
  const a = await startBridgeProcess({ redisUrl });
  const b = await startBridgeProcess({ redisUrl });
  const watchers: ChildWorker[] = [];
  try {
    await a.client.initializeSession({
      sessionId,
      initialVariables: [
        { name: variable, type: "float", initialValue: encodeValue("float", 0).any },
      ],
    });
    const file = new URL("./workers/load-watch.ts", import.meta.url);
    const results: BenchResult[] = [];

    // 1. One watcher on B, 100 writes/s through A.
    ctx.log("redis-replicas: one watcher on B, 100 writes/s through A");
    const single = await startChild(file);
    watchers.push(single);
    await single.request({ type: "open", url: b.bridgeUrl, sessionId, variable, streams: 1 });
    const offset = await clockOffset(single);
    await write(a);
    await sleep(500);
    await single.request({ type: "collect" });
    const writes = Math.max(100, Math.round(500 * ctx.scale));
    const started = performance.now();
    for (let i = 0; i < writes; i++) {
      await write(a);
      // 10 ms apart from start to start: 100 writes/s.
      const next = started + (i + 1) * 10;
      await sleep(Math.max(0, next - performance.now()));
    }
    await sleep(500);
    const got = await single.request<WatchDeliveries>({ type: "collect" });
    const latencies = Object.values(got.byVersion).flat();
    const p99 = percentile(latencies, 99);
    results.push({
      name: "redis-replicas/cross-replica-p99",
      value: round(p99, 3),
      unit: "ms",
      target: "≤ 10 ms",
      pass: latencies.length === writes && got.ended === 0 && p99 <= 10,
      ratio: round(p99 / 10, 3),
      display: `write on A, watch on B at 100 writes/s: p99 ${p99.toFixed(2)} ms (p50 ${percentile(latencies, 50).toFixed(2)} ms, max ${Math.max(...latencies).toFixed(2)} ms), ${latencies.length}/${writes} deliveries`,
      details: {
        writes,
        deliveries: latencies.length,
        p50Ms: round(percentile(latencies, 50)),
        p99Ms: round(p99),
        maxMs: round(Math.max(...latencies)),
        clockOffsetMs: round(offset, 2),
      },
    });
    await single.request({ type: "close" });

    // 2. The 1,000-watcher fan-out split over A and B.
    ctx.log("redis-replicas: 1,000 watchers, 500 on each replica");
    const fan = await Promise.all([0, 1, 2, 3].map(() => startChild(file)));
    watchers.push(...fan);
    await Promise.all(
      fan.map((w, i) =>
        w.request({
          type: "open",
          url: (i < 2 ? a : b).bridgeUrl,
          sessionId,
          variable,
          streams: 250,
        }),
      ),
    );
    await write(a);
    await sleep(1000);
    await Promise.all(fan.map((w) => w.request({ type: "collect" })));
    const fanWrites = Math.max(5, Math.round(20 * ctx.scale));
    for (let i = 0; i < fanWrites; i++) {
      await write(a);
      await sleep(300);
    }
    await sleep(1000);
    const collected = await Promise.all(
      fan.map((w) => w.request<WatchDeliveries>({ type: "collect" })),
    );
    const onA = collected.slice(0, 2).flatMap((c) => Object.values(c.byVersion).flat());
    const onB = collected.slice(2).flatMap((c) => Object.values(c.byVersion).flat());
    const all = [...onA, ...onB];
    const expected = fanWrites * 1000;
    const fanP99 = percentile(all, 99);
    results.push({
      name: "redis-replicas/fanout-1000-p99",
      value: round(fanP99, 3),
      unit: "ms",
      target: "info",
      pass: null,
      ratio: null,
      display: `1,000 watchers over 2 replicas: p99 ${fanP99.toFixed(1)} ms (on A ${percentile(onA, 99).toFixed(1)}, on B ${percentile(onB, 99).toFixed(1)}), ${all.length}/${expected} deliveries`,
      details: {
        writes: fanWrites,
        deliveries: all.length,
        expectedDeliveries: expected,
        p50Ms: round(percentile(all, 50)),
        p99Ms: round(fanP99),
        p99OnAMs: round(percentile(onA, 99)),
        p99OnBMs: round(percentile(onB, 99)),
        medianMs: round(median(all)),
      },
    });
    return results;
  } finally {
    await Promise.all(watchers.map((w) => w.request({ type: "close" }).catch(() => null)));
    await Promise.all(watchers.map((w) => w.close()));
    await Promise.all([a.close(), b.close()]);
    await redis.stop();
  }
}

async function write(server: BridgeProcess): Promise<void> {
  await server.client.setVariable({
    sessionId,
    variableIdentifier: variable,
    value: encodeValue("float", wallClock()).any,
  });
}
