/**
 * redis-cluster: what the Redis store commits on a local Redis Cluster
 * (three primaries with a replica each) against one Redis, and what
 * `--store-durability replicated` (WAIT for a replica after every write)
 * costs on the Cluster, measured side by side in one process: one store
 * per setup, 100 sessions, commits of one small value, 1 and 64 in flight,
 * the setups interleaved round by round. On one machine a Cluster adds
 * connections rather than speed (its primaries would be machines of their
 * own); the rows say what the layout and `replicated` cost, for the
 * figures docs/server.md quotes. No target: information.
 */
import { createRedisStore, type RedisStore } from "./support/internals.ts";
import { startRedisCluster } from "./support/redis-cluster.ts";
import { startRedisServer } from "./support/redis-server.ts";
import { type BenchContext, type BenchResult, formatRate } from "./support/result.ts";
import { median, round } from "./support/stats.ts";

const sessions = Array.from({ length: 100 }, (_, i) => `bench-cluster-${i}`);

type Setup = "redis" | "cluster" | "cluster-replicated";

/** Commits per second with `inFlight` commits in flight for `ms`. */
async function commitsPerSecond(store: RedisStore, inFlight: number, ms: number): Promise<number> {
  let commits = 0;
  const end = performance.now() + ms;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: inFlight }, async (_, worker) => {
      for (let n = worker; performance.now() < end; n += inFlight) {
        const sessionId = sessions[n % sessions.length] as string;
        await store.transact(sessionId, (tx) => tx.setData("n", n, 8));
        commits++;
      }
    }),
  );
  return commits / ((performance.now() - started) / 1000);
}

/** Runs the benchmark; see the module comment. */
export async function run(ctx: BenchContext): Promise<BenchResult[]> {
  const rounds = Math.max(3, Math.round(5 * ctx.scale));
  const durationMs = Math.round(1000 * ctx.scale);
  const redis = await startRedisServer();
  const cluster = await startRedisCluster();
  const stores: Record<Setup, RedisStore> = {
    redis: await createRedisStore({ url: `redis://127.0.0.1:${redis.port}`, sweepIntervalMs: 0 }),
    cluster: await createRedisStore({ url: cluster.url, keyPrefix: "a:", sweepIntervalMs: 0 }),
    "cluster-replicated": await createRedisStore({
      url: cluster.url,
      keyPrefix: "r:",
      sweepIntervalMs: 0,
      durability: "replicated",
    }),
  };
  try {
    const setups = Object.keys(stores) as Setup[];
    for (const setup of setups) {
      for (const id of sessions) {
        await stores[setup].createSession(
          { id, metadata: {}, ttlMs: 600_000, allowedTools: [] },
          1000,
        );
      }
    }
    const results: BenchResult[] = [];
    for (const inFlight of [1, 64]) {
      const measured: Record<Setup, number[]> = {
        redis: [],
        cluster: [],
        "cluster-replicated": [],
      };
      // Warm-up, then rounds taking the setups in turn.
      for (const setup of setups) await commitsPerSecond(stores[setup], inFlight, 200);
      for (let r = 0; r < rounds; r++) {
        ctx.log(`redis-cluster: ${inFlight} in flight, round ${r + 1}/${rounds}`);
        for (const setup of setups) {
          measured[setup].push(await commitsPerSecond(stores[setup], inFlight, durationMs));
        }
      }
      const [one, onCluster, replicated] = setups.map((s) => median(measured[s]));
      const details = {
        inFlight,
        rounds,
        durationMs,
        sessions: sessions.length,
        commitsPerSecond: {
          redis: measured.redis,
          cluster: measured.cluster,
          replicated: measured["cluster-replicated"],
        },
      };
      results.push(
        {
          name: `redis-cluster/c${inFlight}/cluster-vs-redis`,
          value: round((onCluster as number) / (one as number), 3),
          unit: "× one Redis",
          target: "info",
          pass: null,
          ratio: round((onCluster as number) / (one as number), 3),
          display: `commits on a 3-primary Cluster ${formatRate(onCluster as number)} vs one Redis ${formatRate(one as number)}`,
          details,
        },
        {
          name: `redis-cluster/c${inFlight}/replicated-vs-async`,
          value: round((replicated as number) / (onCluster as number), 3),
          unit: "× async",
          target: "info",
          pass: null,
          ratio: round((replicated as number) / (onCluster as number), 3),
          display: `commits on the Cluster with --store-durability replicated ${formatRate(replicated as number)} vs async ${formatRate(onCluster as number)}`,
          details,
        },
      );
    }
    return results;
  } finally {
    await Promise.all(Object.values(stores).map((s) => s.close()));
    await cluster.stop();
    await redis.stop();
  }
}
