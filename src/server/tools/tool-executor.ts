import { availableParallelism } from "node:os";
import type { Any } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import type { ToolChunk } from "../../gen/snakepit/bridge/bridge_pb.js";
import { grantOf } from "../access/access-grant.js";
import { clientOf, isWorker } from "../access/caller.js";
import { quote } from "../common/message-text.js";
import type { Logger } from "../observability/logger.js";
import type { BridgeCore } from "../rpc/bridge-core.js";
import type { ToolOutcome } from "./audit-trail.js";
import { correlationIdIn } from "./correlation-id.js";
import { createFairGate } from "./fair-gate.js";
import { createLocalRunner } from "./local-runner.js";
import { createRemoteRunner } from "./remote-runner.js";
import type { RegisteredTool } from "./tool-registry.js";
import { finalChunk, type RunOutcome, type ToolCall } from "./tool-run.js";

export { viaHeader } from "./remote-runner.js";
export type { ToolCall } from "./tool-run.js";

/** The in-band outcome of a unary tool call. */
export interface ToolResult {
  readonly success: boolean;
  readonly result: Any | undefined;
  /** ExecuteToolResponse.binary_result: a worker's opaque payload, empty when none. */
  readonly binaryResult?: Uint8Array;
  readonly errorMessage: string;
  readonly metadata: Record<string, string>;
  readonly executionTimeMs: bigint;
}

/**
 * Who a tool call comes from, for the per-client bounds: the client's
 * address, and whether it is a worker (trusted, so not held to them).
 */
export interface CallOrigin {
  readonly client: string;
  readonly worker: boolean;
  /** The identity the caller acts for (an identity JWT's subject), for the audit trail. */
  readonly subject?: string | undefined;
}

/** The {@link CallOrigin} of an RPC. */
export function originOf(ctx: HandlerContext): CallOrigin {
  const grant = grantOf(ctx);
  const subject = grant.kind === "token" || grant.kind === "identity" ? grant.subject : undefined;
  return { client: clientOf(ctx), worker: isWorker(ctx), subject };
}

/**
 * Whether calls of a tool go through the expensive-call gate: a local tool
 * says so in its definition, a remote one in its registration metadata
 * (`expensive: "true"`, which stock workers can send).
 */
export function isExpensive(tool: RegisteredTool): boolean {
  if (tool.target.kind === "local") return tool.target.definition.expensive === true;
  return /^(true|1|yes)$/i.test(tool.metadata.expensive?.trim() ?? "");
}

/**
 * Runs tools: forwarding-loop and per-session admission checks, permission
 * check, per-client bounds (remote calls in flight; expensive calls through
 * a gate shared fairly by clients), then the local runner (the tool's TypeScript code) or the remote
 * one (forwarding to the worker that registered the tool), and the audit.
 * Session-level problems (unknown session, permission, too many calls at
 * once, a call that loops back) are ConnectErrors; everything about the tool
 * itself is reported in-band, as the original server did.
 */
export interface ToolExecutor {
  /**
   * `headers` are the incoming call's: they carry the forwarding path.
   * Without `origin`, the call counts as one anonymous public client's.
   */
  execute(
    call: ToolCall,
    signal: AbortSignal,
    headers?: Headers,
    origin?: CallOrigin,
  ): Promise<ToolResult>;
  stream(
    call: ToolCall,
    signal: AbortSignal,
    headers?: Headers,
    origin?: CallOrigin,
  ): AsyncIterable<ToolChunk>;
  /** Calls of expensive tools running and waiting for a slot, now. */
  readonly expensiveCalls: { readonly running: number; readonly waiting: number };
  /** Closes every worker connection. */
  close(): void;
}

/** Options of {@link createToolExecutor}. */
export interface ToolExecutorOptions {
  /** This bridge's id in the forwarding path; random per process. */
  readonly instanceId: string;
  /** Worker connections kept open; the least recently used is closed beyond. */
  readonly maxWorkerConnections: number;
  readonly logger: Logger;
}

/** Creates the executor for a core. */
export function createToolExecutor(core: BridgeCore, options: ToolExecutorOptions): ToolExecutor {
  const now = core.now;
  const local = createLocalRunner(core);
  const remote = createRemoteRunner({
    instanceId: options.instanceId,
    maxWorkerConnections: options.maxWorkerConnections,
    timeoutMs: core.settings.remoteToolTimeoutMs,
    readMaxBytes: core.settings.limits.maxReplyBytes,
    logger: options.logger,
    timers: core.timers,
  });
  const { limits } = core.settings;
  const bySession = createCounter(
    limits.maxToolCallsPerSession,
    (n, max) =>
      `the session has ${n} tool calls running; the limit is ${max} (--max-tool-calls-per-session); wait for one to finish`,
  );
  // Across sessions: one client holding many sessions must not be able to
  // occupy a worker's capacity (its calls queue at the worker, delaying
  // everyone else's until they time out).
  const forwardedByClient = createCounter(
    limits.maxForwardedCallsPerClient,
    (n, max) =>
      `this client has ${n} calls of remote tools in flight; the limit is ${max} (--max-forwarded-calls-per-client); wait for one to finish`,
  );
  const expensive = createFairGate({
    maxRunning:
      limits.maxExpensiveToolCalls === 0 ? availableParallelism() : limits.maxExpensiveToolCalls,
    maxWaitingPerClient: limits.maxQueuedExpensiveCallsPerClient,
    ...(core.memory === undefined ? {} : { memory: core.memory }),
  });

  const record = (
    call: ToolCall,
    origin: CallOrigin,
    startedAt: number,
    outcome: ToolOutcome,
    error: string | undefined,
    target: string,
    streaming: boolean,
  ) => {
    const correlationId = correlationIdIn(call);
    core.audit.record({
      action: "execute",
      sessionId: call.sessionId,
      tool: call.toolName,
      startedAt,
      durationMs: now() - startedAt,
      outcome,
      ...(error === undefined ? {} : { error }),
      target,
      streaming,
      ...(correlationId === undefined ? {} : { correlationId }),
      ...(origin.subject === undefined ? {} : { subject: origin.subject }),
    });
  };

  /** Resolves the tool and checks the session may call it. */
  const resolve = async (
    call: ToolCall,
    origin: CallOrigin,
  ): Promise<RegisteredTool | undefined> => {
    const allowed = await core.read(call.sessionId, (view) => view.session.allowedTools);
    if (allowed.length > 0 && !allowed.includes(call.toolName)) {
      record(call, origin, now(), "denied", "not in the session's tool allowlist", "local", false);
      throw new ConnectError(
        `tool ${quote(call.toolName)} is not allowed in this session (allowed: ${allowed.join(", ")})`,
        Code.PermissionDenied,
      );
    }
    return core.tools.lookup(call.sessionId, call.toolName);
  };

  const targetLabel = (tool: RegisteredTool | undefined) =>
    tool === undefined
      ? "local"
      : tool.target.kind === "remote"
        ? `remote:${tool.target.address.display}`
        : tool.target.kind;

  /**
   * What both kinds of call do before running the tool: the forwarding path
   * and the session's count of running calls are checked, and the tool is
   * resolved. The caller releases the count when the run is over.
   */
  const begin = async (
    call: ToolCall,
    signal: AbortSignal,
    headers: Headers | undefined,
    origin: CallOrigin,
    streaming: boolean,
  ): Promise<Run> => {
    const via = remote.pathOf(headers);
    const releases = [bySession.admit(call.sessionId)];
    const release = () => {
      for (const r of releases.splice(0).reverse()) r();
    };
    try {
      const tool = await resolve(call, origin);
      if (tool !== undefined && core.tools.isWithdrawn(tool)) {
        // Not "unreachable, try again later": its worker failed its health
        // checks, so the tool is no longer listed either.
        const error = workerGone(call.toolName);
        record(call, origin, now(), "error", error.rawMessage, targetLabel(tool), streaming);
        throw error;
      }
      if (tool !== undefined) {
        try {
          if (tool.target.kind !== "local" && !origin.worker) {
            releases.push(forwardedByClient.admit(origin.client));
          }
          if (isExpensive(tool)) {
            releases.push(await expensive.acquire(origin.client, signal, !origin.worker));
          }
        } catch (e) {
          const error = ConnectError.from(e);
          if (error.code === Code.ResourceExhausted) {
            record(
              call,
              origin,
              now(),
              "resource_exhausted",
              error.rawMessage,
              targetLabel(tool),
              streaming,
            );
          }
          throw error;
        }
      }
      // Time spent waiting for a slot is not the tool's execution time.
      return { via, release, started: now(), tool, origin };
    } catch (e) {
      release();
      throw e;
    }
  };

  const runUnary = async (call: ToolCall, signal: AbortSignal, run: Run): Promise<ToolResult> => {
    const { tool, started } = run;
    let ran: RunOutcome;
    if (tool === undefined) {
      ran = { outcome: "not_found", error: `Tool not found: ${call.toolName}` };
    } else if (tool.target.kind === "pool") {
      try {
        ran = await tool.target.runner.execute(call, signal);
      } catch (e) {
        // The pool could not serve the call (no worker, a worker lost):
        // audited, then the caller gets the pool's status.
        const error = ConnectError.from(e);
        record(call, run.origin, started, "error", error.rawMessage, "pool", false);
        throw error;
      }
    } else if (tool.target.kind === "remote") {
      ran = await remote.execute(tool, call, signal, run.via);
    } else {
      ran = await local.execute(tool, call, signal);
    }
    const ok = ran.outcome === "ok";
    record(
      call,
      run.origin,
      started,
      ran.outcome,
      ok ? undefined : ran.error,
      targetLabel(tool),
      false,
    );
    const metadata = ran.metadata ?? {};
    return {
      success: ok,
      result: ran.result,
      ...(ran.binaryResult === undefined ? {} : { binaryResult: ran.binaryResult }),
      errorMessage: ran.error,
      // Extension: tells clients why a call failed without parsing text.
      metadata: ok ? metadata : { ...metadata, error_kind: ran.outcome },
      executionTimeMs: BigInt(now() - started),
    };
  };

  async function* runStreaming(
    call: ToolCall,
    signal: AbortSignal,
    run: Run,
  ): AsyncGenerator<ToolChunk> {
    const { tool, started } = run;
    if (tool === undefined) {
      record(call, run.origin, started, "not_found", "tool not found", "local", true);
      yield finalChunk(1, null, { error: `Tool not found: ${call.toolName}` });
      return;
    }
    const target = targetLabel(tool);
    const finish = (outcome: ToolOutcome, error?: string) =>
      record(call, run.origin, started, outcome, error, target, true);
    if (tool.target.kind === "remote") yield* remote.stream(tool, call, signal, run.via, finish);
    else if (tool.target.kind === "pool") yield* tool.target.runner.stream(call, signal, finish);
    else yield* local.stream(tool, call, signal, finish, () => now() - started);
  }

  return {
    async execute(call, signal, headers, origin = anonymousOrigin) {
      const run = await begin(call, signal, headers, origin, false);
      try {
        return await runUnary(call, signal, run);
      } finally {
        run.release();
      }
    },

    async *stream(call, signal, headers, origin = anonymousOrigin) {
      const run = await begin(call, signal, headers, origin, true);
      try {
        yield* runStreaming(call, signal, run);
      } finally {
        run.release();
      }
    },

    get expensiveCalls() {
      return { running: expensive.running, waiting: expensive.waiting };
    },

    close: () => remote.close(),
  };
}

/** A call admitted to run: its forwarding path, its tool (if any), when it started. */
interface Run {
  readonly via: string[];
  readonly release: () => void;
  readonly started: number;
  readonly tool: RegisteredTool | undefined;
  readonly origin: CallOrigin;
}

/** The refusal of a call whose tool's worker is withdrawn (see worker-liveness.ts). */
function workerGone(name: string): ConnectError {
  return new ConnectError(
    `the worker hosting tool '${name}' is gone: it stopped answering health checks, so the tool is withdrawn until the worker answers again or registers again`,
    Code.Unavailable,
  );
}

const anonymousOrigin: CallOrigin = Object.freeze({ client: "", worker: false });

/**
 * Counts things in progress by key, up to `max` per key; `admit` returns
 * the release (idempotent) or throws RESOURCE_EXHAUSTED with `message`.
 */
function createCounter(max: number, message: (n: number, max: number) => string) {
  const counts = new Map<string, number>();
  return {
    admit(key: string): () => void {
      const n = counts.get(key) ?? 0;
      if (n >= max) throw new ConnectError(message(n, max), Code.ResourceExhausted);
      counts.set(key, n + 1);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        const left = (counts.get(key) ?? 1) - 1;
        if (left === 0) counts.delete(key);
        else counts.set(key, left);
      };
    },
  };
}
