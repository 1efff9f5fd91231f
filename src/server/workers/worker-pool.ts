/**
 * The bridge as a host of stock snakepit Python workers, the way snakepit's
 * Elixir host is one: N processes of the operator's worker command, each
 * supervised by a {@link PoolWorker}; their tools registered in the bridge's
 * registry while any worker is ready (as local tools: reserved, no worker
 * can register over them); calls routed with session affinity.
 *
 * Affinity: a session's calls go to the worker that served its first call
 * for as long as that run lives, since the adapter may keep per-session
 * state in the process. Other sessions go to the ready worker with the
 * fewest calls in flight. When a session's worker dies, its calls in flight
 * fail with UNAVAILABLE at once, and the session's next call fails once
 * with FAILED_PRECONDITION saying the worker-side state was lost; the call
 * after that runs on another worker.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import type {
  RegisterToolsRequest,
  ToolChunk,
  ToolRegistration,
} from "../../gen/snakepit/bridge/bridge_pb.js";
import { convertJsonAny } from "../../values/json-any.js";
import { clip, quote } from "../common/message-text.js";
import { delay, type ServerTimers, systemTimers } from "../common/timers.js";
import type { Logger } from "../observability/logger.js";
import type { ToolParameter } from "../tools/tool-definition.js";
import type { ToolRegistry } from "../tools/tool-registry.js";
import {
  finalChunk,
  type PoolToolRunner,
  type RunOutcome,
  type ToolCall,
  type ToolFinish,
} from "../tools/tool-run.js";
import { parameterTypeFromWire } from "../tools/tool-wire.js";
import { createOrphanGuard, type OrphanGuard } from "./orphan-guard.js";
import {
  createPoolWorker,
  type PoolWorker,
  type PoolWorkerInfo,
  type PoolWorkerSettings,
  type PoolWorkerState,
  poolWorkerStates,
} from "./pool-worker.js";

/** The Python worker pool of a bridge, as `createBridgeServer({ workers })` configures it. */
export interface WorkerPoolConfig {
  /** Program and arguments, e.g. `["python3", "grpc_server.py", "--adapter", "my.Adapter"]`. */
  readonly command: readonly string[];
  /** Processes to run (default 1). */
  readonly count?: number;
  /**
   * Tools the adapter serves without registering them (snakepit's showcase
   * serves `ping`, `add`, … through `execute_tool` only): listed and routed
   * like the tools the workers register.
   */
  readonly tools?: readonly string[];
  /** Ping period in ms (default 2000); three missed in a row restart a worker. */
  readonly healthIntervalMs?: number;
  /** How long a worker may take to be ready, in ms (default 30,000). */
  readonly readyTimeoutMs?: number;
  /** Restarts in a row before a worker is reported failed (default 5). */
  readonly maxRestarts?: number;
  /** First restart delay in ms (default 500), doubled each time in a row up to 30 s. */
  readonly restartBackoffMs?: number;
  /** SIGTERM to SIGKILL on stop, in ms (default 5000). */
  readonly stopGraceMs?: number;
  /** Working directory of the workers (default: the bridge's). */
  readonly cwd?: string;
  /** Added to the workers' environment. */
  readonly env?: Readonly<Record<string, string>>;
}

/** What the pool needs from the bridge. */
export interface WorkerPoolOptions {
  readonly tools: ToolRegistry;
  readonly logger: Logger;
  /** How long a call may take (the bridge's remote tool timeout). */
  readonly callTimeoutMs: number;
  readonly readMaxBytes: number;
  /** Told of each restart, by worker id (for the restarts counter). */
  readonly onRestart?: (workerId: string) => void;
  /** Told when a worker is ready, with its worker id and gRPC address (host:port). */
  readonly onReady?: (workerId: string, address: string) => void;
  /** Told when a ready worker goes (exits, is stopped or stops answering). */
  readonly onDown?: (workerId: string) => void;
  /**
   * Runs the workers' ready and stop deadlines, health checks and restart
   * backoff (default: Node's timers).
   */
  readonly timers?: ServerTimers;
}

/** A running pool. */
export interface WorkerPool {
  /** Starts the workers; `bridgeAddress` is the worker listener's host:port. */
  start(bridgeAddress: string): void;
  /** Stops every worker (SIGTERM, then SIGKILL after the grace). */
  stop(): Promise<void>;
  /**
   * A RegisterTools call from one of the pool's workers (no worker_address;
   * a session the pool routed to it): accepted, its tool ids returned.
   * Undefined for any other registration.
   */
  claimRegistration(req: RegisterToolsRequest): Record<string, string> | undefined;
  /**
   * Whether a worker's Heartbeat for this session is the pool's to answer:
   * answered as valid without refreshing the session, so a worker's
   * heartbeats never keep a session alive that its clients left.
   */
  answersHeartbeat(sessionId: string): boolean;
  /** A session ended: its affinity goes, and its worker is told. */
  sessionEnded(sessionId: string): void;
  /** Every worker, for `GET /workers`. */
  list(): PoolWorkerInfo[];
  /** Workers per state (every state listed). */
  countByState(): Record<PoolWorkerState, number>;
}

interface Affinity {
  readonly worker: PoolWorker;
  readonly generation: number;
}

/** Creates a pool (not started). */
export function createWorkerPool(config: WorkerPoolConfig, options: WorkerPoolOptions): WorkerPool {
  const { tools, logger } = options;
  const timers = options.timers ?? systemTimers;
  if (config.command.length === 0 || config.command[0] === "") {
    throw new Error("the worker command is empty: give the program and its arguments");
  }
  const count = config.count ?? 1;
  const healthIntervalMs = config.healthIntervalMs ?? 2000;
  // Ready files live in a directory of this bridge's own.
  const runDir = mkdtempSync(join(tmpdir(), "ub-workers-"));
  const runId = runDir.slice(runDir.lastIndexOf("-") + 1);
  const settings: PoolWorkerSettings = {
    command: config.command,
    healthIntervalMs,
    readyTimeoutMs: config.readyTimeoutMs ?? 30_000,
    maxRestarts: config.maxRestarts ?? 5,
    restartBackoffMs: config.restartBackoffMs ?? 500,
    stopGraceMs: config.stopGraceMs ?? 5000,
    readMaxBytes: options.readMaxBytes,
    maxLinesPerSecond: 50,
    timers,
    runDir,
    runId,
    env: {
      // v0.13 workers: heartbeats to the bridge, exiting when it is gone.
      SNAKEPIT_HEARTBEAT_CONFIG: JSON.stringify({
        enabled: true,
        dependent: true,
        interval_ms: healthIntervalMs,
        timeout_ms: Math.max(1000, healthIntervalMs),
        max_missed_heartbeats: 3,
      }),
      PYTHONUNBUFFERED: "1",
      ...config.env,
    },
    ...(config.cwd === undefined ? {} : { cwd: config.cwd }),
  };

  let guard: OrphanGuard | undefined;
  const affinity = new Map<string, Affinity>();
  /** The tools of the pool as registered now, by name. */
  const registered = new Set<string>();
  const declared = [...new Set(config.tools ?? [])];

  const runner: PoolToolRunner = {
    execute: (call, signal) => execute(call, signal),
    stream: (call, signal, finish) => stream(call, signal, finish),
  };

  /** Registers the pool's tools (those of the first ready worker) while any worker serves. */
  const syncTools = () => {
    const source = workers.find((w) => w.state === "ready");
    if (source === undefined) {
      for (const name of registered) tools.unregisterLocal(name);
      registered.clear();
      return;
    }
    if (registered.size > 0) return;
    const specs = new Map<string, ToolRegistration | undefined>();
    // BaseAdapter lists `execute_tool` itself as a "legacy" tool: it is the
    // dispatcher, not a tool.
    for (const t of source.discovered) {
      if (t.name !== "" && t.name !== "execute_tool") specs.set(t.name, t);
    }
    for (const name of declared) if (!specs.has(name)) specs.set(name, undefined);
    for (const [name, spec] of specs) {
      const held = tools.lookup("", name);
      if (held !== undefined && held.owner === "local" && held.target.kind !== "pool") {
        logger.warn(
          `the Python workers' tool ${quote(name)} is not listed: a tool of the bridge has that name`,
        );
        continue;
      }
      try {
        tools.registerLocal({
          name,
          description:
            spec?.description ??
            "A tool of the bridge's Python workers (declared with --worker-tool).",
          parameters: (spec?.parameters ?? []).map(
            (p): ToolParameter => ({
              name: p.name,
              type: parameterTypeFromWire(p.type),
              ...(p.description === "" ? {} : { description: p.description }),
              required: p.required,
            }),
          ),
          metadata: { ...(spec?.metadata ?? {}), served_by: "python-worker-pool" },
          requiredVariables: (spec?.metadata.required_variables ?? "")
            .split(",")
            .filter((v) => v !== ""),
          streaming: spec?.supportsStreaming ?? false,
          sessionId: undefined,
          expiresAt: undefined,
          target: { kind: "pool", runner },
        });
        registered.add(name);
      } catch (e) {
        logger.warn(`the Python workers' tool ${quote(name)} is not listed`, {
          error: ConnectError.from(e).rawMessage,
        });
      }
    }
  };

  const workers: PoolWorker[] = [];
  for (let n = 1; n <= count; n++) {
    workers.push(
      createPoolWorker(
        n,
        settings,
        {
          ready: (worker) => {
            syncTools();
            const address = worker.info().address;
            if (address !== null) options.onReady?.(`pool-${worker.number}`, address);
          },
          down: (worker) => {
            worker.sessions = 0;
            syncTools();
            options.onDown?.(`pool-${worker.number}`);
          },
          restarted: (worker) => options.onRestart?.(`pool-${worker.number}`),
        },
        {
          add: (pid) => guard?.add(pid),
          remove: (pid) => guard?.remove(pid),
          close: () => undefined,
        },
        logger,
      ),
    );
  }

  /** The worker a session's call goes to; see the module comment. */
  const route = (call: ToolCall): PoolWorker => {
    const held = affinity.get(call.sessionId);
    if (held !== undefined) {
      if (held.worker.generation === held.generation && held.worker.state === "ready") {
        return held.worker;
      }
      affinity.delete(call.sessionId);
      if (held.worker.generation === held.generation) held.worker.sessions--;
      throw new ConnectError(
        `the Python worker holding this session's state restarted; worker-side state was lost (the session's variables are kept). Call ${quote(call.toolName)} again to continue on another worker`,
        Code.FailedPrecondition,
      );
    }
    let best: PoolWorker | undefined;
    for (const w of workers) {
      if (w.state !== "ready") continue;
      if (
        best === undefined ||
        w.inFlight < best.inFlight ||
        (w.inFlight === best.inFlight && w.sessions < best.sessions)
      ) {
        best = w;
      }
    }
    if (best === undefined) {
      const restarting = workers.filter((w) => w.state === "starting" || w.state === "restarting");
      throw new ConnectError(
        restarting.length > 0
          ? `no Python worker is ready to run tool ${quote(call.toolName)}: ${restarting.length} of ${workers.length} starting; try again shortly`
          : `no Python worker can run tool ${quote(call.toolName)}: every worker failed (see GET /workers on the admin listener)`,
        Code.Unavailable,
      );
    }
    affinity.set(call.sessionId, { worker: best, generation: best.generation });
    best.sessions++;
    return best;
  };

  /**
   * Runs `body` on the session's worker: counted in flight, cut short with
   * UNAVAILABLE the moment the worker's run ends.
   */
  const onWorker = async <T>(
    call: ToolCall,
    signal: AbortSignal,
    body: (worker: PoolWorker, signal: AbortSignal) => Promise<T>,
  ): Promise<T> => {
    const worker = route(call);
    const client = worker.client;
    if (client === undefined)
      throw new ConnectError("the Python worker is not ready", Code.Unavailable);
    worker.inFlight++;
    try {
      return await body(worker, AbortSignal.any([signal, worker.gone]));
    } catch (e) {
      throw lost(worker, call, e);
    } finally {
      worker.inFlight--;
    }
  };

  /** A call cut short by its worker's end says so; anything else is passed on. */
  const lost = (worker: PoolWorker, call: ToolCall, e: unknown): unknown => {
    if (!worker.gone.aborted) return e;
    // The caller is told now that the state is gone: not again on its next call.
    const held = affinity.get(call.sessionId);
    if (held?.worker === worker) affinity.delete(call.sessionId);
    return new ConnectError(
      `the Python worker running tool ${quote(call.toolName)} ${worker.goneReason} during the call; worker-side state of this session was lost`,
      Code.Unavailable,
    );
  };

  /** What the caller is told about a worker's error status (bounded; the log has it whole). */
  const failure = (call: ToolCall, e: unknown): string => {
    const err = ConnectError.from(e);
    logger.warn("Python worker call failed", {
      tool: call.toolName,
      code: Code[err.code],
      error: err.rawMessage,
    });
    if (err.code === Code.DeadlineExceeded) {
      return `the Python worker did not finish tool ${quote(call.toolName)} within ${options.callTimeoutMs} ms (deadline_exceeded)`;
    }
    return `the Python worker failed running tool ${quote(call.toolName)}: ${clip(err.rawMessage, 300)} (${Code[err.code]})`;
  };

  const request = (call: ToolCall, streaming: boolean) => ({
    sessionId: call.sessionId,
    toolName: call.toolName,
    // snakepit workers read the raw JSON form (tool-value-form.ts).
    parameters: Object.fromEntries(
      Object.entries(call.parameters).map(([k, v]) => [k, convertJsonAny(v, "raw-json")]),
    ),
    metadata: call.metadata,
    binaryParameters: call.binaryParameters,
    stream: streaming,
  });

  const execute = (call: ToolCall, signal: AbortSignal): Promise<RunOutcome> =>
    onWorker(call, signal, async (worker, both) => {
      try {
        const response = await (worker.client ?? unreachable()).executeTool(request(call, false), {
          signal: both,
          timeoutMs: options.callTimeoutMs,
        });
        return {
          outcome: response.success ? "ok" : "error",
          result: response.result,
          error: response.errorMessage,
          metadata: response.metadata,
        };
      } catch (e) {
        await exitOrTimeout(worker, e, timers);
        if (worker.gone.aborted || signal.aborted) throw e;
        return { outcome: "error", error: failure(call, e) };
      }
    });

  async function* stream(
    call: ToolCall,
    signal: AbortSignal,
    finish: ToolFinish,
  ): AsyncGenerator<ToolChunk> {
    let worker: PoolWorker;
    try {
      worker = route(call);
    } catch (e) {
      // Audited like any failed call, then the caller gets the pool's status.
      finish("error", ConnectError.from(e).rawMessage);
      throw e;
    }
    const client = worker.client ?? unreachable();
    worker.inFlight++;
    try {
      const both = AbortSignal.any([signal, worker.gone]);
      let finished = false;
      try {
        for await (const chunk of client.executeStreamingTool(request(call, true), {
          signal: both,
          timeoutMs: options.callTimeoutMs,
        })) {
          if (chunk.isFinal && !finished) {
            finished = true;
            finish("ok");
          }
          yield chunk;
        }
        if (!finished) finish("ok");
      } catch (e) {
        await exitOrTimeout(worker, e, timers);
        if (worker.gone.aborted) {
          const error = lost(worker, call, e) as ConnectError;
          if (!finished) finish("error", error.rawMessage);
          throw error;
        }
        if (signal.aborted) throw e;
        const message = failure(call, e);
        if (!finished) finish("error", message);
        yield finalChunk(1, null, { error: message });
      }
    } finally {
      worker.inFlight--;
    }
  }

  const workerOfSession = (sessionId: string): PoolWorker | undefined => {
    const own = workers.find((w) => w.ownSession === sessionId && w.ownSession !== "");
    if (own !== undefined) return own;
    const held = affinity.get(sessionId);
    return held !== undefined && held.worker.generation === held.generation
      ? held.worker
      : undefined;
  };

  return {
    start(bridgeAddress) {
      guard = createOrphanGuard(logger);
      logger.info(
        `starting ${count} Python worker${count === 1 ? "" : "s"}: ${config.command.join(" ")}`,
      );
      for (const w of workers) w.start(bridgeAddress);
    },

    async stop() {
      await Promise.all(workers.map((w) => w.stop()));
      guard?.close();
      guard = undefined;
      affinity.clear();
      rmSync(runDir, { recursive: true, force: true });
    },

    claimRegistration(req) {
      if (req.tools.some((t) => (t.metadata.worker_address ?? "") !== "")) return undefined;
      const worker = workerOfSession(req.sessionId);
      if (worker === undefined) return undefined;
      if (req.sessionId === worker.ownSession) {
        worker.noteDiscovered(req.tools);
        syncTools();
      }
      return Object.fromEntries(req.tools.map((t) => [t.name, `tool:global:${t.name}`]));
    },

    answersHeartbeat: (sessionId) => workerOfSession(sessionId) !== undefined,

    sessionEnded(sessionId) {
      const held = affinity.get(sessionId);
      if (held === undefined) return;
      affinity.delete(sessionId);
      if (held.worker.generation !== held.generation) return;
      held.worker.sessions--;
      // v0.13 stops its heartbeat for the session; best effort.
      held.worker.client?.cleanupSession({ sessionId }, { timeoutMs: 5000 }).catch(() => undefined);
    },

    list: () => workers.map((w) => w.info()),

    countByState() {
      const counts = Object.fromEntries(poolWorkerStates.map((s) => [s, 0])) as Record<
        PoolWorkerState,
        number
      >;
      for (const w of workers) counts[w.state]++;
      return counts;
    },
  };
}

/**
 * A killed worker's connection breaks a moment before its exit is seen: on
 * a transport error (not a status the worker sent), waits up to half a
 * second for the exit, so the call is reported as cut short by it.
 */
async function exitOrTimeout(worker: PoolWorker, e: unknown, timers: ServerTimers): Promise<void> {
  if (worker.gone.aborted || ConnectError.from(e).isWireError) return;
  await delay(timers, 500, { signal: worker.gone });
}

function unreachable(): never {
  throw new ConnectError("the Python worker is not ready", Code.Unavailable);
}
