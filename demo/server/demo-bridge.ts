import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { BridgeService } from "../../src/gen/snakepit/bridge/bridge_pb.ts";
import { createBridgeServer, createLogger, type Logger } from "../../src/server/index.ts";
import { decodeJsonAny, encodeJsonAny } from "../../src/values/index.ts";
import type { ToolCall } from "./python-module.ts";
import { createSpamProgram } from "./spam-program.ts";
import { createSpamTools } from "./spam-tools.ts";

/** A running demo bridge. */
export interface DemoBridge {
  readonly url: string;
  readonly port: number;
  /** The worker listener (host:port), where a Python worker registers its tools. */
  readonly workerTarget: string;
  stop(): Promise<void>;
}

/**
 * The training rows the bridge sends the Python worker's module reach
 * about 8 MiB for the largest featurizations (two million non-zeros at
 * 3 bytes each); the default request limit is 4 MiB.
 */
export const MAX_REQUEST_BYTES = 16 * 1024 * 1024;

/**
 * The bridge server of the demo: the library's server with its in-memory
 * store, the built-in tools and the spam program's tools, and a worker
 * listener on which a Python worker may register its classifier module.
 */
export async function startDemoBridge(options: {
  host: string;
  port: number;
  workerPort: number;
  corsOrigins: readonly string[];
  logLevel: Logger["level"];
}): Promise<DemoBridge> {
  // The evaluation tool reaches the Python worker's tool the way any client
  // does: a call to the bridge, which forwards it to the worker.
  let callTool: ToolCall = () => Promise.reject(new Error("the bridge is not started"));
  const server = createBridgeServer({
    host: options.host,
    port: options.port,
    workerHost: options.host,
    workerPort: options.workerPort,
    maxRequestBytes: MAX_REQUEST_BYTES,
    corsOrigins: [...options.corsOrigins],
    shutdownGraceMs: 1000,
    logger: createLogger({ level: options.logLevel }),
    tools: createSpamTools(createSpamProgram({ callTool: (call) => callTool(call) })),
  });
  const { url, port, workerUrl } = await server.start();
  callTool = loopbackToolCall(url);
  return {
    url,
    port,
    workerTarget: new URL(workerUrl ?? url).host,
    stop: () => server.stop(),
  };
}

/**
 * A {@link ToolCall} through the bridge at `url`: the evaluation tool
 * reaches the Python worker's tool the way any client does, with a call to
 * the bridge, which forwards it to the worker.
 */
export function loopbackToolCall(url: string): ToolCall {
  const client = createClient(
    BridgeService,
    createGrpcTransport({ baseUrl: url, writeMaxBytes: MAX_REQUEST_BYTES }),
  );
  return async ({ sessionId, tool, args, binary, signal }) => {
    const reply = await client.executeTool(
      {
        sessionId,
        toolName: tool,
        parameters: Object.fromEntries(Object.entries(args).map(([k, v]) => [k, encodeJsonAny(v)])),
        binaryParameters: { ...binary },
      },
      signal === undefined ? {} : { signal },
    );
    if (!reply.success) throw new Error(reply.errorMessage);
    return reply.result === undefined ? null : decodeJsonAny(reply.result);
  };
}
