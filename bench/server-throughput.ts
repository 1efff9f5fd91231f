/**
 * server-throughput: GetVariable and SetVariable calls/s against a bare echo
 * handler (Ping) served by the same HTTP front in the same server process,
 * at 1, 16 and 64 calls in flight, over gRPC (h2c) and Connect (binary
 * messages over HTTP/1.1). Load comes from a separate process using the lean
 * client of `support/raw-rpc.ts`, so the server is the bottleneck; echo, get
 * and set are interleaved round by round (after a warm-up run of each) and
 * the median of the per-round ratios is reported, with the server's CPU time
 * per call as a cross-check. Targets: GetVariable ≥ 80% of echo's calls/s,
 * and SetVariable's server CPU per call within 1.1× of echo's over gRPC at 16
 * in flight (the `set-cpu` rows: the median of the per-round ratios), so the
 * bridge's own work per call stays small beside the RPC stack's.
 */
import { seedSettingSession, startBridgeProcess } from "./support/bridge-process.ts";
import { type Measured, pairedRatios, sideBySide, startLoadPool } from "./support/load-pool.ts";
import { type BenchContext, type BenchResult, formatRate } from "./support/result.ts";
import { median, percentile, round } from "./support/stats.ts";
import type { RpcProtocol } from "./workers/load-calls.ts";

const protocols: readonly RpcProtocol[] = ["grpc", "connect"];
const concurrencies = [1, 16, 64] as const;
const sessionId = "bench-throughput-session";
const variable = "temperature";
const getTarget = 0.8;
/** SetVariable's server CPU per call over echo's, where it is a target. */
const setCpuTarget = 1.1;
const setCpuTargetAt = { protocol: "grpc", concurrency: 16 } as const;

/** Runs the benchmark; see the module comment. */
export async function run(ctx: BenchContext): Promise<BenchResult[]> {
  // Many short rounds rather than a few long ones: this machine's speed
  // drifts over seconds, and a paired ratio is only fair if both halves of
  // the pair ran under the same conditions.
  const rounds = Math.max(5, Math.round(12 * ctx.scale));
  const timing = { warmupMs: 50, durationMs: 250 };
  const server = await startBridgeProcess();
  const pool = await startLoadPool(1);
  try {
    await seedSettingSession(server.client, sessionId, variable);
    const results: BenchResult[] = [];
    for (const protocol of protocols) {
      for (const concurrency of concurrencies) {
        ctx.log(`server-throughput: ${protocol} c=${concurrency} (${rounds} rounds)`);
        const base = { protocol, client: "raw", sessionId, identifiers: [variable] } as const;
        const variants = (t: { warmupMs: number; durationMs: number }) => ({
          echo: () =>
            pool.measure(
              { ...base, ...t, op: "echo", url: server.echoUrl },
              concurrency,
              server.worker,
            ),
          get: () =>
            pool.measure(
              { ...base, ...t, op: "get", url: server.bridgeUrl },
              concurrency,
              server.worker,
            ),
          set: () =>
            pool.measure(
              { ...base, ...t, op: "set", url: server.bridgeUrl },
              concurrency,
              server.worker,
            ),
        });
        // One discarded run of each first: JIT, connections, steady state.
        await sideBySide(1, variants({ warmupMs: 100, durationMs: 400 }));
        const samples = await sideBySide(rounds, variants(timing));
        const prefix = `server-throughput/${protocol}/c${concurrency}`;
        for (const op of ["get", "set"] as const) {
          const ratios = pairedRatios(samples[op], samples.echo);
          const ratio = median(ratios);
          const p25 = percentile(ratios, 25);
          const p75 = percentile(ratios, 75);
          const label = op === "get" ? "GetVariable" : "SetVariable";
          const cpu = {
            [op]: medianOf(samples[op], (m) => m.serverCpuMicrosPerCall),
            echo: medianOf(samples.echo, (m) => m.serverCpuMicrosPerCall),
          };
          results.push({
            name: `${prefix}/${op}`,
            value: round(ratio, 3),
            unit: "× echo",
            target: op === "get" ? `≥ ${getTarget}× echo` : "info",
            pass: op === "get" ? ratio >= getTarget : null,
            ratio: round(ratio, 3),
            display:
              `${label} ${formatRate(rateOf(samples[op]))} vs echo ${formatRate(rateOf(samples.echo))}` +
              ` (server ${Math.round(cpu[op] ?? 0)} vs ${Math.round(cpu.echo ?? 0)} µs CPU/call)`,
            details: {
              protocol: protocol === "grpc" ? "gRPC over h2c" : "Connect (binary) over HTTP/1.1",
              concurrency,
              loadClient: "raw (support/raw-rpc.ts), 1 process",
              rounds,
              ...timing,
              callsPerSecond: {
                [op]: round(rateOf(samples[op])),
                echo: round(rateOf(samples.echo)),
              },
              ratioOfMedians: round(rateOf(samples[op]) / rateOf(samples.echo), 3),
              // Spread of the per-round ratios: how far one run's median can be trusted.
              ratioP25P75: [p25, p75].map((v) => round(v, 3)),
              clientCpuShare: round(
                medianOf([...samples[op], ...samples.echo], (m) => m.clientCpuShare),
                2,
              ),
              serverCpuMicrosPerCall: {
                [op]: round(cpu[op] ?? Number.NaN),
                echo: round(cpu.echo ?? Number.NaN),
              },
              // Throughput ratio the server's CPU cost alone predicts at saturation.
              cpuRatio: round(median(pairedCpuRatios(samples.echo, samples[op])), 3),
              serverCpuShare: {
                [op]: round(
                  medianOf(samples[op], (m) => m.serverCpuShare),
                  2,
                ),
                echo: round(
                  medianOf(samples.echo, (m) => m.serverCpuShare),
                  2,
                ),
              },
              p50Micros: {
                [op]: round(medianOf(samples[op], (m) => m.p50Micros)),
                echo: round(medianOf(samples.echo, (m) => m.p50Micros)),
              },
              perRound: {
                [op]: samples[op].map((m) => round(m.rate)),
                echo: samples.echo.map((m) => round(m.rate)),
              },
              errors:
                samples[op].reduce((s, m) => s + m.errors, 0) +
                samples.echo.reduce((s, m) => s + m.errors, 0),
            },
          });
        }
        const setCpu = pairedCpuRatios(samples.set, samples.echo);
        const setCpuRatio = median(setCpu);
        const gated =
          protocol === setCpuTargetAt.protocol && concurrency === setCpuTargetAt.concurrency;
        const cpuOf = (op: "set" | "echo") =>
          medianOf(samples[op], (m) => m.serverCpuMicrosPerCall);
        const [setMicros, echoMicros] = [cpuOf("set"), cpuOf("echo")];
        results.push({
          name: `${prefix}/set-cpu`,
          value: round(setCpuRatio, 3),
          unit: "× echo CPU",
          target: gated ? `≤ ${setCpuTarget}× echo CPU` : "info",
          pass: gated ? setCpuRatio <= setCpuTarget : null,
          ratio: round(setCpuRatio, 3),
          display: `SetVariable ${Math.round(setMicros)} vs echo ${Math.round(echoMicros)} µs server CPU/call`,
          details: {
            concurrency,
            rounds,
            perRound: setCpu.map((v) => round(v, 3)),
            p25P75: [percentile(setCpu, 25), percentile(setCpu, 75)].map((v) => round(v, 3)),
          },
        });
      }
    }
    return results;
  } finally {
    await pool.close();
    await server.close();
  }
}

/**
 * Per-round server CPU per call of `a` ÷ that of `b`. Echo ÷ op is the op's
 * throughput relative to echo were CPU the only limit; op ÷ echo is what the
 * op costs over the bare RPC stack.
 */
function pairedCpuRatios(a: readonly Measured[], b: readonly Measured[]): number[] {
  return a.map(
    (m, i) =>
      (m.serverCpuMicrosPerCall ?? Number.NaN) /
      ((b[i] as Measured).serverCpuMicrosPerCall ?? Number.NaN),
  );
}

function rateOf(samples: readonly Measured[]): number {
  return median(samples.map((m) => m.rate));
}

function medianOf(samples: readonly Measured[], pick: (m: Measured) => number | undefined): number {
  return median(samples.map(pick).filter((v): v is number => v !== undefined));
}
