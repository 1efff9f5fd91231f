/**
 * Every option of `unified-bridge serve`, in one table: flag, environment
 * variable, default, help, how a value is parsed and checked, and which
 * group of settings it belongs to. The server config type, its defaults,
 * the CLI parser and `serve --help` are all derived from it, so adding an
 * option is one entry here. An option of a group is a field of that group's
 * settings (the server's `Limits`, a front's `ConnectionLimits`) and takes
 * its default from them: those modules sit below this table and never
 * import it.
 *
 * (Over 400 lines because it is that one table: about 50 entries of a few
 * lines each, kept together on purpose.)
 */

import { type AccessMode, accessModes } from "../access/access-check.js";
import { tokenKeys, workerToken } from "../access/token-keys.js";
import { clip, misspells } from "../common/message-text.js";
import { defaultConnectionLimits, defaultCorsAllowHeaders } from "../edge/http-front-defaults.js";
import { defaultLimits } from "../limits/limits.js";
import { isLogLevel, type LogFormat, type LogLevel, logLevels } from "../observability/logger.js";
import { parseRedisUrl } from "../store/redis-url.js";
import { splitCommandLine } from "../workers/command-line.js";
import {
  boolean,
  bytes,
  headerNames,
  integer,
  ipList,
  keyPrefix,
  list,
  nonEmpty,
  origins,
  portOrOff,
  workerAllowList,
} from "./config-values.js";

/** The settings an option feeds besides the config itself. */
export type OptionGroup =
  /** A field of the server's `Limits` (`limits.ts`) of the same name. */
  | "limits"
  /** A field of the HTTP fronts' `ConnectionLimits` (`http-front-defaults.ts`) of the same name. */
  | "connection";

/** One option: how users set it and what it means. */
export interface ServerOption<T> {
  /** The flag without its dashes, e.g. `"max-sessions"`. */
  readonly flag: string;
  /** Its environment variable: `UB_` and the flag in upper snake case unless given. */
  readonly env: string;
  /** How `--help` shows the value, e.g. `"<n>"`. */
  readonly placeholder: string;
  readonly default: T;
  /** One paragraph for `--help`. */
  readonly help: string;
  /** Turns one raw string into the value; throws a message without the flag or variable. */
  readonly parse: (raw: string) => T;
  /** Several occurrences of the flag accumulate (`--cors-origin a --cors-origin b`). */
  readonly repeatable?: true;
  /** Given alone, the flag means true; `--no-<flag>` means false. */
  readonly boolean?: true;
  /** The value is never shown in help or messages. */
  readonly secret?: true;
}

function option<T, const G extends OptionGroup | undefined = undefined>(
  spec: Omit<ServerOption<T>, "env"> & { readonly env?: string; readonly group?: G },
): ServerOption<T> & { readonly group: G } {
  const env = spec.env ?? `UB_${spec.flag.toUpperCase().replace(/-/g, "_")}`;
  return { ...spec, env, group: spec.group as G };
}

/** `store` when sessions live in Redis. */
export interface RedisStoreConfig {
  readonly kind: "redis";
  /**
   * Canonical `redis://`, `rediss://` or `redis+cluster://` URL, password included: hand it to
   * the store only, and show `parseRedisUrl(url).redacted` instead.
   */
  readonly url: string;
}

const MiB = 1024 * 1024;

/** Every option, keyed by its {@link ServerConfig} field, in `--help` order. */
export const serverOptions = {
  host: option({
    flag: "host",
    placeholder: "<address>",
    default: "127.0.0.1",
    help: "Interface of the public listener; use 0.0.0.0 in containers.",
    parse: nonEmpty,
  }),
  port: option({
    flag: "port",
    placeholder: "<n>",
    default: 50051,
    help: "TCP port serving gRPC (HTTP/2 cleartext), gRPC-Web and Connect (HTTP/1.1 and HTTP/2); 0 picks a free port.",
    parse: (raw) => integer(raw, 0, 65_535),
  }),
  workerHost: option({
    flag: "worker-host",
    placeholder: "<address>",
    default: "127.0.0.1",
    help: "Interface of the worker listener. Keep it internal: every caller there is trusted as a worker.",
    parse: nonEmpty,
  }),
  workerPort: option({
    flag: "worker-port",
    placeholder: "<n|off>",
    default: 50052,
    help: 'Port of the worker listener (the same RPCs, for trusted workers: RegisterTools is allowed there); 0 picks a free port, "off" turns it off.',
    parse: portOrOff,
  }),
  workerToken: option({
    flag: "worker-token",
    placeholder: "<token>",
    default: "",
    help: "Secret that makes a caller on the public port a worker when sent as authorization: Bearer <token>; at least 32 characters, not made by hand (openssl rand -base64 32). A flag's value shows in ps: prefer --worker-token-file or the environment variable. Unset: no caller on the public port is a worker.",
    parse: workerToken,
    secret: true,
  }),
  workerTokenFile: option({
    flag: "worker-token-file",
    placeholder: "<path>",
    default: "",
    help: "File holding the worker token (e.g. openssl rand -base64 32 > file), read at startup, a trailing newline ignored; unlike --worker-token it never shows in ps. Not together with --worker-token.",
    parse: nonEmpty,
  }),
  workerAllow: option({
    flag: "worker-allow",
    placeholder: "<host:port>",
    default: ["127.0.0.1:*", "[::1]:*", "localhost:*"],
    help: 'Where registered tools may send calls: host:port patterns a worker_address must match, e.g. 10.0.0.7:50100, *.workers.internal:*, 127.0.0.1:50100-50199 ("*" for any host or port); repeat the flag or separate with commas. The bridge\'s own ports are always refused.',
    parse: workerAllowList,
    repeatable: true,
  }),
  access: option<AccessMode>({
    flag: "access",
    placeholder: "<tokens|session-id>",
    default: "session-id",
    help: "Who may use a session on the public port. tokens: every call needs an access token (authorization: Bearer <token>) naming the session, a role (viewer, editor, tuner, owner) and an expiry; the session id alone opens nothing; anyone may still create a session (InitializeSession answers its owner token). Use it in production. session-id: the session id opens its session with every right, as in snakepit, and a caller that sends a token is held to its role. Workers act for every session in both.",
    parse: (raw) => {
      const mode = raw.trim().toLowerCase();
      if (!(accessModes as readonly string[]).includes(mode)) {
        throw new Error(`must be one of ${accessModes.join(", ")}`);
      }
      return mode as AccessMode;
    },
  }),
  tokenKeys: option({
    flag: "token-key",
    env: "UB_TOKEN_KEY",
    placeholder: "<key>",
    default: [] as string[],
    help: "Secret that signs and verifies access tokens (HS256), made as the worker token is (openssl rand -base64 32). Several for rotation: repeat the flag or separate with commas; the first signs, all verify, so put a new key first and drop the old one once --token-ttl has passed. Every replica needs the same keys. Required with --access tokens; without any, tokens are signed with a random key of this process. Prefer --token-key-file or the environment variable: a flag's value shows in ps.",
    parse: tokenKeys,
    repeatable: true,
    secret: true,
  }),
  tokenKeyFile: option({
    flag: "token-key-file",
    placeholder: "<path>",
    default: "",
    help: "File of token keys, one per line, the first signing (lines starting with # are skipped); read at startup. Not together with --token-key.",
    parse: nonEmpty,
  }),
  tokenTtlSeconds: option({
    flag: "token-ttl",
    placeholder: "<seconds>",
    default: 43_200,
    help: "Lifetime of the owner token InitializeSession answers, and the longest MintToken grants. A token cannot be revoked before it expires: keep it short where links are shared widely.",
    parse: (raw) => integer(raw, 60, 30 * 24 * 3600),
  }),
  jwtPublicKey: option({
    flag: "jwt-public-key",
    placeholder: "<path>",
    default: "",
    help: "Public key (PEM key or certificate) or JWKS file of an identity provider, read at startup (never fetched). A caller presenting a JWT it verifies (authorization: Bearer <jwt>) is identified by its sub: the sessions it creates are its own, and no other subject may reopen them. Set, creating a session needs such a JWT in --access tokens.",
    parse: nonEmpty,
  }),
  jwtIssuer: option({
    flag: "jwt-issuer",
    placeholder: "<iss>",
    default: "",
    help: "The iss identity JWTs must carry (with --jwt-public-key).",
    parse: nonEmpty,
  }),
  jwtAudience: option({
    flag: "jwt-audience",
    placeholder: "<aud>",
    default: "",
    help: "An aud identity JWTs must carry (with --jwt-public-key).",
    parse: nonEmpty,
  }),
  workerCommand: option({
    flag: "worker-command",
    placeholder: "<command>",
    default: [] as readonly string[],
    help: 'Python worker command the bridge runs and supervises, e.g. "python3 grpc_server.py --adapter snakepit_bridge.adapters.showcase.ShowcaseAdapter" (stock snakepit v0.4.3 or v0.13 workers, or any worker keeping their contract); split into words like a shell would for plain quoting, never run by a shell. The bridge adds --port 0, --elixir-address (the worker listener, which must be on) and --snakepit-run-id unless given. Unset: no worker pool.',
    parse: (raw) => splitCommandLine(raw),
  }),
  workerCount: option({
    flag: "worker-count",
    placeholder: "<n>",
    default: 1,
    help: "Processes of --worker-command to run; a session's calls stay on one of them while it lives, other sessions go to the least busy.",
    parse: (raw) => integer(raw, 1, 64),
  }),
  workerTools: option({
    flag: "worker-tool",
    env: "UB_WORKER_TOOLS",
    placeholder: "<name>",
    default: [] as readonly string[],
    help: "A tool the workers serve without registering it (snakepit's showcase serves ping, add, … only through execute_tool), listed and routed like the tools they register; repeat the flag or separate with commas.",
    parse: (raw) => list(raw),
    repeatable: true,
  }),
  workerHealthIntervalMs: option({
    flag: "worker-health-interval-ms",
    placeholder: "<ms>",
    default: 2000,
    help: "How often each pool worker is pinged; three missed pings in a row restart it. Also the interval of v0.13 workers' heartbeats to the bridge.",
    parse: (raw) => integer(raw, 100, 600_000),
  }),
  workerMaxRestarts: option({
    flag: "worker-max-restarts",
    placeholder: "<n>",
    default: 5,
    help: "Restarts of a pool worker in a row (backoff 0.5 s, doubling up to 30 s; a minute of service resets the count) before it is reported failed and left down.",
    parse: (raw) => integer(raw, 0, 1000),
  }),
  adminHost: option({
    flag: "admin-host",
    placeholder: "<address>",
    default: "127.0.0.1",
    help: "Interface of the admin listener (GET /healthz, GET /metrics).",
    parse: nonEmpty,
  }),
  adminPort: option({
    flag: "admin-port",
    placeholder: "<n|off>",
    default: 9464,
    help: 'Port of the admin listener; 0 picks a free port, "off" turns it off.',
    parse: portOrOff,
  }),
  clientSessionIds: option({
    flag: "client-session-ids",
    placeholder: "[true|false]",
    default: true,
    help: "Let public callers create sessions under ids they choose (16 to 256 characters of A-Z a-z 0-9 _ -). false: the server mints every new id on the public port (existing sessions can still be reopened by id); use false in production.",
    parse: boolean,
    boolean: true,
  }),
  maxSessionsPerClient: option({
    flag: "max-sessions-per-client",
    placeholder: "<n>",
    default: defaultLimits.maxSessionsPerClient,
    help: "Live sessions one public client (by address; see --trusted-proxy) may have created; more fail with RESOURCE_EXHAUSTED, so one client cannot fill the session table.",
    parse: (raw) => integer(raw, 1),
    group: "limits",
  }),
  clientPrefixV4: option({
    flag: "client-prefix-v4",
    placeholder: "<bits>",
    default: 32,
    help: "Public IPv4 clients are counted for per-client quotas by this prefix of their address (32: each address; 24: each /24 network).",
    parse: (raw) => integer(raw, 8, 32),
  }),
  clientPrefixV6: option({
    flag: "client-prefix-v6",
    placeholder: "<bits>",
    default: 64,
    help: "Public IPv6 clients are counted for per-client quotas by this prefix of their address (64: a host's whole /64, which one machine can fill with addresses at will).",
    parse: (raw) => integer(raw, 16, 128),
  }),
  trustedProxies: option({
    flag: "trusted-proxy",
    env: "UB_TRUSTED_PROXIES",
    placeholder: "<ip>",
    default: [],
    help: "Address of a proxy in front of the bridge (e.g. Envoy) whose x-forwarded-for names the client; repeat the flag or separate with commas.",
    parse: ipList,
    repeatable: true,
  }),
  corsOrigins: option({
    flag: "cors-origin",
    env: "UB_CORS_ORIGINS",
    placeholder: "<origin>",
    default: [],
    help: 'Origin allowed to call from a browser, e.g. http://localhost:5173; repeat the flag or separate with commas. "*" allows any origin.',
    parse: origins,
    repeatable: true,
  }),
  corsAllowHeaders: option({
    flag: "cors-allow-headers",
    placeholder: "<header,...>",
    default: [...defaultCorsAllowHeaders],
    help: "Request headers browsers may send cross-origin (the preflight's Access-Control-Allow-Headers); the list replaces the default, so include the protocol headers; repeat the flag or separate with commas.",
    parse: headerNames,
    repeatable: true,
  }),
  sessionTtlSeconds: option({
    flag: "session-ttl",
    placeholder: "<seconds>",
    default: 1800,
    help: "Seconds a session lives after its last use.",
    parse: (raw) => integer(raw, 1, 365 * 24 * 3600),
  }),
  maxSessionTtlSeconds: option({
    flag: "max-session-ttl",
    placeholder: "<seconds>",
    default: defaultLimits.maxSessionTtlSeconds,
    help: "Longest session lifetime a client may ask for with ttl_seconds.",
    parse: (raw) => integer(raw, 1, 365 * 24 * 3600),
    group: "limits",
  }),
  autoCreateSessions: option({
    flag: "auto-create-sessions",
    placeholder: "[true|false]",
    default: false,
    help: "Create a session on first use of an unknown id instead of failing with NOT_FOUND.",
    parse: boolean,
    boolean: true,
  }),
  maxSessions: option({
    flag: "max-sessions",
    placeholder: "<n>",
    default: defaultLimits.maxSessions,
    help: "Sessions held at once; InitializeSession fails with RESOURCE_EXHAUSTED beyond.",
    parse: (raw) => integer(raw, 1),
    group: "limits",
  }),
  maxVariablesPerSession: option({
    flag: "max-variables-per-session",
    placeholder: "<n>",
    default: defaultLimits.maxVariablesPerSession,
    help: "Variables per session.",
    parse: (raw) => integer(raw, 1),
    group: "limits",
  }),
  maxValueBytes: option({
    flag: "max-value-bytes",
    placeholder: "<size>",
    default: defaultLimits.maxValueBytes,
    help: "Largest encoded variable value (bytes, or with KiB/MiB/GiB).",
    parse: (raw) => bytes(raw),
    group: "limits",
  }),
  maxMetadataEntries: option({
    flag: "max-metadata-entries",
    placeholder: "<n>",
    default: defaultLimits.maxMetadataEntries,
    help: "Metadata entries per session or variable.",
    parse: (raw) => integer(raw, 0),
    group: "limits",
  }),
  maxMetadataBytes: option({
    flag: "max-metadata-bytes",
    placeholder: "<size>",
    default: defaultLimits.maxMetadataBytes,
    help: "Total metadata size per session or variable (bytes, or with KiB/MiB).",
    parse: (raw) => bytes(raw, 0),
    group: "limits",
  }),
  historyLimit: option({
    flag: "history-limit",
    placeholder: "<n>",
    default: defaultLimits.historyLimit,
    help: "Versions kept per variable for history and rollback.",
    parse: (raw) => integer(raw, 1),
    group: "limits",
  }),
  historyMaxBytes: option({
    flag: "history-max-bytes",
    placeholder: "<size>",
    default: defaultLimits.historyMaxBytes,
    help: "Bytes of past values kept per variable; the oldest versions go first.",
    parse: (raw) => bytes(raw, 0),
    group: "limits",
  }),
  maxSessionBytes: option({
    flag: "max-session-bytes",
    placeholder: "<size>",
    default: defaultLimits.maxSessionBytes,
    help: "Bytes one session may hold (values, history and tool data); writes beyond fail with RESOURCE_EXHAUSTED, history is trimmed first.",
    parse: (raw) => bytes(raw),
    group: "limits",
  }),
  maxBytesPerClient: option({
    flag: "max-bytes-per-client",
    placeholder: "<size>",
    default: defaultLimits.maxBytesPerClient,
    help: "Bytes the live sessions one public client (by address; see --trusted-proxy) created may hold together; writes that would grow them beyond, and new sessions of a client at the limit, fail with RESOURCE_EXHAUSTED, so one client cannot fill the server's memory within its session quota.",
    parse: (raw) => bytes(raw),
    group: "limits",
  }),
  maxWatchersPerSession: option({
    flag: "max-watchers-per-session",
    placeholder: "<n>",
    default: defaultLimits.maxWatchersPerSession,
    help: "Watch streams open on one session.",
    parse: (raw) => integer(raw, 1),
    group: "limits",
  }),
  maxWatchersPerClient: option({
    flag: "max-watchers-per-client",
    placeholder: "<n>",
    default: defaultLimits.maxWatchersPerClient,
    help: "Watch streams one public client (see --client-prefix-v4/-v6) may have open across all sessions, so one client cannot take every stream the server holds.",
    parse: (raw) => integer(raw, 1),
    group: "limits",
  }),
  maxWatchers: option({
    flag: "max-watchers",
    placeholder: "<n>",
    default: defaultLimits.maxWatchers,
    help: "Watch streams open across all sessions.",
    parse: (raw) => integer(raw, 1),
    group: "limits",
  }),
  maxToolsPerSession: option({
    flag: "max-tools-per-session",
    placeholder: "<n>",
    default: defaultLimits.maxToolsPerSession,
    help: "Session-scoped tools one session may hold.",
    parse: (raw) => integer(raw, 0),
    group: "limits",
  }),
  maxTools: option({
    flag: "max-tools",
    placeholder: "<n>",
    default: defaultLimits.maxTools,
    help: "Remote tools registered by workers, global and session-scoped together.",
    parse: (raw) => integer(raw, 0),
    group: "limits",
  }),
  maxToolBytes: option({
    flag: "max-tool-bytes",
    placeholder: "<size>",
    default: defaultLimits.maxToolBytes,
    help: "Size of one tool registration (name, description, parameters, metadata).",
    parse: (raw) => bytes(raw),
    group: "limits",
  }),
  maxToolCallsPerSession: option({
    flag: "max-tool-calls-per-session",
    placeholder: "<n>",
    default: defaultLimits.maxToolCallsPerSession,
    help: "Tool calls of one session running at once; more fail with RESOURCE_EXHAUSTED.",
    parse: (raw) => integer(raw, 1),
    group: "limits",
  }),
  maxExpensiveToolCalls: option({
    flag: "max-expensive-tool-calls",
    placeholder: "<n>",
    default: defaultLimits.maxExpensiveToolCalls,
    help: "Calls of expensive tools (those that declare expensive: true, or remote ones registered with metadata expensive=true) running at once across all clients; more wait in a queue served round-robin by client. 0: one per CPU.",
    parse: (raw) => integer(raw, 0),
    group: "limits",
  }),
  maxQueuedExpensiveCallsPerClient: option({
    flag: "max-queued-expensive-calls-per-client",
    placeholder: "<n>",
    default: defaultLimits.maxQueuedExpensiveCallsPerClient,
    help: "Calls of expensive tools one public client (by address; see --trusted-proxy) may have waiting for a slot of --max-expensive-tool-calls; more fail with RESOURCE_EXHAUSTED.",
    parse: (raw) => integer(raw, 0),
    group: "limits",
  }),
  memoryBudget: option<number | "auto">({
    flag: "memory-budget",
    placeholder: "<size|auto>",
    default: "auto",
    help: "While the process's JavaScript heap in use plus external memory (buffers) is above this, calls that would make the server hold more (new sessions, writes that grow a session, registrations of variables and tools, new calls of expensive tools) fail with RESOURCE_EXHAUSTED; reads, deletes and other calls go on. Sampled every 250 ms. auto: three quarters of V8's heap limit (--max-old-space-size); 0 turns the check off.",
    parse: (raw) => (raw.trim().toLowerCase() === "auto" ? "auto" : bytes(raw, 0)),
  }),
  maxForwardedCallsPerClient: option({
    flag: "max-forwarded-calls-per-client",
    placeholder: "<n>",
    default: defaultLimits.maxForwardedCallsPerClient,
    help: "Calls of remote tools (forwarded to workers) one public client (by address; see --trusted-proxy) may have in flight, across its sessions; more fail with RESOURCE_EXHAUSTED, so one client cannot occupy the workers.",
    parse: (raw) => integer(raw, 1),
    group: "limits",
  }),
  maxWorkerConnections: option({
    flag: "max-worker-connections",
    placeholder: "<n>",
    default: 64,
    help: "Worker connections kept open for forwarded calls; the least recently used one is closed beyond.",
    parse: (raw) => integer(raw, 1),
  }),
  workerCheckIntervalMs: option({
    flag: "worker-check-interval",
    placeholder: "<ms>",
    default: 2000,
    help: "How often each worker that registered tools with a worker_address is health-checked (grpc.health.v1 Check, else BridgeService Ping); after --worker-check-failures failures in a row its tools are withdrawn (not listed; calls fail with UNAVAILABLE) until it answers or registers again. 0 turns the checks off.",
    parse: (raw) => {
      const ms = integer(raw, 0, 3_600_000);
      if (ms > 0 && ms < 100) throw new Error("must be 0 (off) or at least 100 ms");
      return ms;
    },
  }),
  workerCheckTimeoutMs: option({
    flag: "worker-check-timeout",
    placeholder: "<ms>",
    default: 1000,
    help: "How long one worker health check may take before it counts as failed.",
    parse: (raw) => integer(raw, 50, 600_000),
  }),
  workerCheckFailures: option({
    flag: "worker-check-failures",
    placeholder: "<n>",
    default: 3,
    help: "Failed health checks in a row after which a worker's tools are withdrawn.",
    parse: (raw) => integer(raw, 1, 100),
  }),
  watchBufferSize: option({
    flag: "watch-buffer-size",
    placeholder: "<n>",
    default: 1024,
    help: "Updates waiting per watcher that does not keep up (only the latest per variable is kept); beyond, it is ended with RESOURCE_EXHAUSTED.",
    parse: (raw) => integer(raw, 1),
  }),
  watchKeepaliveMs: option({
    flag: "watch-keepalive-ms",
    placeholder: "<ms>",
    default: 30_000,
    help: 'An idle watch stream carries a keepalive update (update_type "keepalive") at least this often, so proxies\' idle timeouts keep it; 0 turns them off.',
    parse: (raw) => integer(raw, 0, 3_600_000),
  }),
  maxRequestBytes: option({
    flag: "max-request-bytes",
    placeholder: "<size>",
    default: 4 * MiB,
    help: "Largest request message the transport reads (bytes, or with KiB/MiB/GiB); larger ones fail with RESOURCE_EXHAUSTED.",
    parse: (raw) => bytes(raw),
  }),
  maxReplyBytes: option({
    flag: "max-reply-bytes",
    placeholder: "<size>",
    default: defaultLimits.maxReplyBytes,
    help: "Largest reply message (bytes, or with KiB/MiB/GiB); a larger reply fails with RESOURCE_EXHAUSTED. Python grpcio clients accept 4 MiB unless told otherwise.",
    parse: (raw) => bytes(raw),
    group: "limits",
  }),
  compressMinBytes: option({
    flag: "compress-min-bytes",
    placeholder: "<size>",
    default: defaultLimits.compressMinBytes,
    help: "Smallest reply compressed (bytes, or with KiB/MiB/GiB) for a client that accepts gzip or brotli; smaller replies go uncompressed: measured on loopback, compressing them cost more CPU and latency than the bytes saved.",
    parse: (raw) => bytes(raw),
    group: "limits",
  }),
  maxConnections: option({
    flag: "max-connections",
    placeholder: "<n>",
    default: defaultConnectionLimits.maxConnections,
    help: "Open connections per listener; more are refused.",
    parse: (raw) => integer(raw, 1),
    group: "connection",
  }),
  maxConnectionsPerClient: option({
    flag: "max-connections-per-client",
    placeholder: "<n>",
    default: defaultConnectionLimits.maxConnectionsPerClient,
    help: "Open connections one client address (grouped by --client-prefix-v4/-v6) may hold per listener; more are refused at accept. A --trusted-proxy is not counted.",
    parse: (raw) => integer(raw, 1),
    group: "connection",
  }),
  maxStreamsPerConnection: option({
    flag: "max-streams-per-connection",
    placeholder: "<n>",
    default: defaultConnectionLimits.maxStreamsPerConnection,
    help: "HTTP/2 calls in flight on one connection (SETTINGS_MAX_CONCURRENT_STREAMS).",
    parse: (raw) => integer(raw, 1, 0x7fff_ffff),
    group: "connection",
  }),
  idleTimeoutMs: option({
    flag: "idle-timeout-ms",
    placeholder: "<ms>",
    default: defaultConnectionLimits.idleTimeoutMs,
    help: "A connection with no call in flight for this long is closed.",
    parse: (raw) => integer(raw, 1000, 86_400_000),
    group: "connection",
  }),
  headersTimeoutMs: option({
    flag: "headers-timeout-ms",
    placeholder: "<ms>",
    default: defaultConnectionLimits.headersTimeoutMs,
    help: "Time a new connection, or an HTTP/1.1 request, gets to send its headers.",
    parse: (raw) => integer(raw, 100, 3_600_000),
    group: "connection",
  }),
  requestTimeoutMs: option({
    flag: "request-timeout-ms",
    placeholder: "<ms>",
    default: defaultConnectionLimits.requestTimeoutMs,
    help: "Time a call gets to send its whole request (every RPC sends one message); a call still sending is reset.",
    parse: (raw) => integer(raw, 100, 3_600_000),
    group: "connection",
  }),
  writeStallTimeoutMs: option({
    flag: "write-stall-timeout-ms",
    placeholder: "<ms>",
    default: defaultConnectionLimits.writeStallTimeoutMs,
    help: "A reply the peer stops reading for this long is reset and its memory released.",
    parse: (raw) => integer(raw, 100, 3_600_000),
    group: "connection",
  }),
  shutdownGraceMs: option({
    flag: "shutdown-grace-ms",
    placeholder: "<ms>",
    default: 10_000,
    help: "On SIGTERM, milliseconds in-flight calls get to finish before connections are closed.",
    parse: (raw) => integer(raw, 0, 3_600_000),
  }),
  logLevel: option<LogLevel>({
    flag: "log-level",
    placeholder: "<level>",
    default: "info",
    help: `Lowest level logged: ${logLevels.join(", ")}.`,
    parse: (raw) => {
      const level = raw.trim().toLowerCase();
      if (!isLogLevel(level)) throw new Error(`must be one of ${logLevels.join(", ")}`);
      return level;
    },
  }),
  logFormat: option<"auto" | LogFormat>({
    flag: "log-format",
    placeholder: "<auto|json|pretty>",
    default: "auto",
    help: "How log lines are written: json (one JSON object per line, for log shippers), pretty (one readable line: time, level, message, fields) or auto (pretty when stdout is a terminal, json otherwise).",
    parse: (raw) => {
      const format = raw.trim().toLowerCase();
      if (format !== "auto" && format !== "json" && format !== "pretty") {
        throw new Error("must be one of auto, json, pretty");
      }
      return format;
    },
  }),
  store: option<"memory" | RedisStoreConfig>({
    flag: "store",
    placeholder: "<memory|url>",
    default: "memory",
    help: 'Where sessions live: "memory" (this process only, gone when it exits), a Redis server as redis://[user:password@]host[:port][/db], rediss:// for TLS, port 6379 and database 0 unless given, or a Redis Cluster as redis+cluster://[user:password@]host[:port][,host[:port]…] (rediss+cluster:// for TLS; one node is enough to find the others); bridges on one Redis with one key prefix share their sessions. The Redis client (ioredis) is loaded only then.',
    parse: (raw) => {
      const word = raw.trim();
      if (word.toLowerCase() === "memory") return "memory";
      if (misspells(word, "memory")) {
        throw new Error(
          `"${clip(word, 32)}" is no store: did you mean memory? Write memory, a Redis server as redis://[user:password@]host[:port][/db], or a Redis Cluster as redis+cluster://host[:port][,host[:port]…]`,
        );
      }
      return { kind: "redis", url: parseRedisUrl(raw).url };
    },
  }),
  storeKeyPrefix: option({
    flag: "store-key-prefix",
    placeholder: "<prefix>",
    default: "ub:",
    help: "With a Redis store: prefix of every key this bridge writes, so several deployments can share one Redis; 1 to 64 printable ASCII characters without spaces.",
    parse: keyPrefix,
  }),
  storeConnectTimeoutMs: option({
    flag: "store-connect-timeout-ms",
    placeholder: "<ms>",
    default: 5000,
    help: "With a Redis store: how long startup waits for Redis to answer before it exits 1.",
    parse: (raw) => integer(raw, 100, 600_000),
  }),
  storeDurability: option<"async" | "replicated">({
    flag: "store-durability",
    placeholder: "<async|replicated>",
    default: "async",
    help: "With a Redis store: when a write is acknowledged. async: once the Redis primary has it (a primary's crash may lose the last writes its replicas had not received). replicated: once a Redis replica has it too (WAIT 1, up to 1 s): a write no replica confirms in time fails with UNAVAILABLE, saying it may still have been applied; needs a replica per primary.",
    parse: (raw) => {
      const word = raw.trim().toLowerCase();
      if (word === "async" || word === "replicated") return word;
      throw new Error("must be async or replicated");
    },
  }),
};

type Options = typeof serverOptions;

/** Everything `unified-bridge serve` can be told; see {@link serverOptions} for each field. */
export type ServerConfig = { -readonly [K in keyof Options]: Options[K]["default"] };

/** The config fields of an {@link OptionGroup}. */
export type OptionKeys<G extends OptionGroup> = {
  [K in keyof Options]: Options[K]["group"] extends G ? K : never;
}[keyof Options];

/** Each option with its config field, in table order. */
export const optionEntries = Object.entries(serverOptions) as [
  keyof ServerConfig,
  ServerOption<unknown> & { readonly group: OptionGroup | undefined },
][];

/** The configuration used for anything not given by a flag or variable. */
export const defaultServerConfig: ServerConfig = Object.freeze(
  Object.fromEntries(
    optionEntries.map(([key, o]) => [
      key,
      Array.isArray(o.default) ? Object.freeze([...o.default]) : o.default,
    ]),
  ),
) as ServerConfig;

/** The fields of `group` from `config`, e.g. the limits of a server config. */
export function pickGroup<G extends OptionGroup>(
  config: Readonly<Pick<ServerConfig, OptionKeys<G>>>,
  group: G,
): Pick<ServerConfig, OptionKeys<G>> {
  const out: Record<string, unknown> = {};
  for (const [key, o] of optionEntries) {
    if (o.group === group) out[key] = config[key as OptionKeys<G>];
  }
  return out as Pick<ServerConfig, OptionKeys<G>>;
}
