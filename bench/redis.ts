/**
 * redis: Redis GET/SET through ioredis against GetVariable/SetVariable
 * through connect-node's gRPC client, each from the same kind of load
 * process at the same concurrency (1, 16, 64), interleaved round by round.
 * Both are what an application would use, client costs included. The ratio
 * is far below 1 by nature (a Redis GET does much less than a validated,
 * versioned, session-scoped read behind an RPC stack); it is informational
 * and is why the client keeps a cache: a unary call through connect-node
 * costs a few hundred microseconds, while Redis answers ~100k GETs/s, so
 * reads must be local to win.
 */
import { Redis } from "ioredis";
import { seedSettingSession, startBridgeProcess } from "./support/bridge-process.ts";
import { type Measured, pairedRatios, sideBySide, startLoadPool } from "./support/load-pool.ts";
import { startRedisServer } from "./support/redis-server.ts";
import { type BenchContext, type BenchResult, formatRate } from "./support/result.ts";
import { median, round } from "./support/stats.ts";

const sessionId = "bench-redis-session";
const variable = "temperature";
const redisKey = `bench:${variable}`;

/** Runs the benchmark; see the module comment. */
export async function run(ctx: BenchContext): Promise<BenchResult[]> {
  const rounds = Math.max(3, Math.round(5 * ctx.scale));
  const timing = { warmupMs: 100, durationMs: Math.round(400 * ctx.scale) };
  const redis = await startRedisServer();
  const server = await startBridgeProcess().catch(async (error: unknown) => {
    await redis.stop();
    throw error;
  });
  const pool = await startLoadPool(1);
  try {
    const setup = new Redis({ host: "127.0.0.1", port: redis.port });
    await setup.set(redisKey, "0.7");
    await setup.quit();
    await seedSettingSession(server.client, sessionId, variable);
    const results: BenchResult[] = [];
    for (const concurrency of [1, 16, 64]) {
      ctx.log(`redis: c=${concurrency} (${rounds} rounds)`);
      const rpc = {
        protocol: "grpc",
        client: "connect-node",
        url: server.bridgeUrl,
        sessionId,
      } as const;
      const variants = (t: { warmupMs: number; durationMs: number }) => ({
        redisGet: () =>
          pool.measure(
            { ...t, op: "redis-get", redisPort: redis.port, identifiers: [redisKey] },
            concurrency,
          ),
        bridgeGet: () =>
          pool.measure({ ...t, ...rpc, op: "get", identifiers: [variable] }, concurrency),
        redisSet: () =>
          pool.measure(
            { ...t, op: "redis-set", redisPort: redis.port, identifiers: [redisKey] },
            concurrency,
          ),
        bridgeSet: () =>
          pool.measure({ ...t, ...rpc, op: "set", identifiers: [variable] }, concurrency),
      });
      await sideBySide(1, variants({ warmupMs: 100, durationMs: 400 }));
      const s = await sideBySide(rounds, variants(timing));
      for (const [op, ours, theirs, label] of [
        ["get", s.bridgeGet, s.redisGet, ["GetVariable", "GET"]],
        ["set", s.bridgeSet, s.redisSet, ["SetVariable", "SET"]],
      ] as const) {
        const ratio = median(pairedRatios(ours, theirs));
        results.push({
          name: `redis/c${concurrency}/${op}`,
          value: round(ratio, 3),
          unit: "× Redis",
          target: "info",
          pass: null,
          ratio: round(ratio, 3),
          display: `${label[0]} ${formatRate(rateOf(ours))} vs Redis ${label[1]} ${formatRate(rateOf(theirs))}`,
          details: {
            concurrency,
            clients:
              "connect-node gRPC (one HTTP/2 connection) vs ioredis (one connection), 1 load process",
            rounds,
            ...timing,
            callsPerSecond: { bridge: round(rateOf(ours)), redis: round(rateOf(theirs)) },
            p50Micros: {
              bridge: round(median(ours.map((m) => m.p50Micros))),
              redis: round(median(theirs.map((m) => m.p50Micros))),
            },
            perRound: {
              bridge: ours.map((m) => round(m.rate)),
              redis: theirs.map((m) => round(m.rate)),
            },
          },
        });
      }
    }
    return results;
  } finally {
    await pool.close();
    await server.close();
    await redis.stop();
  }
}

function rateOf(samples: readonly Measured[]): number {
  return median(samples.map((m) => m.rate));
}
