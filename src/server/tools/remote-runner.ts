import type { Any } from "@bufbuild/protobuf/wkt";
import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport, type Http2SessionManager } from "@connectrpc/connect-node";
import { BridgeService, type ToolChunk } from "../../gen/snakepit/bridge/bridge_pb.js";
import { convertJsonAny } from "../../values/json-any.js";
import { clip } from "../common/message-text.js";
import type { ServerTimers } from "../common/timers.js";
import { workerSessionManager } from "../edge/edge-compat.js";
import { createKeyedLogSampler } from "../observability/log-sampler.js";
import { type Logger, redactSessionId } from "../observability/logger.js";
import { correlationHeader, correlationIdIn } from "./correlation-id.js";
import type { RegisteredTool } from "./tool-registry.js";
import { finalChunk, type RunOutcome, type ToolCall, type ToolFinish } from "./tool-run.js";

/**
 * The header listing the bridges a forwarded call passed through. A bridge
 * refuses a call that already passed through it, so a tool whose worker is
 * (directly or via other bridges) a bridge can never loop.
 */
export const viaHeader = "ub-forwarded-by";

/** Bridges a call may pass through before it is refused. */
const MAX_HOPS = 4;

type RemoteTarget = Extract<RegisteredTool["target"], { kind: "remote" }>;

/** Runs tools that workers registered, by forwarding the call to the worker. */
export interface RemoteRunner {
  /** The forwarding path of an incoming call (its `headers`); refuses a loop. */
  pathOf(headers: Headers | undefined): string[];
  execute(
    tool: RegisteredTool,
    call: ToolCall,
    signal: AbortSignal,
    via: string[],
  ): Promise<RunOutcome>;
  /** Forwards the worker's chunks; calls `finish` once, before a final chunk of its own. */
  stream(
    tool: RegisteredTool,
    call: ToolCall,
    signal: AbortSignal,
    via: string[],
    finish: ToolFinish,
  ): AsyncGenerator<ToolChunk>;
  /** Closes every worker connection. */
  close(): void;
}

/** Options of {@link createRemoteRunner}. */
export interface RemoteRunnerOptions {
  /** This bridge's id in the forwarding path; random per process. */
  readonly instanceId: string;
  /** Worker connections kept open; the least recently used is closed beyond. */
  readonly maxWorkerConnections: number;
  /** How long a forwarded call may take. */
  readonly timeoutMs: number;
  /**
   * Largest message read from a worker (--max-reply-bytes): a bigger one is
   * refused from its length prefix, before any of it is buffered.
   */
  readonly readMaxBytes: number;
  readonly logger: Logger;
  /** Times the failure log's windows (default: Node's timers). */
  readonly timers?: ServerTimers;
}

/** Creates the forwarding runner, with its pool of worker connections. */
export function createRemoteRunner(options: RemoteRunnerOptions): RemoteRunner {
  const { logger, instanceId, timeoutMs, readMaxBytes } = options;
  // Callers can repeat a call whose worker is down at will: logged per code,
  // the first of each window in full (metrics and the audit count each).
  const forwardFailures = createKeyedLogSampler(logger, {
    level: "warn",
    msg: "forwarded tool call failed",
    ...(options.timers === undefined ? {} : { timers: options.timers }),
  });
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
    const manager = workerSessionManager(url, {
      idleConnectionTimeoutMs: 60_000,
      pingIntervalMs: 30_000,
    });
    entry = {
      manager,
      client: createClient(
        BridgeService,
        createGrpcTransport({ baseUrl: url, sessionManager: manager, readMaxBytes }),
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

  /**
   * What the caller is told when forwarding fails. Callers see a tool's
   * name, never where its worker is: transport errors (which name the
   * address) are logged for the operator and summarized for the caller.
   */
  const forwardFailure = (
    tool: RegisteredTool,
    e: unknown,
    call: ToolCall,
    signal: AbortSignal,
  ): string => {
    const err = ConnectError.from(e);
    const target = tool.target as RemoteTarget;
    const correlationId = correlationIdIn(call);
    forwardFailures.report(
      { code: Code[err.code] },
      {
        session: redactSessionId(call.sessionId),
        tool: tool.name,
        worker: target.workerId,
        address: target.address.display,
        error: err.rawMessage,
        ...(correlationId === undefined ? {} : { correlation_id: correlationId }),
      },
    );
    switch (err.code) {
      case Code.Unavailable:
        return `the worker hosting tool '${tool.name}' is unreachable (unavailable); try again later`;
      case Code.DeadlineExceeded:
        return `the worker hosting tool '${tool.name}' did not answer within ${timeoutMs} ms (deadline_exceeded)`;
      case Code.Canceled:
        // Not cancelled by the caller: connect-node reports a connection
        // the worker ended under the call as canceled.
        if (!signal.aborted) {
          return `the connection to the worker hosting tool '${tool.name}' broke during the call; try again later`;
        }
        return `the call of tool '${tool.name}' was cancelled (canceled)`;
      default:
        if (!err.isWireError && brokenConnection(err)) {
          return `the connection to the worker hosting tool '${tool.name}' broke during the call; try again later`;
        }
        if (!err.isWireError) {
          // The bridge could not read the worker's reply (too big, not
          // protobuf, a broken stream): the parser's words, which may quote
          // the reply, are for the log only.
          return err.code === Code.ResourceExhausted
            ? `the worker hosting tool '${tool.name}' sent a reply over the ${readMaxBytes}-byte limit (--max-reply-bytes)`
            : `the worker hosting tool '${tool.name}' sent a reply the bridge could not read (${Code[err.code]})`;
        }
        // The worker's own status: meant for callers, but bounded.
        return `the worker hosting tool '${tool.name}' failed: ${clip(
          err.rawMessage.split(target.address.display).join("<worker>"),
          300,
        )} (${Code[err.code]})`;
    }
  };

  /**
   * The worker's client and the options of a call forwarded to it: the
   * forwarding path, and the correlation id in the header v0.13 workers read
   * (it is in the request's metadata too).
   */
  const forward = (
    tool: RegisteredTool,
    call: ToolCall,
    signal: AbortSignal,
    via: readonly string[],
  ) => {
    const headers: Record<string, string> = { [viaHeader]: [...via, instanceId].join(",") };
    const correlationId = correlationIdIn(call);
    if (correlationId !== undefined) headers[correlationHeader] = correlationId;
    return {
      client: workerClient((tool.target as RemoteTarget).address.url),
      options: { signal, timeoutMs, headers },
    };
  };

  return {
    pathOf(headers) {
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
    },

    async execute(tool, call, signal, via) {
      const { client, options } = forward(tool, call, signal, via);
      try {
        const response = await client.executeTool(
          {
            sessionId: call.sessionId,
            toolName: call.toolName,
            // snakepit workers read the raw JSON form (tool-value-form.ts).
            parameters: rawParameters(call.parameters),
            metadata: call.metadata,
            binaryParameters: call.binaryParameters,
          },
          options,
        );
        return {
          outcome: response.success ? "ok" : "error",
          result: response.result,
          binaryResult: response.binaryResult,
          error: response.errorMessage,
          metadata: response.metadata,
        };
      } catch (e) {
        return { outcome: "error", error: forwardFailure(tool, e, call, signal) };
      }
    },

    async *stream(tool, call, signal, via, finish) {
      const { client, options } = forward(tool, call, signal, via);
      try {
        for await (const chunk of client.executeStreamingTool(
          {
            sessionId: call.sessionId,
            toolName: call.toolName,
            // snakepit workers read the raw JSON form (tool-value-form.ts).
            parameters: rawParameters(call.parameters),
            metadata: call.metadata,
            stream: true,
            binaryParameters: call.binaryParameters,
          },
          options,
        )) {
          yield chunk;
        }
        finish("ok");
      } catch (e) {
        const message = forwardFailure(tool, e, call, signal);
        finish("error", message);
        yield finalChunk(1, null, { error: message });
      }
    },

    close() {
      for (const { manager } of workers.values()) manager.abort();
      workers.clear();
    },
  };
}

function rawParameters(parameters: Readonly<Record<string, Any>>): Record<string, Any> {
  const out: Record<string, Any> = {};
  for (const [k, v] of Object.entries(parameters)) out[k] = convertJsonAny(v, "raw-json");
  return out;
}

/**
 * Whether a failure the bridge raised itself (not the worker's status) is
 * the connection to the worker ending under the call (an HTTP/2 session or
 * stream closed with an error code, a reset, a hang-up), as opposed to a
 * reply it could not read. Matched on Node's and connect-node's texts,
 * which are for the log only; `test/hostile/workers.test.ts` pins both.
 */
function brokenConnection(err: ConnectError): boolean {
  return /(session|stream) closed|ECONNRESET|EPIPE|socket hang up|GOAWAY|NGHTTP2/i.test(
    err.rawMessage,
  );
}
