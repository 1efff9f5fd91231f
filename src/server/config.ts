/**
 * Server configuration from command-line flags and `UB_*` environment
 * variables (a flag wins over its variable), validated up front so a bad value
 * stops the server at startup with a message naming the flag, the variable and
 * what is accepted.
 */
import { isIP } from "node:net";
import { defaultConnectionLimits, defaultCorsAllowHeaders } from "./http-front.js";
import { defaultLimits } from "./limits.js";
import { isLogLevel, type LogLevel, logLevels } from "./logger.js";
import { parseRedisUrl } from "./redis-url.js";
import { parseAddressPattern } from "./tools/worker-address.js";

/** Everything `unified-bridge serve` can be told. */
export interface ServerConfig {
  /** Interface to bind; "0.0.0.0" in containers. */
  host: string;
  /** TCP port for every protocol; 0 picks a free one. Public callers: anonymous, bounded. */
  port: number;
  /** Interface of the worker listener; keep it internal (loopback or a private network). */
  workerHost: string;
  /**
   * Port of the worker listener, which serves the same RPCs to trusted
   * callers (Python workers may RegisterTools there); 0 picks a free one,
   * null turns the listener off.
   */
  workerPort: number | null;
  /**
   * Bearer token that makes a caller on the public port a worker
   * (`authorization: Bearer <token>`); "" accepts none.
   */
  workerToken: string;
  /** host:port patterns a registered tool's worker_address must match. */
  workerAllow: string[];
  /** Interface of the admin listener (GET /healthz, GET /metrics). */
  adminHost: string;
  /** Port of the admin listener; 0 picks a free one, null turns it off. */
  adminPort: number | null;
  /**
   * Let public callers create sessions under ids they choose (at least 16
   * characters of [A-Za-z0-9_-]). When false, only the server mints ids for
   * public callers; existing sessions can still be reopened by id.
   */
  clientSessionIds: boolean;
  /** Live sessions one public client may have created. */
  maxSessionsPerClient: number;
  /** Proxy addresses (e.g. Envoy's) whose x-forwarded-for names the client. */
  trustedProxies: string[];
  /** Origins browsers may call from directly (exact `scheme://host[:port]`; "*" = any). */
  corsOrigins: string[];
  /** Request headers a cross-origin call may send (CORS preflight answer), lower case. */
  corsAllowHeaders: string[];
  /** Sliding session lifetime in seconds. */
  sessionTtlSeconds: number;
  /** Longest sliding lifetime a client may ask for (ttl_seconds). */
  maxSessionTtlSeconds: number;
  /** Create a session on first use of an unknown id instead of NOT_FOUND. */
  autoCreateSessions: boolean;
  maxSessions: number;
  maxVariablesPerSession: number;
  /** Largest encoded variable value. */
  maxValueBytes: number;
  maxMetadataEntries: number;
  maxMetadataBytes: number;
  /** Versions kept per variable for GetVariableHistory/RollbackVariable. */
  historyLimit: number;
  /** Bytes of past values kept per variable; the oldest go first. */
  historyMaxBytes: number;
  /** Bytes one session may hold: values, history and tool data together. */
  maxSessionBytes: number;
  maxWatchersPerSession: number;
  /** Watch streams across all sessions. */
  maxWatchers: number;
  /** Session-scoped tools one session may hold. */
  maxToolsPerSession: number;
  /** Remote tools registered by workers, global and session-scoped together. */
  maxTools: number;
  /** Size of one tool registration: name, description, parameters, metadata. */
  maxToolBytes: number;
  /** Tool calls of one session running at once. */
  maxToolCallsPerSession: number;
  /** Worker connections kept open for forwarding; the least recently used is closed first. */
  maxWorkerConnections: number;
  /** Updates buffered per watcher before it is ended with RESOURCE_EXHAUSTED. */
  watchBufferSize: number;
  /** An idle watch stream carries a keepalive update at least this often (0: never). */
  watchKeepaliveMs: number;
  /** Transport read limit per message. */
  maxRequestBytes: number;
  /** Largest reply message. */
  maxReplyBytes: number;
  /** Open connections per listener. */
  maxConnections: number;
  /** HTTP/2 streams in flight on one connection (SETTINGS_MAX_CONCURRENT_STREAMS). */
  maxStreamsPerConnection: number;
  /** A connection with no call in flight for this long is closed. */
  idleTimeoutMs: number;
  /** Time a new connection or HTTP/1 request gets to send its headers. */
  headersTimeoutMs: number;
  /** Time a call gets to send its whole request. */
  requestTimeoutMs: number;
  /** A reply the peer stops reading for this long is reset. */
  writeStallTimeoutMs: number;
  /** How long shutdown waits for in-flight calls before closing connections. */
  shutdownGraceMs: number;
  logLevel: LogLevel;
  /**
   * Where sessions live: "memory" (this process only) or a Redis server.
   * An embedder opening a Redis store passes it as `sessionStore`.
   */
  store: "memory" | RedisStoreConfig;
  /** Prefix of every key a Redis store writes, so deployments can share one Redis. */
  storeKeyPrefix: string;
  /** How long startup waits for the store to connect before it gives up. */
  storeConnectTimeoutMs: number;
}

/** `store` when sessions live in Redis. */
export interface RedisStoreConfig {
  readonly kind: "redis";
  /**
   * Canonical `redis://` or `rediss://` URL, password included: hand it to
   * the store only, and show `parseRedisUrl(url).redacted` instead.
   */
  readonly url: string;
}

const MiB = 1024 * 1024;

/** The configuration used for anything not given by a flag or variable. */
export const defaultServerConfig: ServerConfig = Object.freeze({
  host: "127.0.0.1",
  port: 50051,
  workerHost: "127.0.0.1",
  workerPort: 50052,
  workerToken: "",
  workerAllow: Object.freeze(["127.0.0.1:*", "[::1]:*", "localhost:*"]) as unknown as string[],
  adminHost: "127.0.0.1",
  adminPort: 9464,
  clientSessionIds: true,
  maxSessionsPerClient: defaultLimits.maxSessionsPerClient,
  trustedProxies: Object.freeze([]) as unknown as string[],
  corsOrigins: Object.freeze([]) as unknown as string[],
  corsAllowHeaders: defaultCorsAllowHeaders as string[],
  sessionTtlSeconds: 1800,
  maxSessionTtlSeconds: defaultLimits.maxSessionTtlSeconds,
  autoCreateSessions: false,
  maxSessions: defaultLimits.maxSessions,
  maxVariablesPerSession: defaultLimits.maxVariablesPerSession,
  maxValueBytes: defaultLimits.maxValueBytes,
  maxMetadataEntries: defaultLimits.maxMetadataEntries,
  maxMetadataBytes: defaultLimits.maxMetadataBytes,
  historyLimit: defaultLimits.historyLimit,
  historyMaxBytes: defaultLimits.historyMaxBytes,
  maxSessionBytes: defaultLimits.maxSessionBytes,
  maxWatchersPerSession: defaultLimits.maxWatchersPerSession,
  maxWatchers: defaultLimits.maxWatchers,
  maxToolsPerSession: defaultLimits.maxToolsPerSession,
  maxTools: defaultLimits.maxTools,
  maxToolBytes: defaultLimits.maxToolBytes,
  maxToolCallsPerSession: defaultLimits.maxToolCallsPerSession,
  maxWorkerConnections: 64,
  watchBufferSize: 1024,
  watchKeepaliveMs: 30_000,
  maxRequestBytes: 4 * MiB,
  maxReplyBytes: defaultLimits.maxReplyBytes,
  maxConnections: defaultConnectionLimits.maxConnections,
  maxStreamsPerConnection: defaultConnectionLimits.maxStreamsPerConnection,
  idleTimeoutMs: defaultConnectionLimits.idleTimeoutMs,
  headersTimeoutMs: defaultConnectionLimits.headersTimeoutMs,
  requestTimeoutMs: defaultConnectionLimits.requestTimeoutMs,
  writeStallTimeoutMs: defaultConnectionLimits.writeStallTimeoutMs,
  shutdownGraceMs: 10_000,
  logLevel: "info",
  store: "memory",
  storeKeyPrefix: "ub:",
  storeConnectTimeoutMs: 5000,
}) as ServerConfig;

type Key = keyof ServerConfig;

interface OptionSpec<K extends Key> {
  readonly key: K;
  readonly flag: string;
  readonly env: string;
  readonly placeholder: string;
  readonly description: string;
  /** Turns one raw string into the value; throws a message without the source prefix. */
  readonly parse: (raw: string) => ServerConfig[K];
  /** Several occurrences of the flag accumulate (`--cors-origin a --cors-origin b`). */
  readonly repeatable?: true;
  readonly boolean?: true;
  /** Never shown in help or messages. */
  readonly secret?: true;
}

// connect-node rejects read limits above 2^32 - 1 bytes.
const maxBytesLimit = 0xffff_ffff;

const options: readonly OptionSpec<Key>[] = [
  spec({
    key: "host",
    flag: "host",
    placeholder: "<address>",
    description: "Interface of the public listener; use 0.0.0.0 in containers.",
    parse: nonEmpty,
  }),
  spec({
    key: "port",
    flag: "port",
    placeholder: "<n>",
    description:
      "TCP port serving gRPC (HTTP/2 cleartext), gRPC-Web and Connect (HTTP/1.1 and HTTP/2); 0 picks a free port.",
    parse: (raw) => integer(raw, 0, 65_535),
  }),
  spec({
    key: "workerHost",
    flag: "worker-host",
    placeholder: "<address>",
    description:
      "Interface of the worker listener. Keep it internal: every caller there is trusted as a worker.",
    parse: nonEmpty,
  }),
  spec({
    key: "workerPort",
    flag: "worker-port",
    placeholder: "<n|off>",
    description:
      'Port of the worker listener (the same RPCs, for trusted workers: RegisterTools is allowed there); 0 picks a free port, "off" turns it off.',
    parse: portOrOff,
  }),
  spec({
    key: "workerToken",
    flag: "worker-token",
    placeholder: "<token>",
    description:
      "Secret that makes a caller on the public port a worker when sent as authorization: Bearer <token>; at least 32 characters. Unset: no caller on the public port is a worker.",
    parse: (raw) => {
      const t = raw.trim();
      if (t.length < 32)
        throw new Error("must be at least 32 characters (use e.g. openssl rand -hex 32)");
      if (!/^[\x21-\x7e]+$/.test(t)) throw new Error("must be printable ASCII without spaces");
      return t;
    },
    secret: true,
  }),
  spec({
    key: "workerAllow",
    flag: "worker-allow",
    placeholder: "<host:port>",
    description:
      'Where registered tools may send calls: host:port patterns a worker_address must match, e.g. 10.0.0.7:50100, *.workers.internal:*, 127.0.0.1:50100-50199 ("*" for any host or port); repeat the flag or separate with commas. The bridge\'s own ports are always refused.',
    parse: workerAllowList,
    repeatable: true,
  }),
  spec({
    key: "adminHost",
    flag: "admin-host",
    placeholder: "<address>",
    description: "Interface of the admin listener (GET /healthz, GET /metrics).",
    parse: nonEmpty,
  }),
  spec({
    key: "adminPort",
    flag: "admin-port",
    placeholder: "<n|off>",
    description: 'Port of the admin listener; 0 picks a free port, "off" turns it off.',
    parse: portOrOff,
  }),
  spec({
    key: "clientSessionIds",
    flag: "client-session-ids",
    placeholder: "[true|false]",
    description:
      "Let public callers create sessions under ids they choose (16 to 256 characters of A-Z a-z 0-9 _ -). false: the server mints every new id on the public port (existing sessions can still be reopened by id); use false in production.",
    parse: boolean,
    boolean: true,
  }),
  spec({
    key: "maxSessionsPerClient",
    flag: "max-sessions-per-client",
    placeholder: "<n>",
    description:
      "Live sessions one public client (by address; see --trusted-proxy) may have created; more fail with RESOURCE_EXHAUSTED, so one client cannot fill the session table.",
    parse: (raw) => integer(raw, 1),
  }),
  spec({
    key: "trustedProxies",
    flag: "trusted-proxy",
    env: "UB_TRUSTED_PROXIES",
    placeholder: "<ip>",
    description:
      "Address of a proxy in front of the bridge (e.g. Envoy) whose x-forwarded-for names the client; repeat the flag or separate with commas.",
    parse: (raw) =>
      raw
        .split(",")
        .map((a) => a.trim())
        .filter((a) => a !== "")
        .map((a) => {
          if (isIP(a) === 0) throw new Error(`"${a}" is not an IP address`);
          return a;
        }),
    repeatable: true,
  }),
  spec({
    key: "corsOrigins",
    flag: "cors-origin",
    env: "UB_CORS_ORIGINS",
    placeholder: "<origin>",
    description:
      'Origin allowed to call from a browser, e.g. http://localhost:5173; repeat the flag or separate with commas. "*" allows any origin.',
    parse: origins,
    repeatable: true,
  }),
  spec({
    key: "corsAllowHeaders",
    flag: "cors-allow-headers",
    placeholder: "<header,...>",
    description:
      "Request headers browsers may send cross-origin (the preflight's Access-Control-Allow-Headers); the list replaces the default, so include the protocol headers; repeat the flag or separate with commas.",
    parse: headerNames,
    repeatable: true,
  }),
  spec({
    key: "sessionTtlSeconds",
    flag: "session-ttl",
    placeholder: "<seconds>",
    description: "Seconds a session lives after its last use.",
    parse: (raw) => integer(raw, 1, 365 * 24 * 3600),
  }),
  spec({
    key: "maxSessionTtlSeconds",
    flag: "max-session-ttl",
    placeholder: "<seconds>",
    description: "Longest session lifetime a client may ask for with ttl_seconds.",
    parse: (raw) => integer(raw, 1, 365 * 24 * 3600),
  }),
  spec({
    key: "autoCreateSessions",
    flag: "auto-create-sessions",
    placeholder: "[true|false]",
    description:
      "Create a session on first use of an unknown id instead of failing with NOT_FOUND.",
    parse: boolean,
    boolean: true,
  }),
  spec({
    key: "maxSessions",
    flag: "max-sessions",
    placeholder: "<n>",
    description: "Sessions held at once; InitializeSession fails with RESOURCE_EXHAUSTED beyond.",
    parse: (raw) => integer(raw, 1),
  }),
  spec({
    key: "maxVariablesPerSession",
    flag: "max-variables-per-session",
    placeholder: "<n>",
    description: "Variables per session.",
    parse: (raw) => integer(raw, 1),
  }),
  spec({
    key: "maxValueBytes",
    flag: "max-value-bytes",
    placeholder: "<size>",
    description: "Largest encoded variable value (bytes, or with KiB/MiB/GiB).",
    parse: (raw) => bytes(raw),
  }),
  spec({
    key: "maxMetadataEntries",
    flag: "max-metadata-entries",
    placeholder: "<n>",
    description: "Metadata entries per session or variable.",
    parse: (raw) => integer(raw, 0),
  }),
  spec({
    key: "maxMetadataBytes",
    flag: "max-metadata-bytes",
    placeholder: "<size>",
    description: "Total metadata size per session or variable (bytes, or with KiB/MiB).",
    parse: (raw) => bytes(raw, 0),
  }),
  spec({
    key: "historyLimit",
    flag: "history-limit",
    placeholder: "<n>",
    description: "Versions kept per variable for history and rollback.",
    parse: (raw) => integer(raw, 1),
  }),
  spec({
    key: "historyMaxBytes",
    flag: "history-max-bytes",
    placeholder: "<size>",
    description: "Bytes of past values kept per variable; the oldest versions go first.",
    parse: (raw) => bytes(raw, 0),
  }),
  spec({
    key: "maxSessionBytes",
    flag: "max-session-bytes",
    placeholder: "<size>",
    description:
      "Bytes one session may hold (values, history and tool data); writes beyond fail with RESOURCE_EXHAUSTED, history is trimmed first.",
    parse: (raw) => bytes(raw),
  }),
  spec({
    key: "maxWatchersPerSession",
    flag: "max-watchers-per-session",
    placeholder: "<n>",
    description: "Watch streams open on one session.",
    parse: (raw) => integer(raw, 1),
  }),
  spec({
    key: "maxWatchers",
    flag: "max-watchers",
    placeholder: "<n>",
    description: "Watch streams open across all sessions.",
    parse: (raw) => integer(raw, 1),
  }),
  spec({
    key: "maxToolsPerSession",
    flag: "max-tools-per-session",
    placeholder: "<n>",
    description: "Session-scoped tools one session may hold.",
    parse: (raw) => integer(raw, 0),
  }),
  spec({
    key: "maxTools",
    flag: "max-tools",
    placeholder: "<n>",
    description: "Remote tools registered by workers, global and session-scoped together.",
    parse: (raw) => integer(raw, 0),
  }),
  spec({
    key: "maxToolBytes",
    flag: "max-tool-bytes",
    placeholder: "<size>",
    description: "Size of one tool registration (name, description, parameters, metadata).",
    parse: (raw) => bytes(raw),
  }),
  spec({
    key: "maxToolCallsPerSession",
    flag: "max-tool-calls-per-session",
    placeholder: "<n>",
    description: "Tool calls of one session running at once; more fail with RESOURCE_EXHAUSTED.",
    parse: (raw) => integer(raw, 1),
  }),
  spec({
    key: "maxWorkerConnections",
    flag: "max-worker-connections",
    placeholder: "<n>",
    description:
      "Worker connections kept open for forwarded calls; the least recently used one is closed beyond.",
    parse: (raw) => integer(raw, 1),
  }),
  spec({
    key: "watchBufferSize",
    flag: "watch-buffer-size",
    placeholder: "<n>",
    description:
      "Updates waiting per watcher that does not keep up (only the latest per variable is kept); beyond, it is ended with RESOURCE_EXHAUSTED.",
    parse: (raw) => integer(raw, 1),
  }),
  spec({
    key: "watchKeepaliveMs",
    flag: "watch-keepalive-ms",
    placeholder: "<ms>",
    description:
      'An idle watch stream carries a keepalive update (update_type "keepalive") at least this often, so proxies\' idle timeouts keep it; 0 turns them off.',
    parse: (raw) => integer(raw, 0, 3_600_000),
  }),
  spec({
    key: "maxRequestBytes",
    flag: "max-request-bytes",
    placeholder: "<size>",
    description:
      "Largest request message the transport reads (bytes, or with KiB/MiB/GiB); larger ones fail with RESOURCE_EXHAUSTED.",
    parse: (raw) => bytes(raw),
  }),
  spec({
    key: "maxReplyBytes",
    flag: "max-reply-bytes",
    placeholder: "<size>",
    description:
      "Largest reply message (bytes, or with KiB/MiB/GiB); a larger reply fails with RESOURCE_EXHAUSTED. Python grpcio clients accept 4 MiB unless told otherwise.",
    parse: (raw) => bytes(raw),
  }),
  spec({
    key: "maxConnections",
    flag: "max-connections",
    placeholder: "<n>",
    description: "Open connections per listener; more are refused.",
    parse: (raw) => integer(raw, 1),
  }),
  spec({
    key: "maxStreamsPerConnection",
    flag: "max-streams-per-connection",
    placeholder: "<n>",
    description: "HTTP/2 calls in flight on one connection (SETTINGS_MAX_CONCURRENT_STREAMS).",
    parse: (raw) => integer(raw, 1, 0x7fff_ffff),
  }),
  spec({
    key: "idleTimeoutMs",
    flag: "idle-timeout-ms",
    placeholder: "<ms>",
    description: "A connection with no call in flight for this long is closed.",
    parse: (raw) => integer(raw, 1000, 86_400_000),
  }),
  spec({
    key: "headersTimeoutMs",
    flag: "headers-timeout-ms",
    placeholder: "<ms>",
    description: "Time a new connection, or an HTTP/1.1 request, gets to send its headers.",
    parse: (raw) => integer(raw, 100, 3_600_000),
  }),
  spec({
    key: "requestTimeoutMs",
    flag: "request-timeout-ms",
    placeholder: "<ms>",
    description:
      "Time a call gets to send its whole request (every RPC sends one message); a call still sending is reset.",
    parse: (raw) => integer(raw, 100, 3_600_000),
  }),
  spec({
    key: "writeStallTimeoutMs",
    flag: "write-stall-timeout-ms",
    placeholder: "<ms>",
    description: "A reply the peer stops reading for this long is reset and its memory released.",
    parse: (raw) => integer(raw, 100, 3_600_000),
  }),
  spec({
    key: "shutdownGraceMs",
    flag: "shutdown-grace-ms",
    placeholder: "<ms>",
    description:
      "On SIGTERM, milliseconds in-flight calls get to finish before connections are closed.",
    parse: (raw) => integer(raw, 0, 3_600_000),
  }),
  spec({
    key: "logLevel",
    flag: "log-level",
    placeholder: "<level>",
    description: `Lowest level logged: ${logLevels.join(", ")}.`,
    parse: (raw) => {
      const level = raw.trim().toLowerCase();
      if (!isLogLevel(level)) throw new Error(`must be one of ${logLevels.join(", ")}`);
      return level;
    },
  }),
  spec({
    key: "store",
    flag: "store",
    placeholder: "<memory|url>",
    description:
      'Where sessions live: "memory" (this process only, gone when it exits) or a Redis server as redis://[user:password@]host[:port][/db], rediss:// for TLS, port 6379 and database 0 unless given; bridges on one Redis with one key prefix share their sessions. The Redis client (ioredis) is loaded only then.',
    parse: (raw) => {
      if (raw.trim().toLowerCase() === "memory") return "memory";
      return { kind: "redis", url: parseRedisUrl(raw).url };
    },
  }),
  spec({
    key: "storeKeyPrefix",
    flag: "store-key-prefix",
    placeholder: "<prefix>",
    description:
      "With a Redis store: prefix of every key this bridge writes, so several deployments can share one Redis; 1 to 64 printable ASCII characters without spaces.",
    parse: (raw) => {
      const t = raw.trim();
      if (!/^[\x21-\x7e]{1,64}$/.test(t)) {
        throw new Error("must be 1 to 64 printable ASCII characters without spaces");
      }
      return t;
    },
  }),
  spec({
    key: "storeConnectTimeoutMs",
    flag: "store-connect-timeout-ms",
    placeholder: "<ms>",
    description:
      "With a Redis store: how long startup waits for Redis to answer before it exits 1.",
    parse: (raw) => integer(raw, 100, 600_000),
  }),
];

function spec<K extends Key>(s: Omit<OptionSpec<K>, "env"> & { env?: string }): OptionSpec<Key> {
  const env = s.env ?? `UB_${s.flag.toUpperCase().replace(/-/g, "_")}`;
  return { ...s, env } as unknown as OptionSpec<Key>;
}

function nonEmpty(raw: string): string {
  if (raw.trim() === "") throw new Error("must not be empty");
  return raw.trim();
}

function portOrOff(raw: string): number | null {
  if (raw.trim().toLowerCase() === "off") return null;
  return integer(raw, 0, 65_535);
}

function workerAllowList(raw: string): string[] {
  const out: string[] = [];
  for (const part of raw.split(",")) {
    const p = part.trim();
    if (p === "") continue;
    parseAddressPattern(p);
    out.push(p);
  }
  return out;
}

function integer(raw: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const t = raw.trim();
  if (!/^[+]?\d+$/.test(t)) throw new Error(`"${raw}" is not a whole number`);
  const n = Number(t);
  if (n < min || n > max) throw new Error(`${n} is out of range ${min}..${max}`);
  return n;
}

const units: Readonly<Record<string, number>> = {
  "": 1,
  b: 1,
  kib: 1024,
  mib: MiB,
  gib: 1024 * MiB,
};

function bytes(raw: string, min = 1): number {
  const m = /^\s*(\d+)\s*([a-z]*)\s*$/i.exec(raw);
  const unit = units[(m?.[2] ?? "").toLowerCase()];
  if (m === null || unit === undefined) {
    throw new Error(`"${raw}" is not a size; use bytes or a number with KiB, MiB or GiB`);
  }
  const n = Number(m[1]) * unit;
  if (n < min || n > maxBytesLimit) {
    throw new Error(`${n} bytes is out of range ${min}..${maxBytesLimit}`);
  }
  return n;
}

function boolean(raw: string): boolean {
  const t = raw.trim().toLowerCase();
  if (["true", "1", "yes", "on"].includes(t)) return true;
  if (["false", "0", "no", "off"].includes(t)) return false;
  throw new Error(`"${raw}" is not a boolean; use true or false`);
}

function origins(raw: string): string[] {
  const out: string[] = [];
  for (const part of raw.split(",")) {
    const o = part.trim();
    if (o === "") continue;
    if (o !== "*") {
      let parsed: URL | undefined;
      try {
        parsed = new URL(o);
      } catch {
        // Not a URL at all: reported below with the same message as a URL with a path.
      }
      if (parsed === undefined || !/^https?:$/.test(parsed.protocol) || parsed.origin !== o) {
        throw new Error(
          `"${o}" is not an origin; write scheme://host[:port] without path or trailing slash, e.g. http://localhost:5173`,
        );
      }
    }
    out.push(o);
  }
  return out;
}

function headerNames(raw: string): string[] {
  const out: string[] = [];
  for (const part of raw.split(",")) {
    const h = part.trim().toLowerCase();
    if (h === "") continue;
    // RFC 9110 token characters.
    if (!/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(h)) throw new Error(`"${h}" is not a header name`);
    out.push(h);
  }
  if (out.length === 0) throw new Error("names no header");
  return out;
}

/** Thrown for any invalid flag, variable or combination; `message` says what to change. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/**
 * Build the configuration from `argv` (the arguments after `serve`) and
 * `env`; a flag wins over its environment variable, which wins over the
 * default. Returns `{ help }` for `--help`/`-h`. Empty environment variables
 * count as unset, as `docker compose` passes `${VAR:-}` through.
 *
 * @throws ConfigError naming the flag or variable and the accepted values.
 *
 * @example
 * ```ts
 * const config = parseServerConfig(process.argv.slice(3), process.env);
 * if ("help" in config) console.log(config.help);
 * ```
 */
export function parseServerConfig(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
): ServerConfig | { help: string } {
  const fromFlags = new Map<Key, string[]>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === "--help" || arg === "-h") return { help: serverHelp() };
    if (!arg.startsWith("--")) {
      throw new ConfigError(`unexpected argument "${arg}"; options start with -- (see --help)`);
    }
    const eq = arg.indexOf("=");
    let name = eq === -1 ? arg.slice(2) : arg.slice(2, eq);
    let value = eq === -1 ? undefined : arg.slice(eq + 1);
    let option = options.find((o) => o.flag === name);
    if (option === undefined && name.startsWith("no-")) {
      const negated = options.find((o) => o.flag === name.slice(3) && o.boolean);
      if (negated !== undefined && value === undefined) {
        option = negated;
        name = negated.flag;
        value = "false";
      }
    }
    if (option === undefined) {
      throw new ConfigError(`unknown option --${name} (see --help)`);
    }
    if (value === undefined) {
      const next = argv[i + 1];
      if (option.boolean) {
        // A bare boolean flag means true; only a following literal boolean is its value.
        if (next !== undefined && /^(true|false)$/i.test(next)) {
          value = next;
          i++;
        } else {
          value = "true";
        }
      } else {
        if (next === undefined || next.startsWith("--")) {
          throw new ConfigError(`--${name} needs a value ${option.placeholder} (see --help)`);
        }
        value = next;
        i++;
      }
    }
    const list = fromFlags.get(option.key) ?? [];
    if (list.length > 0 && !option.repeatable) {
      throw new ConfigError(`--${name} is given more than once`);
    }
    list.push(value);
    fromFlags.set(option.key, list);
  }

  const config: Record<string, unknown> = { ...defaultServerConfig, corsOrigins: [] };
  for (const option of options) {
    const flagValues = fromFlags.get(option.key);
    const envValue = env[option.env];
    if (flagValues !== undefined) {
      const parsed = flagValues.map((v) => parseOne(option, v, `--${option.flag}`));
      config[option.key] = option.repeatable ? parsed.flat() : parsed[0];
    } else if (envValue !== undefined && envValue.trim() !== "") {
      config[option.key] = parseOne(option, envValue, option.env);
    }
  }
  const result = config as unknown as ServerConfig;
  const ports = [
    ["--port / UB_PORT", result.port],
    ["--worker-port / UB_WORKER_PORT", result.workerPort],
    ["--admin-port / UB_ADMIN_PORT", result.adminPort],
  ] as const;
  for (let i = 0; i < ports.length; i++) {
    for (let j = i + 1; j < ports.length; j++) {
      const [a, pa] = ports[i] as (typeof ports)[number];
      const [b, pb] = ports[j] as (typeof ports)[number];
      if (pa !== null && pa !== 0 && pa === pb) {
        throw new ConfigError(`${a} and ${b} are both ${pa}; each listener needs its own port`);
      }
    }
  }
  if (result.maxRequestBytes < result.maxValueBytes) {
    throw new ConfigError(
      `max request size (${result.maxRequestBytes} bytes, --max-request-bytes / UB_MAX_REQUEST_BYTES) is below the max value size (${result.maxValueBytes} bytes, --max-value-bytes / UB_MAX_VALUE_BYTES): values that large could never be sent; raise the former or lower the latter`,
    );
  }
  return result;
}

function parseOne(option: OptionSpec<Key>, raw: string, source: string): unknown {
  try {
    return option.parse(raw);
  } catch (e) {
    const reason = e instanceof Error ? e.message : String(e);
    throw new ConfigError(`${source}: ${reason}`, { cause: e });
  }
}

/** The `serve --help` text: every option with its environment variable and default. */
export function serverHelp(): string {
  const lines = [
    "Usage: unified-bridge serve [options]",
    "",
    "Serves sessions, variables and tools over gRPC (HTTP/2 cleartext), gRPC-Web and",
    "Connect on the public port (anonymous callers, bounded), the same RPCs on the",
    "worker listener (trusted workers: RegisterTools), and GET /healthz and",
    "GET /metrics (Prometheus) on the admin listener.",
    "Every option can also be set by its environment variable; a flag wins.",
    "",
    "Options:",
  ];
  for (const o of options) {
    const left = `  --${o.flag} ${o.placeholder}`;
    lines.push(left);
    for (const line of wrap(o.description, 74)) lines.push(`      ${line}`);
    lines.push(`      env ${o.env}, default ${formatDefault(defaultServerConfig[o.key])}`);
  }
  lines.push("  -h, --help");
  lines.push("      Show this help.");
  return lines.join("\n");
}

function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line !== "" && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line === "" ? word : `${line} ${word}`;
    }
  }
  if (line !== "") lines.push(line);
  return lines;
}

function formatDefault(value: unknown): string {
  if (Array.isArray(value)) return value.length === 0 ? "none" : value.join(",");
  if (value === null) return "off";
  if (value === "") return "none";
  if (typeof value === "string") return value;
  if (typeof value === "number" && value >= MiB && value % MiB === 0) {
    return `${value} (${value / MiB} MiB)`;
  }
  return String(value);
}
