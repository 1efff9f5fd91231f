/**
 * The parts of the build that benchmarks need and the package does not
 * export, in one place: the generated service and messages (for clients
 * that make raw calls), the pieces a bare echo server is assembled from,
 * the Redis store, and what fills a store directly. Everything else the
 * benchmarks import by the package's own name (`unified-session-bridge`,
 * `unified-session-bridge/server`, `unified-session-bridge/values`), as users do; those
 * resolve to `dist/` too, through the package's exports.
 */
export {
  BatchGetVariablesRequestSchema,
  BridgeService,
  GetVariableRequestSchema,
  PingRequestSchema,
  SetVariableRequestSchema,
  type VariableUpdate,
  VariableUpdateSchema,
  WatchVariablesRequestSchema,
} from "../../dist/gen/snakepit/bridge/bridge_pb.js";
export { binaryOnlyInterceptor } from "../../dist/server/edge/binary-only.js";
export { createHttpFront, type HttpFront } from "../../dist/server/edge/http-front.js";
export {
  createMetrics,
  createMetricsInterceptor,
} from "../../dist/server/observability/metrics.js";
export { toVariableMessage } from "../../dist/server/session/variable-message.js";
export { createVariableOps } from "../../dist/server/session/variable-ops.js";
export {
  createRedisStore,
  type FeedRead,
  type RedisStore,
} from "../../dist/server/store/redis-store.js";
