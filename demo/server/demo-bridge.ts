import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { BridgeService } from "../../src/gen/snakepit/bridge/bridge_pb.ts";
import {
  type BridgeServer,
  createBridgeServer,
  createLogger,
  createMemoryStore,
  type Logger,
  type PoolWorkerInfo,
  type WorkerPoolConfig,
} from "../../src/server/index.ts";
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
  /** Whether the bridge server listens right now (false between stopServer and startServer). */
  readonly listening: boolean;
  /** The Python worker the bridge runs (none while it is stopped). */
  pythonWorkers(): PoolWorkerInfo[];
  /**
   * Stops the bridge server, as an outage would: watch streams end, new
   * connections are refused. The sessions stay in the store.
   */
  stopServer(): Promise<void>;
  /**
   * Starts a new bridge server on the same ports with the same store: the
   * sessions, their variables and versions are as they were. Tools that
   * workers registered are not (each server has its own registry): its
   * own Python worker starts again with it.
   */
  startServer(): Promise<void>;
  /** Stops the bridge server and closes the store. */
  stop(): Promise<void>;
}

/**
 * The training rows the bridge sends the Python worker's module reach
 * about 8 MiB for the largest featurizations (two million non-zeros at
 * 3 bytes each); the default request limit is 4 MiB.
 */
export const MAX_REQUEST_BYTES = 16 * 1024 * 1024;

/**
 * The bridge server of the demo: the library's server with an in-memory
 * store, the built-in tools and the spam program's tools, and a worker
 * listener: the bridge runs the demo's Python worker (its classifier module)
 * in its worker pool, and other workers may register tools there.
 *
 * The store is made here and handed to the server (`sessionStore`), so it
 * outlives the server: {@link DemoBridge.stopServer} and
 * {@link DemoBridge.startServer} play a real outage of the bridge (a new
 * server, new connections, new watch streams) without losing the sessions,
 * as a restarted replica on the shared Redis store would.
 */
export async function startDemoBridge(options: {
  host: string;
  port: number;
  workerPort: number;
  corsOrigins: readonly string[];
  logLevel: Logger["level"];
  /** Who may use a session (see `--access`); default session-id. */
  access?: "tokens" | "session-id";
  /** Keys that sign access tokens, the same for every server of this bridge. */
  tokenKeys?: readonly string[];
  /** The Python worker the bridge runs in its worker pool, if any. */
  workers?: WorkerPoolConfig;
}): Promise<DemoBridge> {
  // The evaluation tool reaches the Python worker's tool the way any client
  // does: a call to the bridge, which forwards it to the worker.
  let callTool: ToolCall = () => Promise.reject(new Error("the bridge is not started"));
  // One program (its corpus and caches) and one store for every server.
  const tools = createSpamTools(createSpamProgram({ callTool: (call) => callTool(call) }));
  const store = createMemoryStore();
  const logger = createLogger({ level: options.logLevel });
  const serve = async (port: number, workerPort: number) => {
    const server = createBridgeServer({
      host: options.host,
      port,
      workerHost: options.host,
      workerPort,
      maxRequestBytes: MAX_REQUEST_BYTES,
      corsOrigins: [...options.corsOrigins],
      shutdownGraceMs: 1000,
      logger,
      sessionStore: store,
      tools,
      access: options.access ?? "session-id",
      tokenKeys: [...(options.tokenKeys ?? [])],
      ...(options.workers === undefined ? {} : { workers: options.workers }),
    });
    return { server, addresses: await server.start() };
  };

  let first: Awaited<ReturnType<typeof serve>>;
  try {
    first = await serve(options.port, options.workerPort);
  } catch (error) {
    await store.close();
    throw error;
  }
  const { url, port, workerUrl } = first.addresses;
  // The same ports every time, also when the first start picked free ones.
  const workerPort = workerUrl === undefined ? options.workerPort : Number(new URL(workerUrl).port);
  callTool = loopbackToolCall(workerUrl ?? url);

  let server: BridgeServer | undefined = first.server;
  let closed = false;
  // One change at a time: a stop asked for during a start waits for it.
  let turn: Promise<unknown> = Promise.resolve();
  const serially = (change: () => Promise<void>): Promise<void> => {
    const next = turn.then(change);
    turn = next.catch(() => undefined);
    return next;
  };
  const stopServer = () =>
    serially(async () => {
      const running = server;
      server = undefined;
      await running?.stop();
    });

  return {
    url,
    port,
    workerTarget: new URL(workerUrl ?? url).host,
    get listening() {
      return server !== undefined;
    },
    pythonWorkers: () => server?.workers() ?? [],
    stopServer,
    startServer: () =>
      serially(async () => {
        if (closed) throw new Error("the demo bridge is stopped");
        if (server !== undefined) return;
        server = (await serve(port, workerPort)).server;
      }),
    async stop() {
      closed = true;
      await stopServer();
      await store.close();
    },
  };
}

/**
 * A {@link ToolCall} through the bridge at `url`: the evaluation tool
 * reaches the Python worker's tool the way any client does, with a call to
 * the bridge, which forwards it to the worker. Give the worker listener's
 * URL: a call from the server itself needs no access token there.
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
