import { randomBytes } from "node:crypto";
import { networkInterfaces } from "node:os";
import { Code, ConnectError, type ConnectRouter, type Interceptor } from "@connectrpc/connect";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { BridgeService } from "../gen/snakepit/bridge/bridge_pb.js";
import { createAccessCheck } from "./access/access-check.js";
import { createAccessTokens } from "./access/access-tokens.js";
import { callerResolver, createTokenThrottle, peerClientOf } from "./access/caller.js";
import { loadIdentityVerifier } from "./access/identity.js";
import { isRole } from "./access/roles.js";
import { toolRoleMetadataKey } from "./access/rpc-roles.js";
import { createSessionAccess } from "./access/session-access.js";
import { readTokenKeyFile } from "./access/token-keys.js";
import { type ServerTimers, systemTimers, type TimerHandle } from "./common/timers.js";
import { defaultServerConfig, pickGroup, type ServerConfig } from "./config/config-options.js";
import { binaryOnlyInterceptor } from "./edge/binary-only.js";
import { errorHygieneInterceptor } from "./edge/error-hygiene.js";
import { createHttpFront, type HttpFront } from "./edge/http-front.js";
import { type Limits, limitsFrom } from "./limits/limits.js";
import { createMemoryBudget, resolveMemoryBudget } from "./limits/memory-budget.js";
import { createLogger, type Logger } from "./observability/logger.js";
import {
  createMetrics,
  createMetricsInterceptor,
  type MetricsRegistry,
} from "./observability/metrics.js";
import { createBridgeCore } from "./rpc/bridge-core.js";
import { createBridgeService } from "./rpc/bridge-service.js";
import { createHealthService } from "./rpc/health-service.js";
import { followStore, reportAudit } from "./server-events.js";
import { createVariableOps } from "./session/variable-ops.js";
import { createMemoryStore } from "./store/memory-store.js";
import type { RedisStore } from "./store/redis-store.js";
import type { SessionStore } from "./store/session-store.js";
import { type AuditEntry, type AuditFilter, createAuditTrail } from "./tools/audit-trail.js";
import { builtinTools } from "./tools/builtin-tools.js";
import type { ToolDefinition } from "./tools/tool-definition.js";
import { createToolExecutor } from "./tools/tool-executor.js";
import { createToolRegistry } from "./tools/tool-registry.js";
import { createWorkerAddressPolicy } from "./tools/worker-address.js";
import { createWorkerLiveness, type RegisteredWorker } from "./tools/worker-liveness.js";
import { createWorkerTools } from "./tools/worker-tools.js";
import { createWatchEndpoint } from "./watch/watch-endpoint.js";
import { createWatchHub } from "./watch/watch-hub.js";
import type { PoolWorkerInfo } from "./workers/pool-worker.js";
import { createTelemetryReader, type TelemetryReader } from "./workers/telemetry-reader.js";
import { createWorkerPool, type WorkerPool, type WorkerPoolConfig } from "./workers/worker-pool.js";

/**
 * Options of {@link createBridgeServer}: the server config plus embedding
 * hooks. An embedded server opens its worker and admin listeners only when
 * `workerPort` / `adminPort` are given (0 picks free ports); the CLI opens
 * both by default.
 */
export interface BridgeServerOptions extends Partial<ServerConfig> {
  /** Where structured logs go (default: JSON lines on stdout at `logLevel`). */
  readonly logger?: Logger;
  /**
   * A session store to use instead of a new in-memory one; required when
   * `store` names Redis: open one with `createRedisStore({ url })` (from
   * `unified-session-bridge/server`). The server does not close a store it was given.
   * A store with a `healthy` field (the Redis store) fails `/healthz` while
   * it is false.
   */
  readonly sessionStore?: SessionStore;
  /** Register the built-in tools (default true). */
  readonly builtinTools?: boolean;
  /** More global tools to register at creation. */
  readonly tools?: readonly ToolDefinition[];
  /** How long a call forwarded to a worker may take (default 30 s). */
  readonly remoteToolTimeoutMs?: number;
  /**
   * Clock in epoch milliseconds (default: `timers.now`). Replacing only the
   * clock moves what it stamps and compares (expiry times, token
   * lifetimes) while every timer keeps Node's pace.
   */
  readonly now?: () => number;
  /**
   * The timers and clock every part of the server schedules with: expiry
   * sweeps, memory sampling, health and keepalive ticks, log sampling
   * windows, connection and drain deadlines, worker checks, restarts and
   * backoff (default: Node's timers and `Date.now`). A test gives its own
   * to drive that time instead of sleeping through it. A given
   * `sessionStore` keeps the timers it was opened with.
   */
  readonly timers?: ServerTimers;
  /**
   * What the memory budget measures, in bytes (default: heap in use plus
   * external memory); tests replace it to hold the process over its budget.
   */
  readonly memorySample?: () => number;
  /**
   * Interceptors of your own (tracing, access checks), outermost first. Every
   * RPC on the public and worker listeners passes them, on every protocol,
   * the directly served WatchVariables streams included; they run inside
   * the bridge's own (metrics, the binary-only check, error hygiene), so
   * what they throw is counted and made safe to send like any error.
   * `req.contextValues.get(callerKey)` is the caller (`unified-session-bridge/server`
   * exports `callerKey`). They run after the access check (`access`): a
   * call they see was allowed.
   */
  readonly interceptors?: readonly Interceptor[];
  /**
   * A pool of Python workers the bridge runs, supervises and routes calls
   * to (stock snakepit `grpc_server.py`, v0.4.3 or v0.13); overrides
   * `workerCommand`/`workerCount`. Needs the worker listener: with
   * `workerPort` unset it opens on a free port.
   *
   * @example
   * ```ts
   * createBridgeServer({
   *   workers: {
   *     command: ["python3", "grpc_server.py", "--adapter", "my_app.MyAdapter"],
   *     count: 2,
   *     cwd: "/srv/snakepit/priv/python",
   *   },
   * });
   * ```
   */
  readonly workers?: WorkerPoolConfig;
}

/** Where a started bridge listens. */
export interface BridgeAddresses {
  readonly host: string;
  readonly port: number;
  /** The public listener, e.g. `http://127.0.0.1:50051`. */
  readonly url: string;
  /** The worker listener, unless it is off. */
  readonly workerUrl: string | undefined;
  /** The admin listener (`/healthz`, `/metrics`), unless it is off. */
  readonly adminUrl: string | undefined;
}

/** A running (or startable) bridge server. */
export interface BridgeServer extends AsyncDisposable {
  /** Listens on the configured hosts and ports: public, worker and admin. */
  start(): Promise<BridgeAddresses>;
  /**
   * Stops accepting calls, ends watch streams with UNAVAILABLE (clients
   * reconnect elsewhere), lets in-flight calls finish, then closes. Also
   * releases a server that never started, or whose `start()` failed (its
   * subscription to the store, its timers): call it in every case. A
   * stopped server cannot start again.
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
  /** Tool executions, registrations and removals (the most recent 10,000), oldest first. */
  auditTrail(filter?: AuditFilter): AuditEntry[];
  /**
   * The audit trail of every replica when the store is shared (the Redis
   * store keeps the most recent 10,000 entries), else this process's.
   */
  readAuditTrail(filter?: AuditFilter): Promise<AuditEntry[]>;
  /** Calls `listener` after every tool execution; returns the unsubscribe function. */
  onAudit(listener: (entry: AuditEntry) => void): () => void;
  /**
   * The BridgeService and grpc.health.v1.Health routes, for mounting in
   * another Connect server. The access check is one of the listeners'
   * interceptors: mounted elsewhere, the routes are checked only with
   * {@link accessCheck} among that server's interceptors (and a caller
   * there is public unless its `callerKey` value says otherwise).
   */
  readonly routes: (router: ConnectRouter) => void;
  readonly store: SessionStore;
  /** The access check every call on the listeners passes (see README, "Security"). */
  readonly accessCheck: Interceptor;
  /** This bridge's metrics (its own prom-client registry), as the admin listener serves them. */
  readonly metrics: MetricsRegistry;
  /**
   * The worker addresses holding tools registered with a worker_address,
   * with their health (as the admin listener's `GET /workers` shows them).
   */
  registeredWorkers(): RegisteredWorker[];
  /** The Python pool workers (`GET /workers` on the admin listener lists them, then {@link BridgeServer.registeredWorkers}). */
  workers(): PoolWorkerInfo[];
}

/**
 * Creates a bridge server: the snakepit-compatible BridgeService over gRPC,
 * gRPC-Web and Connect on one port, with the in-memory store by default.
 *
 * @example
 * ```ts
 * import { createBridgeServer } from "unified-session-bridge/server";
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
  const config: ServerConfig = { ...defaultServerConfig, workerPort: null, adminPort: null };
  for (const key of Object.keys(defaultServerConfig) as (keyof ServerConfig)[]) {
    if (options[key] !== undefined) Object.assign(config, { [key]: options[key] });
  }
  const timers = options.timers ?? systemTimers;
  const now = options.now ?? timers.now;
  const logger = options.logger ?? createLogger({ level: config.logLevel });
  const limits: Limits = limitsFrom(config);
  if (options.sessionStore === undefined && config.store !== "memory") {
    throw new Error(
      "store names Redis: open the Redis store first and pass it as sessionStore, e.g. { sessionStore: await createRedisStore({ url }) } with createRedisStore from unified-bridge/server (createBridgeServer does not connect anywhere itself)",
    );
  }
  const poolConfig: WorkerPoolConfig | undefined =
    options.workers ??
    (config.workerCommand.length === 0
      ? undefined
      : {
          command: config.workerCommand,
          count: config.workerCount,
          tools: config.workerTools,
          healthIntervalMs: config.workerHealthIntervalMs,
          maxRestarts: config.workerMaxRestarts,
        });
  // Pool workers call the bridge back on the worker listener.
  if (poolConfig !== undefined && config.workerPort === null) config.workerPort = 0;
  const store = options.sessionStore ?? createMemoryStore({ now, timers });
  const shutdown = new AbortController();
  const hub = createWatchHub({
    bufferSize: config.watchBufferSize,
    maxPerSession: limits.maxWatchersPerSession,
    maxTotal: limits.maxWatchers,
    maxPerClient: limits.maxWatchersPerClient,
    keepaliveMs: config.watchKeepaliveMs,
    now,
    timers,
    follow: (sessionId) => store.follow(sessionId),
  });
  const audit = createAuditTrail();
  const tools = createToolRegistry({ now, limits, audit });
  const memory = createMemoryBudget({
    limit: resolveMemoryBudget(config.memoryBudget),
    timers,
    ...(options.memorySample === undefined ? {} : { sample: options.memorySample }),
  });
  const core = createBridgeCore({
    memory,
    store,
    ops: createVariableOps(limits, now),
    hub,
    tools,
    audit,
    now,
    timers,
    settings: {
      limits,
      sessionTtlMs: config.sessionTtlSeconds * 1000,
      autoCreateSessions: config.autoCreateSessions,
      clientSessionIds: config.clientSessionIds,
      remoteToolTimeoutMs: options.remoteToolTimeoutMs ?? 30_000,
    },
  });
  // Which addresses are this bridge: a tool's calls must never come back here.
  const ownHosts = [config.host, config.workerHost, config.adminHost, ...localAddresses()];
  let ownPorts: number[] = [];
  const executor = createToolExecutor(core, {
    instanceId: randomBytes(9).toString("base64url"),
    maxWorkerConnections: config.maxWorkerConnections,
    logger,
  });
  const workerAddresses = createWorkerAddressPolicy({
    allow: config.workerAllow,
    ownHosts: () => ownHosts.map((h) => h.toLowerCase()),
    ownPorts: () => ownPorts,
  });
  const liveness = createWorkerLiveness({
    tools,
    intervalMs: config.workerCheckIntervalMs,
    timeoutMs: config.workerCheckTimeoutMs,
    failures: config.workerCheckFailures,
    maxConnections: config.maxWorkerConnections,
    logger,
    now,
    timers,
  });
  const workerTools = createWorkerTools(core, {
    workerAddresses,
    logger,
    onRegistered: (address) => liveness.registered(address),
  });
  const tokenKeys =
    config.tokenKeys.length === 0 && config.tokenKeyFile !== ""
      ? readTokenKeyFile(config.tokenKeyFile)
      : config.tokenKeys;
  const tokens = createAccessTokens({ keys: tokenKeys, now });
  if (tokens.ephemeral && config.access === "tokens") {
    logger.warn(
      "no token key configured: access tokens are signed with a random key of this process, so they end with it and no other replica accepts them; set tokenKeys (--token-key)",
    );
  }
  const identity =
    config.jwtPublicKey === ""
      ? undefined
      : loadIdentityVerifier({
          publicKeyFile: config.jwtPublicKey,
          issuer: config.jwtIssuer,
          audience: config.jwtAudience,
          now,
        });
  const sessionAccess = createSessionAccess({
    mode: config.access,
    tokens,
    tokenTtlMs: config.tokenTtlSeconds * 1000,
    identityRequired: identity !== undefined && config.access === "tokens",
    now,
  });
  // Wrong tokens of either kind count alike, per client, on the public port.
  const tokenThrottle = createTokenThrottle({ now });
  const accessCheck = createAccessCheck({
    mode: config.access,
    tokens,
    identity,
    throttle: tokenThrottle,
    toolRole: (sessionId, name) => {
      const role = tools.lookup(sessionId, name)?.metadata[toolRoleMetadataKey];
      return isRole(role) ? role : "editor";
    },
  });
  const metrics = createMetrics();
  const workerRestarts = metrics.counter(
    "bridge_python_worker_restarts_total",
    "Restarts of the bridge's Python pool workers, by worker.",
    ["worker"],
  );
  /** The telemetry readers of the ready pool workers, by worker id. */
  const telemetry = new Map<string, TelemetryReader>();
  const pool: WorkerPool | undefined =
    poolConfig === undefined
      ? undefined
      : createWorkerPool(poolConfig, {
          tools,
          logger: logger.child({ component: "workers" }),
          callTimeoutMs: options.remoteToolTimeoutMs ?? 30_000,
          readMaxBytes: limits.maxReplyBytes,
          timers,
          onRestart: (worker) => workerRestarts.inc({ worker }),
          // Each ready worker's telemetry (snakepit v0.13's StreamTelemetry),
          // read until it goes; a worker without one (v0.4.3) answers
          // UNIMPLEMENTED once and is left alone.
          onReady: (workerId, address) => {
            void telemetry.get(workerId)?.close();
            telemetry.set(
              workerId,
              createTelemetryReader({
                address,
                workerId,
                metrics,
                logger: logger.child({ component: "workers", worker: workerId }),
                timers,
              }),
            );
          },
          onDown: (workerId) => {
            void telemetry.get(workerId)?.close();
            telemetry.delete(workerId);
          },
        });
  const service = createBridgeService(core, {
    executor,
    workerTools,
    access: sessionAccess,
    ...(pool === undefined ? {} : { pool }),
  });

  const unsubscribe = followStore(store, { hub, tools, metrics, logger });
  const unsubscribePool =
    pool === undefined
      ? () => undefined
      : store.subscribe((event) => {
          if (event.type === "session_ended") pool.sessionEnded(event.sessionId);
        });
  if (pool !== undefined) {
    metrics.gauge(
      "bridge_python_workers",
      "The bridge's Python pool workers, by state.",
      ["state"],
      () =>
        Object.entries(pool.countByState()).map(([state, value]) => ({ labels: { state }, value })),
    );
  }

  let stats = { sessions: 0, variables: 0 };
  let statsFailing = false;
  const refreshStats = async () => {
    // A remote store's stats fail while it is unreachable: the last counts
    // stay, /healthz says why, and the log says so once per outage.
    try {
      stats = await store.stats();
      statsFailing = false;
    } catch (error) {
      if (!statsFailing) logger.warn("store stats failed", { error });
      statsFailing = true;
    }
  };
  // A store may say whether its backend is reachable (Redis does); the
  // SessionStore contract does not require it.
  const storeHealth = (): { store?: "ok" | "unavailable" } =>
    "healthy" in store ? { store: store.healthy === false ? "unavailable" : "ok" } : {};
  metrics.gauge("bridge_sessions", "Live sessions.", () => stats.sessions);
  metrics.gauge("bridge_variables", "Variables across live sessions.", () => stats.variables);
  metrics.gauge("bridge_watchers", "Open watch streams.", () => hub.size);
  const listeners = new Map<"public" | "worker" | "admin", HttpFront>();
  metrics.gauge("bridge_connections", "Open connections, by listener.", ["listener"], () =>
    [...listeners].map(([listener, f]) => ({ labels: { listener }, value: f.connectionCount })),
  );
  metrics.gauge("bridge_remote_tools", "Tools registered by workers.", () => tools.remoteCount);
  metrics.gauge(
    "bridge_registered_workers",
    "Worker addresses holding registered tools, by health: up, failing (tools still offered), gone (tools withdrawn), unchecked (--worker-check-interval 0).",
    ["state"],
    () => Object.entries(liveness.counts()).map(([state, value]) => ({ labels: { state }, value })),
  );
  // A shared store's changes: what this replica's writes publish, and
  // what it reads of the others'.
  if ("feedAppended" in store && typeof store.feedAppended === "function") {
    const redisStore = store as RedisStore;
    const appended = () => redisStore.feedAppended();
    metrics.gauge(
      "bridge_feed_appended_entries",
      "Changes this replica published since it started: commits on their sessions' channels, session ends on the feed.",
      () => appended().entries,
    );
    metrics.gauge(
      "bridge_feed_appended_bytes",
      "Bytes of the changes this replica published since it started.",
      () => appended().bytes,
    );
    metrics.gauge(
      "bridge_feed_read_entries",
      "Changes this replica read since it started: commits of the sessions it serves (channel), session ends and tool registrations (feed).",
      ["source"],
      () => {
        const read = redisStore.feedRead();
        return [
          { labels: { source: "channel" }, value: read.channels },
          { labels: { source: "feed" }, value: read.feed },
        ];
      },
    );
  }
  metrics.gauge(
    "bridge_memory_in_use_bytes",
    "JavaScript heap in use plus external memory, as last sampled for --memory-budget.",
    () => memory.used,
  );
  metrics.gauge(
    "bridge_memory_budget_bytes",
    "The memory budget above which growth is refused (--memory-budget; 0: off).",
    () => memory.limit,
  );
  metrics.gauge(
    "bridge_expensive_tool_calls",
    "Calls of expensive tools, running or waiting for a slot (--max-expensive-tool-calls).",
    ["state"],
    () => [
      { labels: { state: "running" }, value: executor.expensiveCalls.running },
      { labels: { state: "waiting" }, value: executor.expensiveCalls.waiting },
    ],
  );

  reportAudit(audit, { metrics, logger, shared: store.sharedAudit, timers });

  /** Readiness, for GET /healthz and grpc.health.v1.Health alike. */
  const ready = () => !shutdown.signal.aborted && storeHealth().store !== "unavailable";
  const health = createHealthService({ ready, shutdownSignal: shutdown.signal, timers });
  const routes = (router: ConnectRouter) => {
    router.service(BridgeService, service);
    router.service(Health, health);
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
    return tools.registerLocal({
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

  let fronts: HttpFront[] | undefined;
  let statsTimer: TimerHandle | undefined;

  // What the server holds from its creation on (its store subscription,
  // worker links, timers), released once, by stop(), whether or not the
  // server ever started or its start failed.
  let released = false;
  const release = async () => {
    if (released) return;
    released = true;
    unsubscribe();
    liveness.close();
    unsubscribePool();
    await pool?.stop();
    await Promise.all([...telemetry.values()].map((reader) => reader.close()));
    telemetry.clear();
    workerTools.close();
    executor.close();
    memory.close();
    if (options.sessionStore === undefined) await store.close();
  };

  const stop = async () => {
    if (fronts === undefined) {
      await release();
      return;
    }
    const closing = fronts;
    fronts = undefined;
    timers.clearInterval(statsTimer);
    shutdown.abort();
    hub.endAll(new ConnectError("server is shutting down; reconnect", Code.Unavailable));
    // In-flight calls (forwarded tool calls included) get the grace period.
    // The admin listener closes last: while the others drain, /healthz
    // answers 503, so a proxy's health check stops routing here.
    const admin = listeners.get("admin");
    await Promise.all(
      closing.filter((f) => f !== admin).map((f) => f.close({ graceMs: config.shutdownGraceMs })),
    );
    await admin?.close({ graceMs: config.shutdownGraceMs });
    await release();
    logger.info("stopped");
  };

  return {
    routes,
    store,
    accessCheck,
    metrics,
    registerTool,
    unregisterTool: (name) => tools.unregisterLocal(name),
    auditTrail: (filter) => audit.entries(filter),
    readAuditTrail: async (filter) =>
      store.sharedAudit === undefined ? audit.entries(filter) : store.sharedAudit.read(filter),
    onAudit: (listener) => audit.subscribe(listener),
    registeredWorkers: () => liveness.registeredWorkers(),
    workers: () => pool?.list() ?? [],
    async start() {
      if (fronts !== undefined) throw new Error("the bridge server is already started");
      if (released) throw new Error("the bridge server was stopped: create a new one");
      const interceptors = [
        ...bridgeInterceptors(metrics),
        accessCheck,
        ...(options.interceptors ?? []),
      ];
      const connectionLimits = pickGroup(config, "connection");
      const clientPrefix = { v4: config.clientPrefixV4, v6: config.clientPrefixV6 };
      const rpcFront = (listener: "public" | "worker", host: string, port: number) => {
        const contextValues = callerResolver({
          listener,
          throttle: tokenThrottle,
          workerToken: config.workerToken,
          trustedProxies: config.trustedProxies,
          clientPrefix,
          logger,
          timers,
        });
        // The direct WatchVariables path: its own bytes, the same
        // interceptors and caller as every other call.
        const watchEndpoint = createWatchEndpoint({
          core,
          maxRequestBytes: config.maxRequestBytes,
          logger,
          interceptors,
          contextValues,
        });
        return createHttpFront({
          host,
          port,
          routes,
          clientOfPeer: peerClientOf({ trustedProxies: config.trustedProxies, clientPrefix }),
          directRoutes: watchEndpoint,
          interceptors,
          contextValues,
          corsOrigins: listener === "public" ? config.corsOrigins : [],
          corsAllowHeaders: config.corsAllowHeaders,
          maxRequestBytes: config.maxRequestBytes,
          maxReplyBytes: config.maxReplyBytes,
          compressMinBytes: config.compressMinBytes,
          limits: connectionLimits,
          logger,
          timers,
        });
      };
      const publicFront = rpcFront("public", config.host, config.port);
      const workerFront =
        config.workerPort === null
          ? undefined
          : rpcFront("worker", config.workerHost, config.workerPort);
      const adminFront =
        config.adminPort === null
          ? undefined
          : createHttpFront({
              host: config.adminHost,
              port: config.adminPort,
              // gRPC health checkers (Kubernetes probes) may ask here too.
              routes: (router) => router.service(Health, health),
              corsOrigins: [],
              maxRequestBytes: 1024,
              health: () => ({
                ok: ready(),
                sessions: stats.sessions,
                memory: {
                  used: memory.used,
                  budget: memory.limit,
                  // Reads go on above the budget, so readiness stays as it is.
                  state: memory.over ? "over_budget" : "ok",
                },
                ...storeHealth(),
                ...(shutdown.signal.aborted ? { draining: true } : {}),
              }),
              metrics,
              json: {
                // The pool's workers, then those that registered themselves
                // (each entry's `kind` says which).
                "/workers": () => ({
                  workers: [...(pool?.list() ?? []), ...liveness.registeredWorkers()],
                }),
              },
              limits: connectionLimits,
              logger,
              timers,
            });
      await workerTools.follow();
      const started = [publicFront, workerFront, adminFront].filter(
        (f): f is HttpFront => f !== undefined,
      );
      listeners.clear();
      listeners.set("public", publicFront);
      if (workerFront !== undefined) listeners.set("worker", workerFront);
      if (adminFront !== undefined) listeners.set("admin", adminFront);
      fronts = started;
      let bound: ({ host: string; port: number } | undefined)[];
      try {
        bound = await Promise.all([
          publicFront.listen(),
          workerFront?.listen(),
          adminFront?.listen(),
        ]);
      } catch (e) {
        fronts = undefined;
        await Promise.all(started.map((f) => f.close({ graceMs: 0 })));
        throw e;
      }
      const [pub, wrk, adm] = bound;
      ownPorts = bound.filter((b) => b !== undefined).map((b) => b.port);
      liveness.start();
      await refreshStats();
      statsTimer = timers.setInterval(() => void refreshStats(), 1000);
      statsTimer.unref();
      const address = pub as { host: string; port: number };
      const url = urlOf(address);
      if (pool !== undefined && wrk !== undefined) pool.start(dialable(wrk));
      logger.debug("listening", {
        url,
        worker: wrk === undefined ? "off" : urlOf(wrk),
        admin: adm === undefined ? "off" : urlOf(adm),
      });
      return {
        ...address,
        url,
        workerUrl: wrk === undefined ? undefined : urlOf(wrk),
        adminUrl: adm === undefined ? undefined : urlOf(adm),
      };
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

function urlOf(address: { host: string; port: number }): string {
  const host = address.host.includes(":") ? `[${address.host}]` : address.host;
  return `http://${host}:${address.port}`;
}

/** host:port a local process dials to reach a listener (a wildcard host means loopback). */
function dialable(address: { host: string; port: number }): string {
  const host =
    address.host === "0.0.0.0" ? "127.0.0.1" : address.host === "::" ? "::1" : address.host;
  return host.includes(":") ? `[${host}]:${address.port}` : `${host}:${address.port}`;
}

/** This machine's interface addresses (a worker address naming one is this machine). */
function localAddresses(): string[] {
  const out: string[] = [];
  for (const list of Object.values(networkInterfaces())) {
    for (const info of list ?? []) out.push(info.address);
  }
  return out;
}

/**
 * The interceptors of the bridge's routes, outermost first: metrics see
 * every call as the client does; JSON is refused before any work; error
 * messages are made safe to send last, closest to the handlers.
 */
export function bridgeInterceptors(metrics: MetricsRegistry): Interceptor[] {
  return [createMetricsInterceptor(metrics), binaryOnlyInterceptor, errorHygieneInterceptor];
}
