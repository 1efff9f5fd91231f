/**
 * Child process hosting what the load generators call: the bridge server
 * and, on another port of the same process, a bare echo service behind the
 * very same HTTP front (one port for h2c and HTTP/1.1, CORS, metrics
 * interceptor), so that "GetVariable vs echo" compares handlers, not fronts.
 */

import {
  type BridgeServer,
  createBridgeServer,
  createLogger,
  defaultServerConfig,
} from "unified-session-bridge/server";
import { serveRequests } from "../support/child-processes.ts";
import {
  BridgeService,
  binaryOnlyInterceptor,
  createHttpFront,
  createMetrics,
  createMetricsInterceptor,
  createRedisStore,
  type HttpFront,
  type RedisStore,
} from "../support/internals.ts";
import { cpuReading, memoryReading } from "../support/process-readings.ts";

/** Requests this worker answers. */
export type ServeRequest =
  | {
      readonly type: "start";
      readonly maxSessions?: number;
      /** Serve from a Redis store at this URL instead of the memory store. */
      readonly redisUrl?: string;
      /** More bridge options, e.g. `{ maxWatchersPerSession: 5000 }`. */
      readonly bridgeOptions?: Readonly<Record<string, number>>;
    }
  | { readonly type: "cpu" }
  /** Collects garbage first when the process runs with --expose-gc. */
  | { readonly type: "memory" }
  | { readonly type: "stop" };

/** Reply to `start`. */
export interface ServeAddresses {
  readonly bridgeUrl: string;
  readonly echoUrl: string;
}

// Warn and above only: an info line per call would not be a real setup
// either, and the bridge logs nothing per RPC at info anyway.
const logger = createLogger({ level: "warn" });

let bridge: BridgeServer | undefined;
let echo: HttpFront | undefined;

let store: RedisStore | undefined;

async function start(
  maxSessions: number,
  redisUrl?: string,
  bridgeOptions: Readonly<Record<string, number>> = {},
): Promise<ServeAddresses> {
  store =
    redisUrl === undefined
      ? undefined
      : await createRedisStore({ url: redisUrl, keyPrefix: "bench:" });
  bridge = createBridgeServer({
    host: "127.0.0.1",
    port: 0,
    logger,
    maxSessions,
    ...bridgeOptions,
    ...(store === undefined ? {} : { sessionStore: store }),
  });
  const { url: bridgeUrl } = await bridge.start();
  const metrics = createMetrics();
  echo = createHttpFront({
    host: "127.0.0.1",
    port: 0,
    // Only Ping: the handler does nothing but answer the request.
    routes: (router) => {
      router.service(BridgeService, { ping: (req) => ({ message: req.message }) });
    },
    // The bridge's own interceptors (bridge-server.ts), so only the handler differs.
    interceptors: [createMetricsInterceptor(metrics), binaryOnlyInterceptor],
    corsOrigins: defaultServerConfig.corsOrigins,
    maxRequestBytes: defaultServerConfig.maxRequestBytes,
    health: () => ({ ok: true }),
    metrics,
    logger,
  });
  const { port } = await echo.listen();
  return { bridgeUrl, echoUrl: `http://127.0.0.1:${port}` };
}

async function stop(): Promise<void> {
  const b = bridge;
  const e = echo;
  bridge = undefined;
  echo = undefined;
  await Promise.all([b?.stop(), e?.close({ graceMs: 1000 })]);
  await store?.close();
  store = undefined;
}

serveRequests(async (raw) => {
  const req = raw as ServeRequest;
  switch (req.type) {
    case "start":
      return start(
        req.maxSessions ?? defaultServerConfig.maxSessions,
        req.redisUrl,
        req.bridgeOptions,
      );
    case "cpu":
      return cpuReading();
    case "memory":
      return memoryReading();
    case "stop":
      await stop();
      return null;
  }
}, stop);
