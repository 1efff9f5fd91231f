/**
 * workload: the read-heavy workload applications run (100
 * variables, 16 concurrent tasks, 95% reads / 5% writes) through a
 * SessionContext with watch on, against the same workload straight on
 * Redis through ioredis. Both run in the same kind of forked load process
 * (`workers/load-workload.ts`), the bridge in a process of its own
 * (`support/bridge-process.ts`), Redis in its own `redis-server`. Variants
 * alternate round by round (the order rotating); ops/s are per round, the
 * ratio is the median of the per-round ratios.
 *
 * One client per application instance: the tasks of a process share one
 * SessionContext (one cache, one watch stream), as they share one ioredis
 * client (one connection). Two shapes of the same 16 tasks:
 * - `1x16`: one instance, 16 tasks. Every write goes through the one cache
 *   (write-through), so its readers can only be stale by what happens inside
 *   one process: this is the single-instance figure.
 * - `2x8`: two instances, 8 tasks each, on the same session / keys. A write
 *   by one instance reaches the other's cache by the watch stream, so the
 *   staleness measured here is the watch delivery delay under load.
 * Both with connect-node's gRPC transport; `1x16-connect` repeats the first
 * with the Connect protocol. Information: `2x8-replicas` repeats the second
 * with each instance on its own bridge replica on the Redis store, and
 * `1x16-gzip1k` the first against a bridge that gzips small replies (see
 * `shapes`).
 *
 * Staleness of a read, in ms: each write stores a unique write id and logs
 * when it was issued and acknowledged; each measured read logs when it
 * started and the id it saw. A read is stale when some write W to the same
 * variable was acknowledged before the read started and was issued after
 * the seen write had been acknowledged (so W is certainly later in any
 * order of the writes, concurrent ones included); its staleness is read
 * start − the earliest acknowledgement of such a W, else 0. A linearizable
 * store (Redis on one connection per instance) scores 0 by construction.
 * Clocks of the processes are matched by an IPC round-trip estimate
 * (reported as `clockOffsetMs`).
 */
import { Redis } from "ioredis";
import { encodeValue } from "unified-session-bridge/values";
import { type BridgeProcess, startBridgeProcess } from "./support/bridge-process.ts";
import { type ChildWorker, startChild } from "./support/child-processes.ts";
import { clockOffset } from "./support/clock.ts";
import type { ServeCpu } from "./support/process-readings.ts";
import { startRedisServer } from "./support/redis-server.ts";
import { type BenchContext, type BenchResult, formatRate } from "./support/result.ts";
import { median, round } from "./support/stats.ts";
import type {
  StalenessReport,
  WorkloadReport,
  WorkloadRequest,
  WriteLog,
} from "./workers/load-workload.ts";

const variableCount = 100;
const totalTasks = 16;
const writeRatio = 0.05;
/** "Bounded staleness": the watch delivery target (the watch fan-out p99 of watch-fanout.ts). */
const stalenessP99TargetMs = 50;
const names = Array.from({ length: variableCount }, (_, i) => `v${String(i).padStart(3, "0")}`);

type Variant = "context" | "redis";

/** One shape of the workload: how many instances, on which transport and bridge. */
interface Shape {
  readonly name: string;
  readonly processes: number;
  readonly protocol: "grpc" | "connect";
  /** The least ratio to ioredis; null: information. */
  readonly ratioTarget: number | null;
  /** Two bridge replicas on the Redis store instead of the memory-store bridge. */
  readonly replicas?: boolean;
  /** A bridge of its own with this `--compress-min-bytes`. */
  readonly compressMinBytes?: number;
}

/**
 * The shapes run, with the design's targets: the workload through the
 * SessionContext at least 1.5× ioredis with connect-node's gRPC transport,
 * 1.2× with two instances sharing the session, 2× with the Connect protocol
 * (over the same kind of HTTP/2 connection). `ratioTarget: null` marks
 * information:
 * - `2x8-replicas`: two instances on two bridge replicas sharing one session
 *   on the Redis store (its own database of the same redis-server);
 * - `1x16-gzip1k`: the first shape against a bridge that compresses every
 *   reply of 1 KiB and more for clients that accept gzip (connect-es's own
 *   default; connect-node's clients accept it), against the bridge's default
 *   of 64 KiB, so the cost of compressing small replies is seen in one run.
 */
const shapes: readonly Shape[] = [
  { name: "1x16", processes: 1, protocol: "grpc", ratioTarget: 1.5 },
  { name: "2x8", processes: 2, protocol: "grpc", ratioTarget: 1.2 },
  { name: "1x16-connect", processes: 1, protocol: "connect", ratioTarget: 2 },
  { name: "2x8-replicas", processes: 2, protocol: "grpc", ratioTarget: null, replicas: true },
  {
    name: "1x16-gzip1k",
    processes: 1,
    protocol: "grpc",
    ratioTarget: null,
    compressMinBytes: 1024,
  },
];

/** One variant's figures for one round, summed over its processes. */
interface Sample {
  readonly opsPerSecond: number;
  readonly readsPerSecond: number;
  readonly writesPerSecond: number;
  readonly errors: number;
  /** Busiest load process's CPU share. */
  readonly clientCpuShare: number;
  /** Bridge or redis-server CPU time ÷ wall time. */
  readonly serverCpuShare: number;
  readonly writeP50Micros: number;
  readonly writeP99Micros: number;
  readonly readP50Micros: number;
  readonly reads: number;
  /** Non-zero staleness of the round's reads, ms, ascending. */
  readonly stale: number[];
  readonly unknownIds: number;
}

/** Runs the benchmark; see the module comment. */
export async function run(ctx: BenchContext): Promise<BenchResult[]> {
  const rounds = Math.max(3, Math.round(5 * ctx.scale));
  const timing = { warmupMs: 500, durationMs: Math.round(3000 * ctx.scale) };
  const redis = await startRedisServer();
  let server: BridgeProcess | undefined;
  let admin: Redis | undefined;
  const workers: ChildWorker[] = [];
  const extra: BridgeProcess[] = [];
  try {
    server = await startBridgeProcess();
    admin = new Redis({ host: "127.0.0.1", port: redis.port });
    const results: BenchResult[] = [];
    let runId = 0;
    for (const shapeSpec of shapes) {
      const { name: shape, processes, protocol, ratioTarget } = shapeSpec;
      const replicas = shapeSpec.replicas === true;
      const tasks = totalTasks / processes;
      const sessionId = `bench-workload-${shape}`;
      // The bridges the instances use: the memory-store one, two replicas,
      // or one of its own with other options.
      const bridges = replicas
        ? await Promise.all(
            [0, 1].map(() => startBridgeProcess({ redisUrl: `redis://127.0.0.1:${redis.port}/1` })),
          )
        : shapeSpec.compressMinBytes !== undefined
          ? [
              await startBridgeProcess({
                bridgeOptions: { compressMinBytes: shapeSpec.compressMinBytes },
              }),
            ]
          : [server];
      extra.push(...bridges.filter((b) => b !== server));
      await (bridges[0] as BridgeProcess).client.initializeSession({
        sessionId,
        initialVariables: names.map((name) => ({
          name,
          type: "float",
          initialValue: encodeValue("float", 0).any,
        })),
      });
      await admin.flushdb();
      await admin.mset(Object.fromEntries(names.map((n) => [n, "0"])));

      const file = new URL("./workers/load-workload.ts", import.meta.url);
      const started = await Promise.all(
        Array.from({ length: 2 * processes }, () => startChild(file)),
      );
      workers.push(...started);
      const pools: Record<Variant, ChildWorker[]> = {
        context: started.slice(0, processes),
        redis: started.slice(processes),
      };
      for (const [variant, pool] of Object.entries(pools) as [Variant, ChildWorker[]][]) {
        await Promise.all(
          pool.map((w, slot) =>
            w.request({
              type: "setup",
              mode: variant,
              url: (bridges[slot % bridges.length] as BridgeProcess).bridgeUrl,
              protocol,
              sessionId,
              redisPort: redis.port,
              names,
              slot,
            } satisfies WorkloadRequest),
          ),
        );
      }
      const offsets: Record<Variant, number[]> = {
        context: await Promise.all(pools.context.map(clockOffset)),
        redis: await Promise.all(pools.redis.map(clockOffset)),
      };

      const redisAdmin = admin;
      const serverCpu: Record<Variant, () => Promise<number>> = {
        // Every bridge of the shape (and, on replicas, the Redis they share).
        context: async () => {
          let micros = 0;
          for (const b of bridges)
            micros += (await b.worker.request<ServeCpu>({ type: "cpu" })).cpuMicros;
          return replicas ? micros + (await redisCpuMicros(redisAdmin)) : micros;
        },
        redis: async () => redisCpuMicros(redisAdmin),
      };
      const measure = async (variant: Variant, seed: number, t: typeof timing): Promise<Sample> => {
        const pool = pools[variant];
        const id = ++runId;
        const cpuBefore = await serverCpu[variant]();
        const wallStart = performance.now();
        const reports = await Promise.all(
          pool.map((w) =>
            w.request<WorkloadReport>({
              type: "run",
              runId: id,
              tasks,
              writeRatio,
              seed,
              ...t,
            } satisfies WorkloadRequest),
          ),
        );
        const wallMicros = (performance.now() - wallStart) * 1000;
        const cpuAfter = await serverCpu[variant]();
        // Every process's writes, in the runner's clock, then in each reader's.
        const all = mergeWrites(
          reports.map((r, i) => shift(r.writeLog, -(offsets[variant][i] ?? 0))),
        );
        const staleness = await Promise.all(
          pool.map((w, i) =>
            w.request<StalenessReport>({
              type: "staleness",
              writes: shift(all, offsets[variant][i] ?? 0),
            } satisfies WorkloadRequest),
          ),
        );
        const rate = (f: (r: WorkloadReport) => number) =>
          reports.reduce((sum, r) => sum + f(r) / r.seconds, 0);
        return {
          opsPerSecond: rate((r) => r.reads + r.writes),
          readsPerSecond: rate((r) => r.reads),
          writesPerSecond: rate((r) => r.writes),
          errors: reports.reduce((sum, r) => sum + r.errors, 0),
          clientCpuShare: Math.max(...reports.map((r) => r.cpuShare)),
          serverCpuShare: (cpuAfter - cpuBefore) / wallMicros,
          writeP50Micros: median(reports.map((r) => r.writeP50Micros)),
          writeP99Micros: median(reports.map((r) => r.writeP99Micros)),
          readP50Micros: median(reports.map((r) => r.readP50Micros)),
          reads: staleness.reduce((sum, s) => sum + s.reads, 0),
          stale: staleness.flatMap((s) => s.stale).sort((a, b) => a - b),
          unknownIds: staleness.reduce((sum, s) => sum + s.unknownIds, 0),
        };
      };

      ctx.log(`workload: ${shape} warm-up`);
      for (const variant of ["context", "redis"] as const)
        await measure(variant, 0, { warmupMs: 200, durationMs: 800 });
      const samples: Record<Variant, Sample[]> = { context: [], redis: [] };
      for (let r = 0; r < rounds; r++) {
        const order: Variant[] = r % 2 === 0 ? ["context", "redis"] : ["redis", "context"];
        for (const variant of order) {
          ctx.log(`workload: ${shape} round ${r + 1}/${rounds} ${variant}`);
          samples[variant].push(await measure(variant, r + 1, timing));
        }
      }
      await Promise.all(started.map((w) => w.request({ type: "close" }).catch(() => null)));
      await Promise.all(started.map((w) => w.close()));

      const all = rows(shape, samples, {
        processes,
        tasks,
        protocol,
        ratioTarget,
        compressMinBytes: shapeSpec.compressMinBytes,
        rounds,
        ...timing,
        offsets,
      });
      // Informational shapes show the ops row only, but for replicas, whose
      // staleness is the point.
      results.push(...(ratioTarget === null && !replicas ? all.slice(0, 1) : all));
    }
    return results;
  } finally {
    await Promise.all(workers.map((w) => w.close()));
    await admin?.quit().catch(() => admin?.disconnect());
    await Promise.all(extra.map((b) => b.close()));
    await server?.close();
    await redis.stop();
  }
}

function rows(
  shape: string,
  samples: Record<Variant, Sample[]>,
  setup: {
    processes: number;
    tasks: number;
    protocol: string;
    ratioTarget: number | null;
    compressMinBytes: number | undefined;
    rounds: number;
    warmupMs: number;
    durationMs: number;
    offsets: Record<Variant, number[]>;
  },
): BenchResult[] {
  const ours = samples.context;
  const theirs = samples.redis;
  const ratio = median(ours.map((s, i) => s.opsPerSecond / (theirs[i] as Sample).opsPerSecond));
  const ops = (list: Sample[]) => median(list.map((s) => s.opsPerSecond));
  const pick = (f: (s: Sample) => number) => ({
    context: round(median(ours.map(f))),
    redis: round(median(theirs.map(f))),
  });
  const stale = (list: Sample[]) => {
    const reads = list.reduce((sum, s) => sum + s.reads, 0);
    const values = list.flatMap((s) => s.stale).sort((a, b) => a - b);
    return {
      reads,
      staleReads: values.length,
      staleShare: round(values.length / Math.max(1, reads), 3),
      p50Ms: round(percentileWithZeros(values, reads, 50), 3),
      p99Ms: round(percentileWithZeros(values, reads, 99), 3),
      p999Ms: round(percentileWithZeros(values, reads, 99.9), 3),
      maxMs: round(values.at(-1) ?? 0, 3),
      staleOnlyP50Ms: round(percentileWithZeros(values, values.length, 50), 3),
      staleOnlyP99Ms: round(percentileWithZeros(values, values.length, 99), 3),
      perRoundP99Ms: list.map((s) => round(percentileWithZeros(s.stale, s.reads, 99), 3)),
      perRoundMaxMs: list.map((s) => round(s.stale.at(-1) ?? 0, 3)),
      unknownIds: list.reduce((sum, s) => sum + s.unknownIds, 0),
    };
  };
  // Information shapes (no ratio target) get no verdict.
  const { ratioTarget } = setup;
  const staleOurs = stale(ours);
  const staleTheirs = stale(theirs);
  const errors = [...ours, ...theirs].reduce((sum, s) => sum + s.errors, 0);
  const shapeText = `${setup.processes} process${setup.processes > 1 ? "es" : ""} × ${setup.tasks} tasks${setup.protocol === "grpc" ? "" : `, ${setup.protocol}`}${setup.compressMinBytes === undefined ? "" : `, replies gzipped from ${setup.compressMinBytes} B`}`;
  const common = {
    processes: setup.processes,
    tasksPerProcess: setup.tasks,
    variables: variableCount,
    writeRatio,
    ...(setup.compressMinBytes === undefined ? {} : { compressMinBytes: setup.compressMinBytes }),
    clients: `per process: one SessionContext (connect-node ${setup.protocol === "grpc" ? "gRPC" : "Connect"} transport, one HTTP/2 connection, watch on) vs one ioredis client (one connection), shared by its tasks`,
    rounds: setup.rounds,
    warmupMs: setup.warmupMs,
    durationMs: setup.durationMs,
    clockOffsetMs: {
      context: setup.offsets.context.map((o) => round(o, 3)),
      redis: setup.offsets.redis.map((o) => round(o, 3)),
    },
    errors,
  };
  return [
    {
      name: `workload/${shape}/ops`,
      value: round(ratio, 3),
      unit: "× ioredis",
      target: ratioTarget === null ? "info" : `≥ ${ratioTarget}× ioredis`,
      pass: ratioTarget === null ? null : errors === 0 && ratio >= ratioTarget,
      ratio: round(ratio, 3),
      display: `SessionContext ${formatRate(ops(ours), " ops/s")} vs ioredis ${formatRate(ops(theirs), " ops/s")} (${shapeText})`,
      details: {
        ...common,
        opsPerSecond: pick((s) => s.opsPerSecond),
        readsPerSecond: pick((s) => s.readsPerSecond),
        writesPerSecond: pick((s) => s.writesPerSecond),
        readP50Micros: pick((s) => s.readP50Micros),
        writeP50Micros: pick((s) => s.writeP50Micros),
        writeP99Micros: pick((s) => s.writeP99Micros),
        clientCpuShare: pick((s) => s.clientCpuShare),
        serverCpuShare: pick((s) => s.serverCpuShare),
        perRoundOpsPerSecond: {
          context: ours.map((s) => round(s.opsPerSecond)),
          redis: theirs.map((s) => round(s.opsPerSecond)),
        },
        perRoundRatio: ours.map((s, i) =>
          round(s.opsPerSecond / (theirs[i] as Sample).opsPerSecond, 3),
        ),
      },
    },
    {
      name: `workload/${shape}/staleness`,
      value: staleOurs.p99Ms,
      unit: "ms",
      target: ratioTarget === null ? "info" : `p99 ≤ ${stalenessP99TargetMs} ms`,
      pass:
        ratioTarget === null
          ? null
          : staleOurs.unknownIds === 0 && staleOurs.p99Ms <= stalenessP99TargetMs,
      ratio: round(staleOurs.p99Ms / stalenessP99TargetMs, 3),
      display: `SessionContext p99 ${staleOurs.p99Ms.toFixed(2)} ms, max ${staleOurs.maxMs.toFixed(1)} ms, ${(staleOurs.staleShare * 100).toFixed(2)}% of reads stale; ioredis p99 ${staleTheirs.p99Ms.toFixed(2)} ms, max ${staleTheirs.maxMs.toFixed(1)} ms`,
      details: {
        ...common,
        definition:
          "read start − earliest ack of a write to the same variable that was acked before the read started and issued after the seen write was acked; 0 if none",
        context: staleOurs,
        redis: staleTheirs,
      },
    },
  ];
}

/** The p-th percentile of `total` values of which all but `nonZero` (ascending) are 0. */
function percentileWithZeros(nonZero: readonly number[], total: number, p: number): number {
  if (total === 0) return Number.NaN;
  const zeros = total - nonZero.length;
  const at = (k: number) => (k < zeros ? 0 : (nonZero[k - zeros] as number));
  const rank = (p / 100) * (total - 1);
  const lo = Math.floor(rank);
  return at(lo) + (at(Math.ceil(rank)) - at(lo)) * (rank - lo);
}

function shift(log: WriteLog, byMs: number): WriteLog {
  return {
    variable: log.variable,
    id: log.id,
    issued: log.issued.map((t) => t + byMs),
    acked: log.acked.map((t) => t + byMs),
  };
}

function mergeWrites(logs: readonly WriteLog[]): WriteLog {
  return {
    variable: logs.flatMap((l) => l.variable),
    id: logs.flatMap((l) => l.id),
    issued: logs.flatMap((l) => l.issued),
    acked: logs.flatMap((l) => l.acked),
  };
}

/** redis-server's CPU time (all threads) so far, µs. */
async function redisCpuMicros(client: Redis): Promise<number> {
  const info = await client.info("cpu");
  const field = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, "m").exec(info)?.[1]);
  return (field("used_cpu_sys") + field("used_cpu_user")) * 1e6;
}
