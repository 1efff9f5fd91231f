/**
 * batch-get: variables per second read with GetVariables(100) against the
 * same reads done as single GetVariable calls, over gRPC at 1 and 16 calls
 * in flight, interleaved round by round. Load comes from a separate process
 * with the lean client (see `support/raw-rpc.ts`). Target:
 * GetVariables(100) ≥ 20× the variables per second of GetVariable (a batch
 * pays the per-call cost once).
 */
import { encodeValue } from "unified-session-bridge/values";
import { startBridgeProcess } from "./support/bridge-process.ts";
import { type Measured, pairedRatios, sideBySide, startLoadPool } from "./support/load-pool.ts";
import { type BenchContext, type BenchResult, formatRate } from "./support/result.ts";
import { median, round } from "./support/stats.ts";

const sessionId = "bench-batch-session";
const batchSize = 100;
const names = Array.from({ length: batchSize }, (_, i) => `v${String(i).padStart(3, "0")}`);
const target = 20;

/** Runs the benchmark; see the module comment. */
export async function run(ctx: BenchContext): Promise<BenchResult[]> {
  const rounds = Math.max(3, Math.round(6 * ctx.scale));
  const timing = { warmupMs: 150, durationMs: Math.round(700 * ctx.scale) };
  const server = await startBridgeProcess();
  const pool = await startLoadPool(1);
  try {
    await server.client.initializeSession({
      sessionId,
      initialVariables: names.map((name, i) => ({
        name,
        type: "float",
        initialValue: encodeValue("float", i / 100).any,
      })),
    });
    const results: BenchResult[] = [];
    for (const concurrency of [1, 16]) {
      ctx.log(`batch-get: grpc c=${concurrency} (${rounds} rounds)`);
      const base = { protocol: "grpc", client: "raw", url: server.bridgeUrl, sessionId } as const;
      const variants = (t: { warmupMs: number; durationMs: number }) => ({
        single: () =>
          pool.measure(
            { ...base, ...t, op: "get", identifiers: ["v042"] },
            concurrency,
            server.worker,
          ),
        batch: () =>
          pool.measure(
            { ...base, ...t, op: "get-many", identifiers: names },
            concurrency,
            server.worker,
          ),
      });
      await sideBySide(1, variants({ warmupMs: 100, durationMs: 400 }));
      const samples = await sideBySide(rounds, variants(timing));
      const ratio = median(pairedRatios(samples.batch, samples.single, batchSize));
      const batchVars = rateOf(samples.batch) * batchSize;
      const singleVars = rateOf(samples.single);
      results.push({
        name: `batch-get/grpc/c${concurrency}`,
        value: round(ratio, 3),
        unit: "× single",
        target: `≥ ${target}× single`,
        pass: ratio >= target,
        ratio: round(ratio, 3),
        display: `GetVariables(${batchSize}) ${formatRate(batchVars, " var/s")} vs GetVariable ${formatRate(singleVars, " var/s")}`,
        details: {
          protocol: "gRPC over h2c",
          concurrency,
          loadClient: "raw (support/raw-rpc.ts), 1 process",
          rounds,
          ...timing,
          variablesPerSecond: { batch: round(batchVars), single: round(singleVars) },
          callsPerSecond: { batch: round(rateOf(samples.batch)), single: round(singleVars) },
          serverCpuMicrosPerCall: {
            batch: round(median(samples.batch.map((m) => m.serverCpuMicrosPerCall ?? Number.NaN))),
            single: round(
              median(samples.single.map((m) => m.serverCpuMicrosPerCall ?? Number.NaN)),
            ),
          },
          perRound: {
            batchVariables: samples.batch.map((m) => round(m.rate * batchSize)),
            singleVariables: samples.single.map((m) => round(m.rate)),
          },
        },
      });
    }
    return results;
  } finally {
    await pool.close();
    await server.close();
  }
}

function rateOf(samples: readonly Measured[]): number {
  return median(samples.map((m) => m.rate));
}
