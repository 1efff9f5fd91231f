import { create } from "@bufbuild/protobuf";
import type { Any } from "@bufbuild/protobuf/wkt";
import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  BridgeService,
  type ToolChunk,
  ToolChunkSchema,
} from "../../gen/snakepit/bridge/bridge_pb.js";
import { decodeJsonAny, encodeJsonAny, type JsonValue } from "../../values/index.js";
import type { BridgeCore } from "../bridge-core.js";
import { quote } from "../limits.js";
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
 * problems (unknown session, permission) are ConnectErrors; everything about
 * the tool itself is reported in-band, as the original server did.
 */
export interface ToolExecutor {
  execute(call: ToolCall, signal: AbortSignal): Promise<ToolResult>;
  stream(call: ToolCall, signal: AbortSignal): AsyncIterable<ToolChunk>;
  close(): void;
}

/** Creates the executor for a core. */
export function createToolExecutor(core: BridgeCore): ToolExecutor {
  const workers = new Map<string, Client<typeof BridgeService>>();
  const workerClient = (address: string) => {
    let client = workers.get(address);
    if (client === undefined) {
      const baseUrl = /^https?:\/\//.test(address) ? address : `http://${address}`;
      client = createClient(BridgeService, createGrpcTransport({ baseUrl }));
      workers.set(address, client);
    }
    return client;
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

  const record = (
    call: ToolCall,
    startedAt: number,
    outcome: ToolOutcome,
    error: string | undefined,
    target: string,
    streaming: boolean,
  ) => {
    core.audit.record({
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
    tool.target.kind === "local" ? "local" : `remote:${tool.target.address}`;

  return {
    async execute(call, parentSignal) {
      const started = Date.now();
      const signal = AbortSignal.any([parentSignal, core.shutdownSignal]);
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
        const { address, workerId } = tool.target;
        try {
          const response = await workerClient(address).executeTool(
            {
              sessionId: call.sessionId,
              toolName: call.toolName,
              parameters: call.parameters,
              metadata: call.metadata,
              binaryParameters: call.binaryParameters,
            },
            { signal, timeoutMs: core.settings.remoteToolTimeoutMs },
          );
          return finish(
            response.success ? "ok" : "error",
            response.result,
            response.errorMessage,
            response.metadata,
          );
        } catch (e) {
          const err = ConnectError.from(e);
          return finish(
            "error",
            undefined,
            `worker '${workerId || address}' at ${address} failed to run tool '${call.toolName}': ${err.rawMessage} (${Code[err.code]})`,
          );
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
    },

    async *stream(call, parentSignal) {
      const started = Date.now();
      const signal = AbortSignal.any([parentSignal, core.shutdownSignal]);
      const tool = await resolve(call);
      if (tool === undefined) {
        record(call, started, "not_found", "tool not found", "local", true);
        yield finalChunk(1, null, { error: `Tool not found: ${call.toolName}` });
        return;
      }
      const target = targetLabel(tool);
      if (tool.target.kind === "remote") {
        const { address, workerId } = tool.target;
        try {
          for await (const chunk of workerClient(address).executeStreamingTool(
            {
              sessionId: call.sessionId,
              toolName: call.toolName,
              parameters: call.parameters,
              metadata: call.metadata,
              stream: true,
              binaryParameters: call.binaryParameters,
            },
            { signal, timeoutMs: core.settings.remoteToolTimeoutMs },
          )) {
            yield chunk;
          }
          record(call, started, "ok", undefined, target, true);
        } catch (e) {
          const message = `worker '${workerId || address}' at ${address} failed to stream tool '${call.toolName}': ${ConnectError.from(e).rawMessage}`;
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
    },

    close() {
      workers.clear();
    },
  };
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

function messageOf(e: unknown): string {
  if (e instanceof ConnectError) return e.rawMessage;
  if (e instanceof Error) return e.message;
  return String(e);
}
