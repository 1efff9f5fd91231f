/**
 * One place of the Python worker pool and the processes that fill it in
 * turn: started, waited for until ready, its tools discovered, checked by
 * Ping, and restarted with exponential backoff when it exits or stops
 * answering, up to a bounded number of times in a row, then reported failed.
 */
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport, type Http2SessionManager } from "@connectrpc/connect-node";
import { BridgeService, type ToolRegistration } from "../../gen/snakepit/bridge/bridge_pb.js";
import { delay, type ServerTimers, type TimerHandle } from "../common/timers.js";
import { workerSessionManager } from "../edge/edge-compat.js";
import type { Logger } from "../observability/logger.js";
import type { OrphanGuard } from "./orphan-guard.js";
import {
  describeExit,
  startWorkerProcess,
  type WorkerExit,
  type WorkerProcess,
} from "./worker-process.js";

/** Where a pool worker is in its life. */
export type PoolWorkerState =
  | "starting"
  | "ready"
  | "restarting"
  | "failed"
  | "stopping"
  | "stopped";

/** Every state, for metrics that list each (0 included). */
export const poolWorkerStates: readonly PoolWorkerState[] = [
  "starting",
  "ready",
  "restarting",
  "failed",
  "stopping",
  "stopped",
];

/** Settings shared by the workers of a pool. */
export interface PoolWorkerSettings {
  readonly command: readonly string[];
  /** Ping period; three missed in a row restart the worker. */
  readonly healthIntervalMs: number;
  /** How long a start may take until the worker answers Ping. */
  readonly readyTimeoutMs: number;
  /** Restarts in a row (without a minute of service between) before the worker is reported failed. */
  readonly maxRestarts: number;
  /** First restart delay; doubled each time in a row, at most 30 s. */
  readonly restartBackoffMs: number;
  /** SIGTERM to SIGKILL when stopping. */
  readonly stopGraceMs: number;
  /** Largest reply read from a worker. */
  readonly readMaxBytes: number;
  readonly maxLinesPerSecond: number;
  /** Deadlines, health checks, restart backoff. */
  readonly timers: ServerTimers;
  /** Where ready files go (a directory of the bridge's own). */
  readonly runDir: string;
  readonly runId: string;
  readonly env: Readonly<Record<string, string>>;
  readonly cwd?: string;
}

/** Hooks the pool gives each of its workers. */
export interface PoolWorkerHooks {
  /** The worker serves (again); `tools` are the ones it registered while discovered. */
  ready(worker: PoolWorker): void;
  /** The worker stopped serving (exited, or is being restarted or stopped). */
  down(worker: PoolWorker, why: string): void;
  /** It is being restarted. */
  restarted(worker: PoolWorker): void;
}

/** A worker as `GET /workers` shows it. */
export interface PoolWorkerInfo {
  readonly kind: "pool";
  readonly id: string;
  readonly pid: number | null;
  readonly address: string | null;
  readonly state: PoolWorkerState;
  readonly tools: readonly string[];
  readonly restarts: number;
  readonly lastError: string | null;
  readonly inFlight: number;
  readonly sessions: number;
  readonly readySince: string | null;
}

/** The tool name discovery calls: no adapter has it, so calling it runs nothing. */
export const DISCOVERY_TOOL = "__unified_bridge_discover__";

/** A run that served this long resets the count of restarts in a row. */
const STABLE_MS = 60_000;
const MAX_BACKOFF_MS = 30_000;
const MISSED_PINGS = 3;

/** One place of the pool; see the module comment. */
export interface PoolWorker {
  /** 1-based, as logs and `/workers` name it. */
  readonly number: number;
  readonly state: PoolWorkerState;
  /** Counts runs: a session's worker state belongs to one run. */
  readonly generation: number;
  /** The current run's client (only while ready). */
  readonly client: Client<typeof BridgeService> | undefined;
  /** Aborted when the current run ends. */
  readonly gone: AbortSignal;
  /** Why the last run ended, for the calls it cut short. */
  readonly goneReason: string;
  /** The session id the bridge uses for this run's discovery and heartbeats. */
  readonly ownSession: string;
  /** The tools the current run registered during discovery. */
  readonly discovered: readonly ToolRegistration[];
  inFlight: number;
  sessions: number;
  /** Records the tools a run registered under its own session. */
  noteDiscovered(tools: readonly ToolRegistration[]): void;
  start(bridgeAddress: string): void;
  stop(): Promise<void>;
  info(): PoolWorkerInfo;
}

/** Creates worker `number` of a pool (not started). */
export function createPoolWorker(
  number: number,
  settings: PoolWorkerSettings,
  hooks: PoolWorkerHooks,
  guard: OrphanGuard,
  baseLogger: Logger,
): PoolWorker {
  const logger = baseLogger.child({ worker: number });
  let state: PoolWorkerState = "stopped";
  let generation = 0;
  let proc: WorkerProcess | undefined;
  let port: number | undefined;
  let manager: Http2SessionManager | undefined;
  let client: Client<typeof BridgeService> | undefined;
  let gone = new AbortController();
  let goneReason = "";
  let ownSession = "";
  let discovered: readonly ToolRegistration[] = [];
  let restarts = 0;
  let inARow = 0;
  let lastError: string | null = null;
  let readyAt: number | undefined;
  let bridgeAddress = "";
  const { timers } = settings;
  let restartTimer: TimerHandle | undefined;
  let healthTimer: TimerHandle | undefined;
  let stopping = false;

  const setState = (next: PoolWorkerState) => {
    state = next;
  };

  const closeClient = () => {
    manager?.abort();
    manager = undefined;
    client = undefined;
  };

  const run = () => {
    generation++;
    const thisRun = generation;
    gone = new AbortController();
    ownSession = `ubpool${number}_${randomBytes(12).toString("base64url")}`;
    discovered = [];
    port = undefined;
    readyAt = undefined;
    setState("starting");
    const started = startWorkerProcess({
      command: settings.command,
      bridgeAddress,
      runId: settings.runId,
      readyFile: join(settings.runDir, `worker-${number}-${thisRun}.ready`),
      env: settings.env,
      ...(settings.cwd === undefined ? {} : { cwd: settings.cwd }),
      maxLinesPerSecond: settings.maxLinesPerSecond,
      logger,
      timers,
    });
    proc = started;
    const pid = started.pid;
    if (pid !== undefined) guard.add(pid);
    logger.info(`Python worker ${number} started (pid ${pid ?? "?"})`, { pid });
    const readyTimer = timers.setTimeout(() => {
      if (generation !== thisRun || state !== "starting") return;
      lastError = `not ready within ${settings.readyTimeoutMs} ms`;
      logger.warn(
        `Python worker ${number} was not ready within ${settings.readyTimeoutMs} ms; killing it`,
      );
      started.kill("SIGKILL");
    }, settings.readyTimeoutMs);
    readyTimer.unref();
    started.ready.then(
      (p) => void becomeReady(thisRun, p).finally(() => timers.clearTimeout(readyTimer)),
      () => timers.clearTimeout(readyTimer),
    );
    void started.exited.then((exit) => onExit(thisRun, pid, exit));
  };

  /** Connects, then discovers the tools; ready once the worker answered. */
  const becomeReady = async (thisRun: number, p: number) => {
    if (generation !== thisRun || state !== "starting") return;
    port = p;
    manager = workerSessionManager(`http://127.0.0.1:${p}`, {
      idleConnectionTimeoutMs: 5 * 60_000,
    });
    client = createClient(
      BridgeService,
      createGrpcTransport({
        baseUrl: `http://127.0.0.1:${p}`,
        sessionManager: manager,
        readMaxBytes: settings.readMaxBytes,
      }),
    );
    const signal = gone.signal;
    try {
      // The ready signal can come just before the port accepts: retried
      // like snakepit's host does, within the ready timeout.
      for (let attempt = 0; ; attempt++) {
        try {
          await client.ping({ message: "unified-bridge" }, { signal, timeoutMs: 2000 });
          break;
        } catch (e) {
          if (signal.aborted || attempt >= 20) throw e;
          await delay(timers, Math.min(50 * 2 ** attempt, 500));
        }
      }
      // v0.13 starts its heartbeat to the bridge for a session it has seen;
      // this session is the worker's own, so the heartbeat runs from now on.
      await client
        .initializeSession({ sessionId: ownSession }, { signal, timeoutMs: 10_000 })
        .catch((e: unknown) => {
          logger.debug("InitializeSession on the worker failed", {
            error: ConnectError.from(e).rawMessage,
          });
        });
      // Calling a tool no adapter has makes the worker register its tools
      // (RegisterTools, under this session) before it answers "not found".
      await client
        .executeTool(
          { sessionId: ownSession, toolName: DISCOVERY_TOOL },
          { signal, timeoutMs: 30_000 },
        )
        .catch((e: unknown) => {
          logger.debug("tool discovery call failed", { error: ConnectError.from(e).rawMessage });
        });
    } catch (e) {
      if (generation !== thisRun || signal.aborted) return;
      lastError = `did not answer Ping: ${ConnectError.from(e).rawMessage}`;
      logger.warn(`Python worker ${number} did not answer Ping after its ready signal; killing it`);
      proc?.kill("SIGKILL");
      return;
    }
    if (generation !== thisRun || state !== "starting") return;
    readyAt = timers.now();
    setState("ready");
    logger.info(
      `Python worker ${number} ready on 127.0.0.1:${p} (pid ${proc?.pid ?? "?"}, ${discovered.length} tools registered)`,
      { pid: proc?.pid, port: p },
    );
    startHealthChecks(thisRun);
    hooks.ready(worker);
  };

  const startHealthChecks = (thisRun: number) => {
    timers.clearInterval(healthTimer);
    let missed = 0;
    let busy = false;
    healthTimer = timers.setInterval(() => {
      if (busy || generation !== thisRun || state !== "ready" || client === undefined) return;
      // A worker running calls is judged by their deadlines, not by Ping:
      // v0.4.3 runs a sync tool on its event loop, and a long fit can hold
      // Python's GIL, so a busy worker may not answer Ping in time.
      if (worker.inFlight > 0) {
        missed = 0;
        return;
      }
      busy = true;
      client
        .ping(
          { message: "health" },
          { signal: gone.signal, timeoutMs: Math.max(2000, settings.healthIntervalMs) },
        )
        .then(
          () => {
            missed = 0;
          },
          (e: unknown) => {
            if (generation !== thisRun || state !== "ready" || worker.inFlight > 0) return;
            missed++;
            lastError = `health check failed: ${ConnectError.from(e).rawMessage}`;
            if (missed >= MISSED_PINGS) {
              logger.warn(
                `Python worker ${number} stopped answering health checks (${missed} missed); killing it`,
              );
              proc?.kill("SIGKILL");
            }
          },
        )
        .finally(() => {
          busy = false;
        });
    }, settings.healthIntervalMs);
    healthTimer.unref();
  };

  const onExit = (thisRun: number, pid: number | undefined, exit: WorkerExit) => {
    if (pid !== undefined) guard.remove(pid);
    if (generation !== thisRun) return;
    timers.clearInterval(healthTimer);
    const how = describeExit(exit);
    goneReason = `exited (${how})`;
    gone.abort(new ConnectError(goneReason, Code.Unavailable));
    closeClient();
    proc = undefined;
    port = undefined;
    const wasReady = readyAt !== undefined;
    hooks.down(worker, goneReason);
    if (stopping) {
      setState("stopped");
      logger.info(`Python worker ${number} exited (${how})`);
      return;
    }
    lastError = exit.error === undefined ? `exited (${how})` : how;
    if (wasReady && timers.now() - (readyAt ?? 0) >= STABLE_MS) inARow = 0;
    inARow++;
    if (inARow > settings.maxRestarts) {
      setState("failed");
      logger.error(
        `Python worker ${number} exited (${how}); not restarting: it failed ${inARow} times in a row (--worker-max-restarts ${settings.maxRestarts})`,
      );
      return;
    }
    const backoffMs = Math.min(settings.restartBackoffMs * 2 ** (inARow - 1), MAX_BACKOFF_MS);
    setState("restarting");
    logger.warn(`Python worker ${number} exited (${how}); restarting in ${seconds(backoffMs)} s`);
    restartTimer = timers.setTimeout(() => {
      restartTimer = undefined;
      if (stopping) return;
      restarts++;
      hooks.restarted(worker);
      run();
    }, backoffMs);
    restartTimer.unref();
  };

  const worker: PoolWorker = {
    number,
    get state() {
      return state;
    },
    get generation() {
      return generation;
    },
    get client() {
      return state === "ready" ? client : undefined;
    },
    get gone() {
      return gone.signal;
    },
    get goneReason() {
      return goneReason;
    },
    get ownSession() {
      return ownSession;
    },
    get discovered() {
      return discovered;
    },
    inFlight: 0,
    sessions: 0,
    noteDiscovered(tools) {
      discovered = tools;
    },
    start(address) {
      bridgeAddress = address;
      stopping = false;
      run();
    },
    async stop() {
      stopping = true;
      timers.clearTimeout(restartTimer);
      timers.clearInterval(healthTimer);
      const current = proc;
      if (current === undefined) {
        if (state !== "failed") setState("stopped");
        return;
      }
      if (state === "ready") hooks.down(worker, "stopping");
      setState("stopping");
      current.kill("SIGTERM");
      const killTimer = timers.setTimeout(() => {
        logger.warn(
          `Python worker ${number} did not stop within ${settings.stopGraceMs} ms; killing it`,
        );
        current.kill("SIGKILL");
      }, settings.stopGraceMs);
      await current.exited;
      timers.clearTimeout(killTimer);
    },
    info() {
      return {
        kind: "pool",
        id: `pool-${number}`,
        pid: proc?.pid ?? null,
        address: port === undefined ? null : `127.0.0.1:${port}`,
        state,
        tools: discovered.map((t) => t.name),
        restarts,
        lastError,
        inFlight: worker.inFlight,
        sessions: worker.sessions,
        readySince: readyAt === undefined ? null : new Date(readyAt).toISOString(),
      };
    },
  };
  return worker;
}

function seconds(ms: number): string {
  return String(Math.round(ms / 100) / 10);
}
