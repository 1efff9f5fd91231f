import { Code, ConnectError, type ConnectRouter, type Interceptor } from "@connectrpc/connect";
import { BridgeService } from "../gen/snakepit/bridge/bridge_pb.js";
import { binaryOnlyInterceptor } from "./binary-only.js";
import { createBridgeCore } from "./bridge-core.js";
import { createBridgeService, sessionEnded } from "./bridge-service.js";
import { defaultServerConfig, type ServerConfig } from "./config.js";
import { errorHygieneInterceptor } from "./error-hygiene.js";
import { createHttpFront, type HttpFront } from "./http-front.js";
import { defaultLimits, type Limits } from "./limits.js";
import { createLogger, type Logger, redactSessionId } from "./logger.js";
import { createMetrics, createMetricsInterceptor, type MetricsRegistry } from "./metrics.js";
import { createMemoryStore } from "./store/memory-store.js";
import type { SessionStore } from "./store/session-store.js";
import { type AuditEntry, createAuditTrail } from "./tools/audit-trail.js";
import { builtinTools } from "./tools/builtin-tools.js";
import type { ToolDefinition } from "./tools/tool-definition.js";
import { createToolRegistry } from "./tools/tool-registry.js";
import { createVariableOps } from "./variable-ops.js";
import { createWatchHub } from "./watch-hub.js";

/** Options of {@link createBridgeServer}: the server config plus embedding hooks. */
export interface BridgeServerOptions
  extends Partial<ServerConfig>,
    Partial<Pick<Limits, "historyMaxBytes" | "maxSessionBytes">> {
  /** Where structured logs go (default: JSON lines on stdout at `logLevel`). */
  readonly logger?: Logger;
  /**
   * A session store to use instead of the one `store` names (default: a new
   * in-memory store). The server does not close a store it was given.
   */
  readonly sessionStore?: SessionStore;
  /** Register the built-in tools (default true). */
  readonly builtinTools?: boolean;
  /** More global tools to register at creation. */
  readonly tools?: readonly ToolDefinition[];
  /** How long a call forwarded to a worker may take (default 30 s). */
  readonly remoteToolTimeoutMs?: number;
  /** Clock in epoch milliseconds (tests replace it). */
  readonly now?: () => number;
}

/** A running (or startable) bridge server. */
export interface BridgeServer extends AsyncDisposable {
  /** Listens on the configured host and port. */
  start(): Promise<{ host: string; port: number; url: string }>;
  /**
   * Stops accepting calls, ends watch streams with UNAVAILABLE (clients
   * reconnect elsewhere), lets in-flight calls finish, then closes.
   */
  stop(): Promise<void>;
  /**
   * Registers a tool: global, or scoped to one session (removed with it, or
   * after `ttlMs`). Returns the tool's id.
   */
  registerTool(
    definition: ToolDefinition,
    options?: { sessionId?: string; ttlMs?: number },
  ): string;
  /** Removes a global tool. */
  unregisterTool(name: string): boolean;
  /** Tool executions so far (the most recent 10,000), oldest first. */
  auditTrail(filter?: { sessionId?: string; tool?: string }): AuditEntry[];
  /** Calls `listener` after every tool execution; returns the unsubscribe function. */
  onAudit(listener: (entry: AuditEntry) => void): () => void;
  /** The BridgeService routes, for mounting in another Connect server. */
  readonly routes: (router: ConnectRouter) => void;
  readonly store: SessionStore;
}

/**
 * Creates a bridge server: the snakepit-compatible BridgeService over gRPC,
 * gRPC-Web and Connect on one port, with the in-memory store by default.
 *
 * @example
 * ```ts
 * import { createBridgeServer } from "unified-bridge/server";
 *
 * const server = createBridgeServer({ port: 50051 });
 * server.registerTool({
 *   name: "shout",
 *   description: "Upper-cases a text.",
 *   parameters: [{ name: "text", type: "string", required: true }],
 *   handler: ({ text }) => String(text).toUpperCase(),
 * });
 * const { url } = await server.start();
 * ```
 */
export function createBridgeServer(options: BridgeServerOptions = {}): BridgeServer {
  const config: ServerConfig = { ...defaultServerConfig };
  for (const key of Object.keys(defaultServerConfig) as (keyof ServerConfig)[]) {
    if (options[key] !== undefined) Object.assign(config, { [key]: options[key] });
  }
  const now = options.now ?? Date.now;
  const logger = options.logger ?? createLogger({ level: config.logLevel });
  const limits: Limits = {
    ...defaultLimits,
    maxSessions: config.maxSessions,
    maxVariablesPerSession: config.maxVariablesPerSession,
    maxValueBytes: config.maxValueBytes,
    maxMetadataEntries: config.maxMetadataEntries,
    maxMetadataBytes: config.maxMetadataBytes,
    historyLimit: config.historyLimit,
    historyMaxBytes: options.historyMaxBytes ?? defaultLimits.historyMaxBytes,
    maxSessionBytes: options.maxSessionBytes ?? defaultLimits.maxSessionBytes,
  };
  const store = options.sessionStore ?? createMemoryStore({ now });
  const shutdown = new AbortController();
  const hub = createWatchHub({ bufferSize: config.watchBufferSize });
  const tools = createToolRegistry(now);
  const audit = createAuditTrail();
  const core = createBridgeCore({
    store,
    ops: createVariableOps(limits, now),
    hub,
    tools,
    audit,
    now,
    shutdownSignal: shutdown.signal,
    settings: {
      limits,
      sessionTtlMs: config.sessionTtlSeconds * 1000,
      autoCreateSessions: config.autoCreateSessions,
      remoteToolTimeoutMs: options.remoteToolTimeoutMs ?? 30_000,
    },
  });
  const { service, executor } = createBridgeService(core);

  const metrics = createMetrics();
  const sessionsEnded = metrics.counter(
    "bridge_sessions_ended_total",
    "Sessions ended, by reason (cleanup or expired).",
    ["reason"],
  );
  const unsubscribe = store.subscribe((event) => {
    if (event.type === "change") {
      hub.onStoreEvent(event);
      return;
    }
    // Expiry (or a cleanup on another node): end streams, drop its tools.
    // This runs for every one of a mass expiry, so it stays cheap: the
    // error is only built for sessions with streams, and expiries are
    // logged at debug level only (the metrics count every end).
    tools.dropSession(event.sessionId);
    hub.endSession(event.sessionId, () =>
      sessionEnded(event.reason === "expired" ? "expired" : "cleaned up"),
    );
    sessionsEnded.inc({ reason: event.reason });
    const level = event.reason === "cleanup" ? "info" : "debug";
    if (logger.isLevelEnabled(level)) {
      logger[level]("session ended", {
        session: redactSessionId(event.sessionId),
        reason: event.reason,
      });
    }
  });

  let stats = { sessions: 0, variables: 0 };
  const refreshStats = async () => {
    stats = await store.stats();
  };
  metrics.gauge("bridge_sessions", "Live sessions.", () => stats.sessions);
  metrics.gauge("bridge_variables", "Variables across live sessions.", () => stats.variables);
  metrics.gauge("bridge_watchers", "Open watch streams.", () => hub.size);

  audit.subscribe((entry) => {
    metrics
      .counter("bridge_tool_executions_total", "Tool executions by tool and outcome.", [
        "tool",
        "outcome",
      ])
      .inc({ tool: entry.tool, outcome: entry.outcome });
    logger.info("tool executed", {
      event: "tool_execution",
      session: redactSessionId(entry.sessionId),
      tool: entry.tool,
      started_at: new Date(entry.startedAt).toISOString(),
      duration_ms: entry.durationMs,
      outcome: entry.outcome,
      target: entry.target,
      ...(entry.error === undefined ? {} : { error: entry.error }),
    });
  });

  const routes = (router: ConnectRouter) => {
    router.service(BridgeService, service);
  };

  if (options.builtinTools !== false) for (const tool of builtinTools) registerTool(tool);
  for (const tool of options.tools ?? []) registerTool(tool);

  function registerTool(
    definition: ToolDefinition,
    scope: { sessionId?: string; ttlMs?: number } = {},
  ) {
    if (definition.handler === undefined && definition.stream === undefined) {
      throw new ConnectError(
        `tool '${definition.name}' needs a handler or a stream function`,
        Code.InvalidArgument,
      );
    }
    return tools.register({
      name: definition.name,
      description: definition.description,
      parameters: definition.parameters ?? [],
      metadata: definition.metadata ?? {},
      requiredVariables: definition.requiredVariables ?? [],
      streaming: definition.stream !== undefined,
      sessionId: scope.sessionId,
      expiresAt: scope.ttlMs === undefined ? undefined : now() + scope.ttlMs,
      target: { kind: "local", definition },
    });
  }

  let front: HttpFront | undefined;
  let statsTimer: ReturnType<typeof setInterval> | undefined;

  const stop = async () => {
    if (front === undefined) return;
    const closing = front;
    front = undefined;
    if (statsTimer !== undefined) clearInterval(statsTimer);
    shutdown.abort();
    hub.endAll(new ConnectError("server is shutting down; reconnect", Code.Unavailable));
    await closing.close({ graceMs: config.shutdownGraceMs });
    unsubscribe();
    executor.close();
    if (options.sessionStore === undefined) await store.close();
    logger.info("stopped");
  };

  return {
    routes,
    store,
    registerTool,
    unregisterTool: (name) => tools.unregister(name),
    auditTrail: (filter) => audit.entries(filter),
    onAudit: (listener) => audit.subscribe(listener),
    async start() {
      if (front !== undefined) throw new Error("the bridge server is already started");
      front = createHttpFront({
        host: config.host,
        port: config.port,
        routes,
        interceptors: bridgeInterceptors(metrics),
        corsOrigins: config.corsOrigins,
        maxRequestBytes: config.maxRequestBytes,
        health: () => ({ ok: !shutdown.signal.aborted, sessions: stats.sessions }),
        metrics,
        logger,
      });
      const address = await front.listen();
      await refreshStats();
      statsTimer = setInterval(() => void refreshStats(), 1000);
      statsTimer.unref();
      const url = `http://${address.host.includes(":") ? `[${address.host}]` : address.host}:${address.port}`;
      logger.debug("listening", { url });
      return { ...address, url };
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

/**
 * The interceptors of the bridge's routes, outermost first: metrics see
 * every call as the client does; JSON is refused before any work; error
 * messages are made safe to send last, closest to the handlers.
 */
export function bridgeInterceptors(metrics: MetricsRegistry): Interceptor[] {
  return [createMetricsInterceptor(metrics), binaryOnlyInterceptor, errorHygieneInterceptor];
}
