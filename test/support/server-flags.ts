import type { ServerConfig } from "../../src/server/index.js";

/**
 * Every ServerConfig key with the flag and environment variable users set it
 * with, written out independently of config.ts so the suites check the
 * documented names, not the implementation's own table.
 */
export const serverFlags: Record<keyof ServerConfig, { flag: string; env: string }> = {
  host: { flag: "--host", env: "UB_HOST" },
  port: { flag: "--port", env: "UB_PORT" },
  corsOrigins: { flag: "--cors-origin", env: "UB_CORS_ORIGINS" },
  corsAllowHeaders: { flag: "--cors-allow-headers", env: "UB_CORS_ALLOW_HEADERS" },
  sessionTtlSeconds: { flag: "--session-ttl", env: "UB_SESSION_TTL" },
  autoCreateSessions: { flag: "--auto-create-sessions", env: "UB_AUTO_CREATE_SESSIONS" },
  maxSessions: { flag: "--max-sessions", env: "UB_MAX_SESSIONS" },
  maxVariablesPerSession: {
    flag: "--max-variables-per-session",
    env: "UB_MAX_VARIABLES_PER_SESSION",
  },
  maxValueBytes: { flag: "--max-value-bytes", env: "UB_MAX_VALUE_BYTES" },
  maxMetadataEntries: { flag: "--max-metadata-entries", env: "UB_MAX_METADATA_ENTRIES" },
  maxMetadataBytes: { flag: "--max-metadata-bytes", env: "UB_MAX_METADATA_BYTES" },
  historyLimit: { flag: "--history-limit", env: "UB_HISTORY_LIMIT" },
  watchBufferSize: { flag: "--watch-buffer-size", env: "UB_WATCH_BUFFER_SIZE" },
  watchKeepaliveMs: { flag: "--watch-keepalive-ms", env: "UB_WATCH_KEEPALIVE_MS" },
  maxRequestBytes: { flag: "--max-request-bytes", env: "UB_MAX_REQUEST_BYTES" },
  shutdownGraceMs: { flag: "--shutdown-grace-ms", env: "UB_SHUTDOWN_GRACE_MS" },
  logLevel: { flag: "--log-level", env: "UB_LOG_LEVEL" },
  store: { flag: "--store", env: "UB_STORE" },
  storeKeyPrefix: { flag: "--store-key-prefix", env: "UB_STORE_KEY_PREFIX" },
  storeConnectTimeoutMs: { flag: "--store-connect-timeout-ms", env: "UB_STORE_CONNECT_TIMEOUT_MS" },
  maxSessionsPerClient: { flag: "--max-sessions-per-client", env: "UB_MAX_SESSIONS_PER_CLIENT" },
  trustedProxies: { flag: "--trusted-proxy", env: "UB_TRUSTED_PROXIES" },
  workerHost: { flag: "--worker-host", env: "UB_WORKER_HOST" },
  workerPort: { flag: "--worker-port", env: "UB_WORKER_PORT" },
  workerToken: { flag: "--worker-token", env: "UB_WORKER_TOKEN" },
  workerAllow: { flag: "--worker-allow", env: "UB_WORKER_ALLOW" },
  adminHost: { flag: "--admin-host", env: "UB_ADMIN_HOST" },
  adminPort: { flag: "--admin-port", env: "UB_ADMIN_PORT" },
  clientSessionIds: { flag: "--client-session-ids", env: "UB_CLIENT_SESSION_IDS" },
  maxSessionTtlSeconds: { flag: "--max-session-ttl", env: "UB_MAX_SESSION_TTL" },
  historyMaxBytes: { flag: "--history-max-bytes", env: "UB_HISTORY_MAX_BYTES" },
  maxSessionBytes: { flag: "--max-session-bytes", env: "UB_MAX_SESSION_BYTES" },
  maxWatchersPerSession: { flag: "--max-watchers-per-session", env: "UB_MAX_WATCHERS_PER_SESSION" },
  maxWatchers: { flag: "--max-watchers", env: "UB_MAX_WATCHERS" },
  maxToolsPerSession: { flag: "--max-tools-per-session", env: "UB_MAX_TOOLS_PER_SESSION" },
  maxTools: { flag: "--max-tools", env: "UB_MAX_TOOLS" },
  maxToolBytes: { flag: "--max-tool-bytes", env: "UB_MAX_TOOL_BYTES" },
  maxToolCallsPerSession: {
    flag: "--max-tool-calls-per-session",
    env: "UB_MAX_TOOL_CALLS_PER_SESSION",
  },
  maxWorkerConnections: { flag: "--max-worker-connections", env: "UB_MAX_WORKER_CONNECTIONS" },
  maxReplyBytes: { flag: "--max-reply-bytes", env: "UB_MAX_REPLY_BYTES" },
  maxConnections: { flag: "--max-connections", env: "UB_MAX_CONNECTIONS" },
  maxStreamsPerConnection: {
    flag: "--max-streams-per-connection",
    env: "UB_MAX_STREAMS_PER_CONNECTION",
  },
  idleTimeoutMs: { flag: "--idle-timeout-ms", env: "UB_IDLE_TIMEOUT_MS" },
  headersTimeoutMs: { flag: "--headers-timeout-ms", env: "UB_HEADERS_TIMEOUT_MS" },
  requestTimeoutMs: { flag: "--request-timeout-ms", env: "UB_REQUEST_TIMEOUT_MS" },
  writeStallTimeoutMs: { flag: "--write-stall-timeout-ms", env: "UB_WRITE_STALL_TIMEOUT_MS" },
};

/** How `serve --help` shows a default value. */
export function shownDefault(value: unknown): string {
  if (Array.isArray(value)) return value.length === 0 ? "none" : value.join(",");
  if (value === null) return "off";
  if (value === "") return "none";
  return String(value);
}
