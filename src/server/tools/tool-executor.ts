import type { Any } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { ToolChunk } from "../../gen/snakepit/bridge/bridge_pb.js";
import type { BridgeCore } from "../bridge-core.js";
import { quote } from "../limits.js";
import type { Logger } from "../logger.js";
import type { ToolOutcome } from "./audit-trail.js";
import { createLocalRunner } from "./local-runner.js";
import { createRemoteRunner } from "./remote-runner.js";
import type { RegisteredTool } from "./tool-registry.js";
import { finalChunk, type ToolCall } from "./tool-run.js";

export { viaHeader } from "./remote-runner.js";
export type { ToolCall } from "./tool-run.js";

/** The in-band outcome of a unary tool call. */
export interface ToolResult {
  readonly success: boolean;
  readonly result: Any | undefined;
  readonly errorMessage: string;
  readonly metadata: Record<string, string>;
  readonly executionTimeMs: bigint;
}

/**
 * Runs tools: forwarding-loop and per-session admission checks, permission
 * check, then the local runner (the tool's TypeScript code) or the remote
 * one (forwarding to the worker that registered the tool), and the audit.
 * Session-level problems (unknown session, permission, too many calls at
 * once, a call that loops back) are ConnectErrors; everything about the tool
 * itself is reported in-band, as the original server did.
 */
export interface ToolExecutor {
  /** `headers` are the incoming call's: they carry the forwarding path. */
  execute(call: ToolCall, signal: AbortSignal, headers?: Headers): Promise<ToolResult>;
  stream(call: ToolCall, signal: AbortSignal, headers?: Headers): AsyncIterable<ToolChunk>;
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
    logger: options.logger,
  });
  const running = new Map<string, number>();

  /** Counts a running call of a session; returns its release, or throws. */
  const admit = (sessionId: string): (() => void) => {
    const n = running.get(sessionId) ?? 0;
    const max = core.settings.limits.maxToolCallsPerSession;
    if (n >= max) {
      throw new ConnectError(
        `the session has ${n} tool calls running; the limit is ${max} (--max-tool-calls-per-session); wait for one to finish`,
        Code.ResourceExhausted,
      );
    }
    running.set(sessionId, n + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (running.get(sessionId) ?? 1) - 1;
      if (left === 0) running.delete(sessionId);
      else running.set(sessionId, left);
    };
  };

  const record = (
    call: ToolCall,
    startedAt: number,
    outcome: ToolOutcome,
    error: string | undefined,
    target: string,
    streaming: boolean,
  ) => {
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
    });
  };

  /** Resolves the tool and checks the session may call it. */
  const resolve = async (call: ToolCall): Promise<RegisteredTool | undefined> => {
    const allowed = await core.read(call.sessionId, (view) => view.session.allowedTools);
    if (allowed.length > 0 && !allowed.includes(call.toolName)) {
      record(call, now(), "denied", "not in the session's tool allowlist", "local", false);
      throw new ConnectError(
        `tool ${quote(call.toolName)} is not allowed in this session (allowed: ${allowed.join(", ")})`,
        Code.PermissionDenied,
      );
    }
    return core.tools.lookup(call.sessionId, call.toolName);
  };

  const targetLabel = (tool: RegisteredTool | undefined) =>
    tool === undefined || tool.target.kind === "local"
      ? "local"
      : `remote:${tool.target.address.display}`;

  /**
   * What both kinds of call do before running the tool: the forwarding path
   * and the session's count of running calls are checked, and the tool is
   * resolved. The caller releases the count when the run is over.
   */
  const begin = async (call: ToolCall, headers: Headers | undefined): Promise<Run> => {
    const via = remote.pathOf(headers);
    const release = admit(call.sessionId);
    try {
      const started = now();
      return { via, release, started, tool: await resolve(call) };
    } catch (e) {
      release();
      throw e;
    }
  };

  const runUnary = async (call: ToolCall, signal: AbortSignal, run: Run): Promise<ToolResult> => {
    const { tool, started } = run;
    const ran =
      tool === undefined
        ? { outcome: "not_found" as const, error: `Tool not found: ${call.toolName}` }
        : tool.target.kind === "remote"
          ? await remote.execute(tool, call, signal, run.via)
          : await local.execute(tool, call, signal);
    const ok = ran.outcome === "ok";
    record(call, started, ran.outcome, ok ? undefined : ran.error, targetLabel(tool), false);
    const metadata = ran.metadata ?? {};
    return {
      success: ok,
      result: ran.result,
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
      record(call, started, "not_found", "tool not found", "local", true);
      yield finalChunk(1, null, { error: `Tool not found: ${call.toolName}` });
      return;
    }
    const target = targetLabel(tool);
    const finish = (outcome: ToolOutcome, error?: string) =>
      record(call, started, outcome, error, target, true);
    if (tool.target.kind === "remote") yield* remote.stream(tool, call, signal, run.via, finish);
    else yield* local.stream(tool, call, signal, finish, () => now() - started);
  }

  return {
    async execute(call, signal, headers) {
      const run = await begin(call, headers);
      try {
        return await runUnary(call, signal, run);
      } finally {
        run.release();
      }
    },

    async *stream(call, signal, headers) {
      const run = await begin(call, headers);
      try {
        yield* runStreaming(call, signal, run);
      } finally {
        run.release();
      }
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
}
