import { create } from "@bufbuild/protobuf";
import type { Any } from "@bufbuild/protobuf/wkt";
import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import {
  BridgeService,
  type ToolChunk,
  ToolChunkSchema,
} from "../../gen/snakepit/bridge/bridge_pb.js";
import {
  convertJsonAny,
  decodeJsonAny,
  encodeJsonAny,
  type JsonValue,
} from "../../values/index.js";
import type { BridgeCore } from "../bridge-core.js";
import { quote } from "../limits.js";
import { type Logger, redactSessionId } from "../logger.js";
import type { ToolOutcome } from "./audit-trail.js";
import type { ToolContext } from "./tool-definition.js";
import { bindArguments, type RegisteredTool } from "./tool-registry.js";
import { createToolSession } from "./tool-session.js";

/** A tool call as it arrives, from ExecuteTool or ExecuteElixirTool. */
export interface ToolCall {
  readonly sessionId: string;
  readonly toolName: string;
  readonly parameters: Readonly<Record<string, Any>>;
  readonly metadata: Readonly<Record<string, string>>;
  readonly binaryParameters: Readonly<Record<string, Uint8Array>>;
}

/** The in-band outcome of a unary tool call. */
export interface ToolResult {
  readonly success: boolean;
  readonly result: Any | undefined;
  readonly errorMessage: string;
  readonly metadata: Record<string, string>;
  readonly executionTimeMs: bigint;
}

const encoder = new TextEncoder();

/**
 * Runs tools: permission check, argument binding, local handler or
 * forwarding to the worker that registered the tool, audit. Session-level
 * problems (unknown session, permission, too many calls at once, a call
 * that loops back) are ConnectErrors; everything about the tool itself is
 * reported in-band, as the original server did.
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

/**
 * The header listing the bridges a forwarded call passed through. A bridge
 * refuses a call that already passed through it, so a tool whose worker is
 * (directly or via other bridges) a bridge can never loop.
 */
export const viaHeader = "ub-forwarded-by";

/** Bridges a call may pass through before it is refused. */
const MAX_HOPS = 4;

/** Creates the executor for a core. */
export function createToolExecutor(core: BridgeCore, options: ToolExecutorOptions): ToolExecutor {
  const { logger, instanceId } = options;
  // Least recently used first: a Map keeps insertion order.
  const workers = new Map<
    string,
    { client: Client<typeof BridgeService>; manager: Http2SessionManager }
  >();
  const workerClient = (url: string) => {
    let entry = workers.get(url);
    if (entry !== undefined) {
      workers.delete(url);
      workers.set(url, entry);
      return entry.client;
    }
    // An idle worker connection is closed after a minute; a dead one is
    // found by PING before it is used again.
    const manager = new Http2SessionManager(url, {
      idleConnectionTimeoutMs: 60_000,
      pingIntervalMs: 30_000,
    });
    entry = {
      manager,
      client: createClient(
        BridgeService,
        createGrpcTransport({ baseUrl: url, sessionManager: manager }),
      ),
    };
    workers.set(url, entry);
    while (workers.size > options.maxWorkerConnections) {
      const [oldest, evicted] = workers.entries().next().value as [string, typeof entry];
      workers.delete(oldest);
      evicted.manager.abort();
    }
    return entry.client;
  };

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

  /** The forwarding path of an incoming call; refuses a loop. */
  const pathOf = (headers: Headers | undefined): string[] => {
    const via = (headers?.get(viaHeader) ?? "")
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s !== "");
    if (via.includes(instanceId)) {
      throw new ConnectError(
        "this tool call already passed through this bridge: a tool's worker leads back to the bridge; fix the worker registration",
        Code.FailedPrecondition,
      );
    }
    if (via.length >= MAX_HOPS) {
      throw new ConnectError(
        `this tool call already passed through ${via.length} bridges; the limit is ${MAX_HOPS}`,
        Code.FailedPrecondition,
      );
    }
    return via;
  };

  /** Resolves the tool and checks the session may call it. */
  const resolve = async (call: ToolCall): Promise<RegisteredTool | undefined> => {
    const allowed = await core.read(call.sessionId, (view) => view.session.allowedTools);
    if (allowed.length > 0 && !allowed.includes(call.toolName)) {
      record(call, Date.now(), "denied", "not in the session's tool allowlist", "local", false);
      throw new ConnectError(
        `tool ${quote(call.toolName)} is not allowed in this session (allowed: ${allowed.join(", ")})`,
        Code.PermissionDenied,
      );
    }
    return core.tools.lookup(call.sessionId, call.toolName);
  };

  /**
   * What the caller is told when forwarding fails. Callers see a tool's
   * name, never where its worker is: transport errors (which name the
   * address) are logged for the operator and summarized for the caller.
   */
  const forwardFailure = (tool: RegisteredTool, e: unknown, sessionId: string): string => {
    const err = ConnectError.from(e);
    const target = tool.target as Extract<RegisteredTool["target"], { kind: "remote" }>;
    logger.warn("forwarded tool call failed", {
      session: redactSessionId(sessionId),
      tool: tool.name,
      worker: target.workerId,
      address: target.address.display,
      code: Code[err.code],
      error: err.rawMessage,
    });
    switch (err.code) {
      case Code.Unavailable:
        return `the worker hosting tool '${tool.name}' is unreachable (unavailable); try again later`;
      case Code.DeadlineExceeded:
        return `the worker hosting tool '${tool.name}' did not answer within ${core.settings.remoteToolTimeoutMs} ms (deadline_exceeded)`;
      case Code.Canceled:
        return `the call of tool '${tool.name}' was cancelled (canceled)`;
      default:
        return `the worker hosting tool '${tool.name}' failed: ${err.rawMessage
          .split(target.address.display)
          .join("<worker>")} (${Code[err.code]})`;
    }
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
      durationMs: Date.now() - startedAt,
      outcome,
      ...(error === undefined ? {} : { error }),
      target,
      streaming,
    });
  };

  const contextFor = (call: ToolCall, signal: AbortSignal): ToolContext => ({
    session: createToolSession(core, call.sessionId),
    metadata: call.metadata,
    binaryParameters: new Map(Object.entries(call.binaryParameters)),
    signal,
  });

  const decodeArguments = (tool: RegisteredTool, call: ToolCall) => {
    const args: Record<string, JsonValue> = {};
    for (const [name, any] of Object.entries(call.parameters)) {
      try {
        args[name] = decodeJsonAny(any);
      } catch (e) {
        throw new Error(`parameter '${name}': ${ConnectError.from(e).rawMessage}`);
      }
    }
    return bindArguments(tool, args);
  };

  const targetLabel = (tool: RegisteredTool) =>
    tool.target.kind === "local" ? "local" : `remote:${tool.target.address.display}`;

  const forwardHeaders = (via: readonly string[]) => ({
    [viaHeader]: [...via, instanceId].join(","),
  });

  return {
    async execute(call, signal, headers) {
      const via = pathOf(headers);
      const release = admit(call.sessionId);
      try {
        return await run(call, signal, via);
      } finally {
        release();
      }
    },

    async *stream(call, signal, headers) {
      const via = pathOf(headers);
      const release = admit(call.sessionId);
      try {
        yield* runStreaming(call, signal, via);
      } finally {
        release();
      }
    },

    close() {
      for (const { manager } of workers.values()) manager.abort();
      workers.clear();
    },
  };

  // In-flight calls are not cut short at shutdown: the server's grace
  // period lets them finish (their signal fires if the client goes away).
  async function run(call: ToolCall, signal: AbortSignal, via: string[]): Promise<ToolResult> {
    const started = Date.now();
    const tool = await resolve(call);
    const finish = (
      outcome: ToolOutcome,
      result: Any | undefined,
      error: string,
      metadata: Record<string, string> = {},
    ): ToolResult => {
      record(
        call,
        started,
        outcome,
        outcome === "ok" ? undefined : error,
        tool ? targetLabel(tool) : "local",
        false,
      );
      return {
        success: outcome === "ok",
        result,
        errorMessage: error,
        // Extension: tells clients why a call failed without parsing text.
        metadata: outcome === "ok" ? metadata : { ...metadata, error_kind: outcome },
        executionTimeMs: BigInt(Date.now() - started),
      };
    };
    if (tool === undefined) {
      return finish("not_found", undefined, `Tool not found: ${call.toolName}`);
    }
    if (tool.target.kind === "remote") {
      try {
        const response = await workerClient(tool.target.address.url).executeTool(
          {
            sessionId: call.sessionId,
            toolName: call.toolName,
            // snakepit workers read the raw JSON form (tool-value-form.ts).
            parameters: rawParameters(call.parameters),
            metadata: call.metadata,
            binaryParameters: call.binaryParameters,
          },
          {
            signal,
            timeoutMs: core.settings.remoteToolTimeoutMs,
            headers: forwardHeaders(via),
          },
        );
        return finish(
          response.success ? "ok" : "error",
          response.result,
          response.errorMessage,
          response.metadata,
        );
      } catch (e) {
        return finish("error", undefined, forwardFailure(tool, e, call.sessionId));
      }
    }
    let args: Readonly<Record<string, JsonValue>>;
    try {
      args = decodeArguments(tool, call);
    } catch (e) {
      return finish("invalid_arguments", undefined, messageOf(e));
    }
    try {
      const definition = tool.target.definition;
      let value: JsonValue;
      if (definition.handler !== undefined) {
        value = await definition.handler(args, contextFor(call, signal));
      } else {
        // A streaming tool called without streaming: collect its chunks.
        const chunks: JsonValue[] = [];
        for await (const chunk of runStream(tool, args, contextFor(call, signal))) {
          if (chunk.final !== undefined) {
            if (chunk.final !== null) chunks.push(chunk.final);
          } else chunks.push(chunk.value);
        }
        value = chunks;
      }
      return finish("ok", encodeJsonAny(value ?? null), "");
    } catch (e) {
      return finish("error", undefined, messageOf(e));
    }
  }

  async function* runStreaming(
    call: ToolCall,
    signal: AbortSignal,
    via: string[],
  ): AsyncGenerator<ToolChunk> {
    const started = Date.now();
    const tool = await resolve(call);
    if (tool === undefined) {
      record(call, started, "not_found", "tool not found", "local", true);
      yield finalChunk(1, null, { error: `Tool not found: ${call.toolName}` });
      return;
    }
    const target = targetLabel(tool);
    if (tool.target.kind === "remote") {
      try {
        for await (const chunk of workerClient(tool.target.address.url).executeStreamingTool(
          {
            sessionId: call.sessionId,
            toolName: call.toolName,
            // snakepit workers read the raw JSON form (tool-value-form.ts).
            parameters: rawParameters(call.parameters),
            metadata: call.metadata,
            stream: true,
            binaryParameters: call.binaryParameters,
          },
          {
            signal,
            timeoutMs: core.settings.remoteToolTimeoutMs,
            headers: forwardHeaders(via),
          },
        )) {
          yield chunk;
        }
        record(call, started, "ok", undefined, target, true);
      } catch (e) {
        const message = forwardFailure(tool, e, call.sessionId);
        record(call, started, "error", message, target, true);
        yield finalChunk(1, null, { error: message });
      }
      return;
    }
    let args: Readonly<Record<string, JsonValue>>;
    try {
      args = decodeArguments(tool, call);
    } catch (e) {
      record(call, started, "invalid_arguments", messageOf(e), target, true);
      yield finalChunk(1, null, { error: messageOf(e) });
      return;
    }
    let n = 0;
    try {
      for await (const chunk of runStream(tool, args, contextFor(call, signal))) {
        n++;
        if (chunk.final !== undefined) {
          record(call, started, "ok", undefined, target, true);
          yield finalChunk(n, chunk.final, {
            chunks: String(n - 1),
            execution_time_ms: String(Date.now() - started),
          });
          return;
        }
        yield create(ToolChunkSchema, {
          chunkId: String(n),
          data: encoder.encode(JSON.stringify(chunk.value)),
        });
      }
    } catch (e) {
      record(call, started, "error", messageOf(e), target, true);
      yield finalChunk(n + 1, null, { error: messageOf(e) });
    }
  }
}

type StreamItem = { value: JsonValue; final?: undefined } | { final: JsonValue | null };

/**
 * Runs a local tool as a stream: a streaming tool's chunks then its return
 * value, or a plain tool's result as the final item.
 */
async function* runStream(
  tool: RegisteredTool,
  args: Readonly<Record<string, JsonValue>>,
  context: ToolContext,
): AsyncGenerator<StreamItem> {
  if (tool.target.kind !== "local") return;
  const definition = tool.target.definition;
  if (definition.stream === undefined) {
    const value = definition.handler === undefined ? null : await definition.handler(args, context);
    yield { final: value };
    return;
  }
  const iterator = definition.stream(args, context)[Symbol.asyncIterator]();
  for (;;) {
    if (context.signal.aborted) throw new Error("the call was cancelled");
    const step = await iterator.next();
    if (step.done === true) {
      yield { final: (step.value as JsonValue | undefined) ?? null };
      return;
    }
    yield { value: step.value };
  }
}

function finalChunk(
  n: number,
  value: JsonValue | null,
  metadata: Record<string, string>,
): ToolChunk {
  return create(ToolChunkSchema, {
    chunkId: String(n),
    data: value === null ? new Uint8Array(0) : encoder.encode(JSON.stringify(value)),
    isFinal: true,
    metadata,
  });
}

function rawParameters(parameters: Readonly<Record<string, Any>>): Record<string, Any> {
  const out: Record<string, Any> = {};
  for (const [k, v] of Object.entries(parameters)) out[k] = convertJsonAny(v, "raw-json");
  return out;
}

function messageOf(e: unknown): string {
  if (e instanceof ConnectError) return e.rawMessage;
  if (e instanceof Error) return e.message;
  return String(e);
}
