/**
 * redis-store: the bridge on the Redis store against the bridge on the
 * memory store and against bare Redis GET/SET through ioredis, each from
 * the same load process (the lean gRPC client) at 1 and 16 calls in flight,
 * interleaved round by round: GetVariable, SetVariable, GetVariables(100).
 * Targets: reads ≥ 0.8× and writes ≥ 0.5× the memory store (sharing state
 * between replicas may cost a round trip to Redis, not the bridge's speed).
 * Round trips to Redis per call are counted from Redis' own command
 * statistics (scripts run, over a fixed number of sequential calls).
 */
import { Redis } from "ioredis";
import { encodeValue } from "unified-session-bridge/values";
import { startBridgeProcess } from "./support/bridge-process.ts";
import { type Measured, pairedRatios, sideBySide, startLoadPool } from "./support/load-pool.ts";
import { startRedisServer } from "./support/redis-server.ts";
import { type BenchContext, type BenchResult, formatRate } from "./support/result.ts";
import { median, round } from "./support/stats.ts";

const sessionId = "bench-redis-store-session";
const names = Array.from({ length: 100 }, (_, i) => `v${String(i).padStart(3, "0")}`);
const redisKey = "bare:v042";

/** Runs the benchmark; see the module comment. */
export async function run(ctx: BenchContext): Promise<BenchResult[]> {
  const rounds = Math.max(3, Math.round(5 * ctx.scale));
  const timing = { warmupMs: 100, durationMs: Math.round(500 * ctx.scale) };
  const redis = await startRedisServer();
  const redisUrl = `redis://127.0.0.1:${redis.port}`;
  const memory = await startBridgeProcess();
  const onRedis = await startBridgeProcess({ redisUrl });
  const pool = await startLoadPool(1);
  const admin = new Redis({ host: "127.0.0.1", port: redis.port });
  try {
    await admin.set(redisKey, "0.42");
    for (const server of [memory, onRedis]) {
      await server.client.initializeSession({
        sessionId,
        initialVariables: names.map((name, i) => ({
          name,
          type: "float",
          constraintsJson: '{"min":0,"max":2}',
          initialValue: encodeValue("float", i / 100).any,
        })),
      });
    }
    const results: BenchResult[] = [];
    const trips = await roundTrips(admin, onRedis.client);
    results.push({
      name: "redis-store/round-trips",
      value: trips.read,
      unit: "round trips",
      target: "≤ 1 per read, ≤ 2 per write",
      pass: trips.read <= 1.05 && trips.write <= 2.05,
      ratio: null,
      display: `Redis round trips per call: GetVariable ${trips.read}, SetVariable ${trips.write}, GetVariables(100) ${trips.batch}`,
      details: { ...trips, calls: 200 },
    });
    for (const concurrency of [1, 16]) {
      ctx.log(`redis-store: c=${concurrency} (${rounds} rounds)`);
      const rpc = (url: string) => ({ protocol: "grpc", client: "raw", url, sessionId }) as const;
      const variants = (t: { warmupMs: number; durationMs: number }) => ({
        memoryGet: () =>
          pool.measure(
            { ...rpc(memory.bridgeUrl), ...t, op: "get", identifiers: ["v042"] },
            concurrency,
          ),
        redisGet: () =>
          pool.measure(
            { ...rpc(onRedis.bridgeUrl), ...t, op: "get", identifiers: ["v042"] },
            concurrency,
          ),
        bareGet: () =>
          pool.measure(
            { ...t, op: "redis-get", redisPort: redis.port, identifiers: [redisKey] },
            concurrency,
          ),
        memorySet: () =>
          pool.measure(
            { ...rpc(memory.bridgeUrl), ...t, op: "set", identifiers: ["v042"] },
            concurrency,
          ),
        redisSet: () =>
          pool.measure(
            { ...rpc(onRedis.bridgeUrl), ...t, op: "set", identifiers: ["v042"] },
            concurrency,
          ),
        bareSet: () =>
          pool.measure(
            { ...t, op: "redis-set", redisPort: redis.port, identifiers: [redisKey] },
            concurrency,
          ),
        memoryBatch: () =>
          pool.measure(
            { ...rpc(memory.bridgeUrl), ...t, op: "get-many", identifiers: names },
            concurrency,
          ),
        redisBatch: () =>
          pool.measure(
            { ...rpc(onRedis.bridgeUrl), ...t, op: "get-many", identifiers: names },
            concurrency,
          ),
      });
      await sideBySide(1, variants({ warmupMs: 100, durationMs: 300 }));
      const s = await sideBySide(rounds, variants(timing));
      for (const [op, ours, memoryRuns, bare, target, label] of [
        ["get", s.redisGet, s.memoryGet, s.bareGet, 0.8, "GetVariable"],
        ["set", s.redisSet, s.memorySet, s.bareSet, 0.5, "SetVariable"],
        ["get-many", s.redisBatch, s.memoryBatch, undefined, 0.8, "GetVariables(100)"],
      ] as const) {
        const ratio = median(pairedRatios(ours, memoryRuns));
        results.push({
          name: `redis-store/c${concurrency}/${op}`,
          value: round(ratio, 3),
          unit: "× memory store",
          target: `≥ ${target}× memory store`,
          pass: ratio >= target,
          ratio: round(ratio, 3),
          display: `${label} on Redis ${formatRate(rateOf(ours))} vs memory ${formatRate(rateOf(memoryRuns))}${bare === undefined ? "" : ` (bare Redis ${op === "get" ? "GET" : "SET"} ${formatRate(rateOf(bare))})`}`,
          details: {
            concurrency,
            loadClient: "raw gRPC (support/raw-rpc.ts) and ioredis, 1 load process",
            rounds,
            ...timing,
            callsPerSecond: {
              redisStore: round(rateOf(ours)),
              memoryStore: round(rateOf(memoryRuns)),
              ...(bare === undefined ? {} : { bareRedis: round(rateOf(bare)) }),
            },
            perRound: {
              redisStore: ours.map((m) => round(m.rate)),
              memoryStore: memoryRuns.map((m) => round(m.rate)),
            },
          },
        });
      }
    }
    return results;
  } finally {
    await admin.quit();
    await pool.close();
    await Promise.all([memory.close(), onRedis.close()]);
    await redis.stop();
  }
}

/**
 * Scripts Redis ran per call, over 200 sequential calls of each kind (the
 * store's only commands on the call path are its scripts; the feed reader
 * and the sweeper use other commands).
 */
async function roundTrips(
  admin: Redis,
  client: Awaited<ReturnType<typeof startBridgeProcess>>["client"],
): Promise<{ read: number; write: number; batch: number }> {
  const scripts = async () => {
    const info = await admin.info("commandstats");
    let calls = 0;
    for (const m of info.matchAll(/^cmdstat_(?:evalsha|eval):calls=(\d+)/gm)) calls += Number(m[1]);
    return calls;
  };
  const n = 200;
  const per = async (call: (i: number) => Promise<unknown>) => {
    const before = await scripts();
    for (let i = 0; i < n; i++) await call(i);
    return round(((await scripts()) - before) / n, 2);
  };
  const read = await per(() => client.getVariable({ sessionId, variableIdentifier: "v001" }));
  const write = await per((i) =>
    client.setVariable({
      sessionId,
      variableIdentifier: "v001",
      value: encodeValue("float", (i % 100) / 100).any,
    }),
  );
  const batch = await per(() => client.getVariables({ sessionId, variableIdentifiers: names }));
  return { read, write, batch };
}

function rateOf(samples: readonly Measured[]): number {
  return median(samples.map((m) => m.rate));
}
