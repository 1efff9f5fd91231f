/**
 * The read-heavy workload of `bench/workload.ts`, as one application
 * instance runs it: `tasks` concurrent tasks sharing ONE client, either a
 * SessionContext (watch on, its defaults otherwise) on a bridge in another
 * process, or an ioredis client on a Redis server. Each task loops: pick one
 * of the variables uniformly, write it with probability `writeRatio`, else
 * read it; the next operation starts as soon as the previous one returns.
 * Both modes run the very same loop; only the two calls differ.
 *
 * For staleness, every write stores a unique write id (a float for the
 * bridge, its decimal string for Redis) and logs when it was issued and
 * when it was acknowledged; every measured read logs when it started and
 * the id it saw. Reads are checked afterwards against the writes of every
 * process (see {@link StalenessRequest}), so times are epoch ms from
 * `performance.timeOrigin + performance.now()`, which the runner corrects
 * for each process's clock offset.
 */
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { Redis } from "ioredis";
import { createSessionContext, type SessionContext } from "unified-session-bridge";
import { serveRequests } from "../support/child-processes.ts";
import { percentile } from "../support/stats.ts";

/** Requests this worker answers. */
export type WorkloadRequest =
  | {
      readonly type: "setup";
      readonly mode: "context" | "redis";
      /** Bridge base URL (context mode). */
      readonly url?: string;
      /** RPC protocol of the context's transport (default gRPC), both over one HTTP/2 connection. */
      readonly protocol?: "grpc" | "connect";
      readonly sessionId?: string;
      /** Redis port (redis mode); keys are the variable names. */
      readonly redisPort?: number;
      readonly names: readonly string[];
      /** This process's number among the load processes (0–15), part of every write id. */
      readonly slot: number;
    }
  | {
      readonly type: "run";
      /** Distinct per run (1, 2, …), part of every write id. */
      readonly runId: number;
      readonly tasks: number;
      readonly writeRatio: number;
      readonly seed: number;
      readonly warmupMs: number;
      readonly durationMs: number;
    }
  | StalenessRequest
  | { readonly type: "clock" }
  | { readonly type: "close" };

/** Every write of one run, of every process, in this process's clock. */
export interface StalenessRequest {
  readonly type: "staleness";
  readonly writes: WriteLog;
}

/** Writes as parallel arrays. */
export interface WriteLog {
  readonly variable: number[];
  readonly id: number[];
  /** When the write was issued / acknowledged, epoch ms. */
  readonly issued: number[];
  readonly acked: number[];
}

/** Reply to `run`. */
export interface WorkloadReport {
  /** Operations completed inside the measuring window. */
  readonly reads: number;
  readonly writes: number;
  readonly seconds: number;
  readonly errors: number;
  readonly firstError?: string;
  /** This process's CPU time ÷ wall time over the run (1 = one core busy). */
  readonly cpuShare: number;
  /** Latency of the window's reads and writes, µs. */
  readonly readP50Micros: number;
  readonly readP99Micros: number;
  readonly writeP50Micros: number;
  readonly writeP99Micros: number;
  /** Every write of the run, warm-up and drain included. */
  readonly writeLog: WriteLog;
}

/**
 * Reply to `staleness`: how stale each measured read was, in ms (see
 * `bench/workload.ts` for the definition), only the non-zero ones listed.
 */
export interface StalenessReport {
  readonly reads: number;
  readonly stale: number[];
  /** Reads that saw an id of this run that no process reported writing (must be 0). */
  readonly unknownIds: number;
}

interface Client {
  read(variable: number): Promise<number>;
  write(variable: number, id: number): Promise<unknown>;
  close(): Promise<void>;
}

const origin = performance.timeOrigin;

let client: Client | undefined;
let slot = 0;
let variableCount = 0;
let currentRun = 0;
let reads: ReadLog | undefined;

/**
 * A write id: unique over processes (slot) and runs, exact as a float.
 * 0 is the initial value of every variable.
 */
const writeId = (runId: number, seq: number) => (runId * 2 ** 24 + seq) * 16 + slot;
const runOf = (id: number) => Math.floor(id / 16 / 2 ** 24);

/** Measured reads as growable typed arrays: the log must cost little per read. */
class ReadLog {
  length = 0;
  variable = new Uint16Array(1 << 16);
  started = new Float64Array(1 << 16);
  seen = new Float64Array(1 << 16);

  push(variable: number, started: number, seen: number): void {
    if (this.length === this.variable.length) {
      const grow = <T extends Uint16Array | Float64Array>(a: T, make: (n: number) => T) => {
        const b = make(a.length * 2);
        b.set(a);
        return b;
      };
      this.variable = grow(this.variable, (n) => new Uint16Array(n));
      this.started = grow(this.started, (n) => new Float64Array(n));
      this.seen = grow(this.seen, (n) => new Float64Array(n));
    }
    this.variable[this.length] = variable;
    this.started[this.length] = started;
    this.seen[this.length] = seen;
    this.length++;
  }
}

async function setup(req: Extract<WorkloadRequest, { type: "setup" }>): Promise<number> {
  slot = req.slot;
  const names = req.names;
  variableCount = names.length;
  if (req.mode === "context") {
    if (req.url === undefined || req.sessionId === undefined)
      throw new Error("url and sessionId are required");
    const transport =
      req.protocol === "connect"
        ? createConnectTransport({ baseUrl: req.url, httpVersion: "2" })
        : createGrpcTransport({ baseUrl: req.url });
    const ctx: SessionContext = await createSessionContext({
      transport,
      sessionId: req.sessionId,
    });
    const deadline = performance.now() + 5000;
    while (!ctx.cache.live) {
      if (performance.now() > deadline) throw new Error("the watch stream never went live");
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    // What an application does at start: one batch read of what it uses.
    await ctx.getMany(names);
    client = {
      read: async (v) => (await ctx.get(names[v] as string)) as number,
      write: (v, id) => ctx.set(names[v] as string, id),
      close: () => ctx.close(),
    };
  } else {
    if (req.redisPort === undefined) throw new Error("redisPort is required");
    const redis = new Redis({ host: "127.0.0.1", port: req.redisPort, maxRetriesPerRequest: 1 });
    await redis.ping();
    client = {
      read: async (v) => Number(await redis.get(names[v] as string)),
      write: (v, id) => redis.set(names[v] as string, String(id)),
      close: async () => {
        await redis.quit().catch(() => redis.disconnect());
      },
    };
  }
  return names.length;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function run(req: Extract<WorkloadRequest, { type: "run" }>): Promise<WorkloadReport> {
  const c = client;
  if (c === undefined) throw new Error("setup first");
  currentRun = req.runId;
  let seq = 0;
  const log = new ReadLog();
  const writeLog: WriteLog = { variable: [], id: [], issued: [], acked: [] };
  const readLatencies: number[] = [];
  const writeLatencies: number[] = [];
  // 0: warming up, 1: measuring, 2: draining.
  let phase = 0;
  let readCount = 0;
  let writeCount = 0;
  let errors = 0;
  let firstError: string | undefined;
  const threshold = Math.round(req.writeRatio * 2 ** 32);

  const task = async (index: number) => {
    // xorshift32, seeded per task: the same operation sequence in both modes.
    let x = (req.seed * 7919 + index * 104_729 + slot * 15_485_863) | 0 || 1;
    const next = () => {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      return x >>> 0;
    };
    while (phase !== 2) {
      const variable = next() % variableCount;
      const isWrite = next() < threshold;
      try {
        if (isWrite) {
          const id = writeId(req.runId, ++seq);
          const issued = performance.now();
          await c.write(variable, id);
          const acked = performance.now();
          writeLog.variable.push(variable);
          writeLog.id.push(id);
          writeLog.issued.push(origin + issued);
          writeLog.acked.push(origin + acked);
          if (phase === 1) {
            writeCount++;
            writeLatencies.push(acked - issued);
          }
        } else {
          const started = performance.now();
          const seen = await c.read(variable);
          if (phase === 1) {
            const done = performance.now();
            readCount++;
            log.push(variable, origin + started, seen);
            // Every 16th: enough for percentiles, little cost per read.
            if ((readCount & 15) === 0) readLatencies.push(done - started);
          }
        }
      } catch (error) {
        errors++;
        firstError ??= String(error);
        // A broken setup should fail the run, not spin on errors.
        if (errors > 100) phase = 2;
      }
    }
  };

  const cpuStart = process.cpuUsage();
  const wallStart = performance.now();
  const tasks = Array.from({ length: req.tasks }, (_, i) => task(i));
  await sleep(req.warmupMs);
  if (phase === 0) phase = 1;
  const start = performance.now();
  await sleep(req.durationMs);
  const seconds = (performance.now() - start) / 1000;
  phase = 2;
  await Promise.all(tasks);
  const cpu = process.cpuUsage(cpuStart);
  if (errors > 100) throw new Error(`more than 100 errors, first: ${firstError}`);
  reads = log;
  const us = (list: number[], p: number) => percentile(list, p) * 1000;
  return {
    reads: readCount,
    writes: writeCount,
    seconds,
    errors,
    ...(firstError === undefined ? {} : { firstError }),
    cpuShare: (cpu.user + cpu.system) / 1000 / (performance.now() - wallStart),
    readP50Micros: us(readLatencies, 50),
    readP99Micros: us(readLatencies, 99),
    writeP50Micros: us(writeLatencies, 50),
    writeP99Micros: us(writeLatencies, 99),
    writeLog,
  };
}

/**
 * For each measured read: if a write to the same variable was acknowledged
 * before the read started and was issued after the write the read saw had
 * been acknowledged (so it certainly came later, whatever the order of
 * concurrent writes), the read was stale by read start − the earliest such
 * acknowledgement. Otherwise 0.
 */
function staleness(writes: WriteLog): StalenessReport {
  const log = reads;
  if (log === undefined) throw new Error("run first");
  // Per variable, this run's writes in acknowledgement order.
  const byVariable = new Map<number, { acked: number[]; issued: number[] }>();
  const ackOf = new Map<number, number>();
  const order = writes.id
    .map((_, i) => i)
    .sort((a, b) => (writes.acked[a] as number) - (writes.acked[b] as number));
  for (const i of order) {
    const v = writes.variable[i] as number;
    let list = byVariable.get(v);
    if (list === undefined) {
      list = { acked: [], issued: [] };
      byVariable.set(v, list);
    }
    list.acked.push(writes.acked[i] as number);
    list.issued.push(writes.issued[i] as number);
    ackOf.set(writes.id[i] as number, writes.acked[i] as number);
  }
  const stale: number[] = [];
  let unknownIds = 0;
  for (let r = 0; r < log.length; r++) {
    const list = byVariable.get(log.variable[r] as number);
    if (list === undefined) continue;
    const started = log.started[r] as number;
    const seen = log.seen[r] as number;
    let seenAcked = ackOf.get(seen);
    if (seenAcked === undefined) {
      // The initial value and ids of earlier runs predate every write of this run.
      if (runOf(seen) >= currentRun) unknownIds++;
      seenAcked = Number.NEGATIVE_INFINITY;
    }
    // First write acknowledged after the seen one: earlier ones cannot be later writes.
    let lo = 0;
    let hi = list.acked.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((list.acked[mid] as number) <= seenAcked) lo = mid + 1;
      else hi = mid;
    }
    for (let j = lo; j < list.acked.length && (list.acked[j] as number) < started; j++) {
      if ((list.issued[j] as number) > seenAcked) {
        stale.push(started - (list.acked[j] as number));
        break;
      }
    }
  }
  reads = undefined;
  return { reads: log.length, stale, unknownIds };
}

serveRequests(
  async (raw) => {
    const req = raw as WorkloadRequest;
    switch (req.type) {
      case "setup":
        return setup(req);
      case "run":
        return run(req);
      case "staleness":
        return staleness(req.writes);
      case "clock":
        return origin + performance.now();
      case "close": {
        const c = client;
        client = undefined;
        await c?.close();
        return null;
      }
    }
  },
  async () => {
    await client?.close();
  },
);
