/**
 * The unified-bridge server for Node: a snakepit-compatible BridgeService
 * over gRPC, gRPC-Web and Connect on one port.
 *
 * @example
 * ```ts
 * import { createBridgeServer } from "unified-session-bridge/server";
 *
 * const server = createBridgeServer({ port: 50051, corsOrigins: ["http://localhost:5173"] });
 * await server.start();
 * process.on("SIGTERM", () => void server.stop());
 * ```
 *
 * Several replicas serve the same sessions from one Redis:
 * ```ts
 * const sessionStore = await createRedisStore({ url: "redis://127.0.0.1:6379/0" });
 * const server = createBridgeServer({ sessionStore });
 * ```
 * @module
 */

export type { Caller } from "./access/caller.js";
export { callerKey } from "./access/caller.js";
export type { BridgeAddresses, BridgeServer, BridgeServerOptions } from "./bridge-server.js";
export { createBridgeServer } from "./bridge-server.js";
export type { RedisStoreConfig, ServerConfig } from "./config/config.js";
export { defaultServerConfig, parseServerConfig } from "./config/config.js";
export type { Limits } from "./limits/limits.js";
export { defaultLimits } from "./limits/limits.js";
export type { Logger } from "./observability/logger.js";
export { createLogger, redactSessionId } from "./observability/logger.js";
export type { MetricsRegistry } from "./observability/metrics.js";
export type { MemoryStoreOptions } from "./store/memory-store.js";
export { createMemoryStore } from "./store/memory-store.js";

import type { RedisStore, RedisStoreOptions } from "./store/redis-store.js";

export type { FeedAppended, RedisStore, RedisStoreOptions } from "./store/redis-store.js";

/**
 * Opens a Redis session store (see `./store/redis-store.ts`) to pass as
 * `sessionStore`. The Redis client (ioredis) is loaded on this first call,
 * not when this module is imported: a bridge on the memory store never
 * loads it.
 */
export async function createRedisStore(options: RedisStoreOptions): Promise<RedisStore> {
  const { createRedisStore: open } = await import("./store/redis-store.js");
  return open(options);
}
export type { ServerTimers, TimerHandle } from "./common/timers.js";
export { systemTimers } from "./common/timers.js";
export type {
  DependencyEdge,
  HistoryRecord,
  OptimizationLock,
  SessionEndReason,
  SessionInit,
  SessionRecord,
  SessionStore,
  SessionTransaction,
  SessionView,
  StoreEvent,
  VariableChange,
  VariableRecord,
} from "./store/session-store.js";
export type { AuditAction, AuditEntry, AuditFilter, ToolOutcome } from "./tools/audit-trail.js";
export {
  builtinTools,
  conversationAppendTool,
  conversationHistoryTool,
  exportVariablesTool,
  incrementVariableTool,
} from "./tools/builtin-tools.js";
export type {
  ToolArguments,
  ToolContext,
  ToolDefinition,
  ToolParameter,
  ToolParameterType,
  ToolSession,
  ToolVariable,
} from "./tools/tool-definition.js";
export type { RegisteredWorker, WorkerState } from "./tools/worker-liveness.js";
export { splitCommandLine } from "./workers/command-line.js";
export type { PoolWorkerInfo, PoolWorkerState } from "./workers/pool-worker.js";
export type { WorkerPoolConfig } from "./workers/worker-pool.js";
