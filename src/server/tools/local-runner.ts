import { ConnectError } from "@connectrpc/connect";
import type { ToolChunk } from "../../gen/snakepit/bridge/bridge_pb.js";
import { decodeJsonAny, encodeJsonAny, type JsonValue } from "../../values/index.js";
import type { BridgeCore } from "../rpc/bridge-core.js";
import { bindArguments } from "./tool-arguments.js";
import type { ToolArguments, ToolContext } from "./tool-definition.js";
import type { RegisteredTool } from "./tool-registry.js";
import {
  dataChunk,
  finalChunk,
  messageOf,
  type RunOutcome,
  type ToolCall,
  type ToolFinish,
} from "./tool-run.js";
import { createToolSession } from "./tool-session.js";

/**
 * Runs tools defined in TypeScript (built-in or the embedder's), in this
 * process: arguments decoded and bound to the declared parameters, the
 * handler or stream function called with the session as a tool sees it.
 */
export interface LocalRunner {
  execute(tool: RegisteredTool, call: ToolCall, signal: AbortSignal): Promise<RunOutcome>;
  /**
   * Streams the tool's chunks; calls `finish` once, before the final chunk.
   * `elapsedMs` says how long the call has run (for the final chunk).
   */
  stream(
    tool: RegisteredTool,
    call: ToolCall,
    signal: AbortSignal,
    finish: ToolFinish,
    elapsedMs: () => number,
  ): AsyncGenerator<ToolChunk>;
}

/** Creates the local runner of a core. */
export function createLocalRunner(core: BridgeCore): LocalRunner {
  const contextFor = (call: ToolCall, signal: AbortSignal): ToolContext => ({
    session: createToolSession(core, call.sessionId),
    metadata: call.metadata,
    binaryParameters: new Map(Object.entries(call.binaryParameters)),
    signal,
  });

  return {
    // In-flight calls are not cut short at shutdown: the server's grace
    // period lets them finish (their signal fires if the client goes away).
    async execute(tool, call, signal) {
      let args: ToolArguments;
      try {
        args = decodeArguments(tool, call);
      } catch (e) {
        return { outcome: "invalid_arguments", error: messageOf(e) };
      }
      try {
        const definition = (tool.target as Extract<RegisteredTool["target"], { kind: "local" }>)
          .definition;
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
        return { outcome: "ok", result: encodeJsonAny(value ?? null), error: "" };
      } catch (e) {
        return { outcome: "error", error: messageOf(e) };
      }
    },

    async *stream(tool, call, signal, finish, elapsedMs) {
      let args: ToolArguments;
      try {
        args = decodeArguments(tool, call);
      } catch (e) {
        finish("invalid_arguments", messageOf(e));
        yield finalChunk(1, null, { error: messageOf(e) });
        return;
      }
      let n = 0;
      try {
        for await (const chunk of runStream(tool, args, contextFor(call, signal))) {
          n++;
          if (chunk.final !== undefined) {
            finish("ok");
            yield finalChunk(n, chunk.final, {
              chunks: String(n - 1),
              execution_time_ms: String(elapsedMs()),
            });
            return;
          }
          yield dataChunk(n, chunk.value);
        }
      } catch (e) {
        finish("error", messageOf(e));
        yield finalChunk(n + 1, null, { error: messageOf(e) });
      }
    },
  };
}

/** The call's parameters decoded from JSON Anys and bound to the tool's parameters. */
function decodeArguments(tool: RegisteredTool, call: ToolCall): ToolArguments {
  const args: Record<string, JsonValue> = {};
  for (const [name, any] of Object.entries(call.parameters)) {
    try {
      args[name] = decodeJsonAny(any);
    } catch (e) {
      throw new Error(`parameter '${name}': ${ConnectError.from(e).rawMessage}`);
    }
  }
  return bindArguments(tool, args);
}

type StreamItem = { value: JsonValue; final?: undefined } | { final: JsonValue | null };

/**
 * Runs a local tool as a stream: a streaming tool's chunks then its return
 * value, or a plain tool's result as the final item.
 */
async function* runStream(
  tool: RegisteredTool,
  args: ToolArguments,
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
