/**
 * The public surface of the client: {@link SessionContext}, its options, and
 * {@link createSessionContext}, which wires the parts together. The parts
 * live in their own files: reads (variable-reads.ts), writes and the write
 * coalescer (variable-writes.ts), the optimization lock
 * (optimization-lock.ts), typed handles (variable-handles.ts), the cache
 * with persistence and tabs (local-copy.ts), revalidation, watch and
 * heartbeat (session-sync.ts), the connection state machine
 * (connection-state.ts), pending values (pending-writes.ts), the outbox
 * (outbox-writes.ts), access tokens (access-token.ts, mint-token.ts) and
 * closing (session-close.ts).
 * @module
 */
import {
  type CallOptions,
  Code,
  ConnectError,
  createClient,
  type Transport,
} from "@connectrpc/connect";
import { BridgeService } from "../gen/snakepit/bridge/bridge_pb.js";
import type { JsonValue, VariableValue } from "../values/index.js";
import type { AccessRoleName } from "./access-error.js";
import { createTokenSource, tokenClaims, withAccessToken } from "./access-token.js";
import { defaultAffinityHeader, withAffinityHeader } from "./affinity-header.js";
import { createConnection } from "./connection-state.js";
import { createEmitter } from "./events.js";
import { createLocalCopy } from "./local-copy.js";
import { type MintedToken, mintToken } from "./mint-token.js";
import { createOptimizationLock, type OptimizationLock } from "./optimization-lock.js";
import type { OutboxStore } from "./outbox.js";
import { createOutboxWrites, type OutboxWrite } from "./outbox-writes.js";
import { createPendingOverlay, type PendingWrite } from "./pending-writes.js";
import { createPersistenceWriter, type PersistenceAdapter } from "./persistence.js";
import type {
  BoundVariables,
  ReadOptions,
  VariableHandle,
  VariableSchema,
  WriteOptions,
} from "./schema.js";
import { createClose } from "./session-close.js";
import type { SessionContextEvents } from "./session-events.js";
import type { SessionRpc } from "./session-rpc.js";
import { createResync, hydrate, startCoherence, startHeartbeat } from "./session-sync.js";
import {
  callTool,
  callToolResult,
  listTools,
  streamTool,
  type ToolArgs,
  type ToolCallResult,
  type ToolInfo,
} from "./session-tools.js";
import { openTabChannel } from "./tab-channel.js";
import { systemTimers, type TimerProvider } from "./timers.js";
import { withHonestTransportErrors } from "./transport-errors.js";
import { createVariableCache } from "./variable-cache.js";
import { createVariableHandles } from "./variable-handles.js";
import { createVariableReads, type ReadMethods } from "./variable-reads.js";
import type { Peeked, PeekOptions, VariableSnapshot } from "./variable-snapshot.js";
import { createVariableWrites, type VariableWrites } from "./variable-writes.js";
import type { WatchOptions } from "./watch-coherence.js";
import { fromServerReply } from "./write-outcome.js";

/** Options of {@link createSessionContext}. Fixed for the context's life. */
export interface SessionContextOptions {
  /**
   * How to reach the bridge: connect-web's `createConnectTransport` (with
   * `useBinaryFormat: true`: values travel in protobuf Any, which the JSON
   * format cannot carry) or `createGrpcWebTransport` in browsers and
   * Workers, connect-node's transports in Node.
   */
  readonly transport: Transport;
  /**
   * Attach to this session (created if missing); omit to get a new one,
   * or, with a `token` or `getToken`, the token's session.
   */
  readonly sessionId?: string | undefined;
  /**
   * An access token for the session (e.g. from a share link), sent as
   * `authorization: Bearer <token>` on every call. Without `token` and
   * `getToken`, the context sends the owner token the bridge answers when
   * it creates the session ({@link SessionContext.accessToken}).
   */
  readonly token?: string;
  /**
   * Fetches an access token from the app (its backend, a worker minting
   * them): called before the first call, and again whenever the token has
   * less than `refreshTokenBeforeMs` left. Not together with `token`.
   */
  readonly getToken?: () => Promise<string>;
  /** How long before a `getToken` token expires it is fetched again (ms, default 60000). */
  readonly refreshTokenBeforeMs?: number;
  /** Metadata of a new session. */
  readonly metadata?: Readonly<Record<string, string>>;
  /** Sliding TTL of a new session (s); 0 or omitted: the server's default. */
  readonly ttlSeconds?: number;
  /** Tool allowlist of a new session; omitted: every tool. */
  readonly allowedTools?: readonly string[];
  readonly cache?: {
    /** Default TTL of a cached variable (ms, default 5000). */
    readonly ttlMs?: number;
    /** Most variables cached (default 1000). */
    readonly maxEntries?: number;
  };
  /**
   * Keep the cache coherent through a watch stream (default true). Pass
   * false where long-lived streams are unwelcome (e.g. short Worker requests).
   */
  readonly watch?: boolean | WatchOptions;
  /** Send a Heartbeat this often (ms) to keep the session alive; 0: never. */
  readonly heartbeatMs?: number;
  /** Persist the cache across reloads (e.g. `idbPersistence()`). */
  readonly persistence?: PersistenceAdapter;
  /**
   * Keep writes in an outbox until the server answers them (e.g.
   * `idbOutbox()` in browsers, `memoryOutbox()` in Node and Workers): `set`
   * and {@link SessionContext.enqueue} store the write first, show it as
   * pending, and send the stored writes in order; while the bridge is
   * unreachable they wait, across reloads with `idbOutbox`, and are sent
   * when it is back, by one tab. See docs/client.md, "Offline writes".
   */
  readonly outbox?: OutboxStore;
  /**
   * Share changes with other tabs of this origin through BroadcastChannel
   * (default: true in pages, where there are tabs; false elsewhere).
   */
  readonly tabSync?: boolean;
  /** Let {@link VariableWrites.assign} register unknown variables (default false). */
  readonly autoRegister?: boolean;
  /**
   * Embeddings and tensors with more numbers than this travel in the
   * portable binary form (default 1024). Unmodified snakepit Python workers
   * cannot read that form: pass `Infinity` for sessions they share.
   */
  readonly binaryThreshold?: number;
  /** Applied to every call (timeouts, headers). */
  readonly callOptions?: CallOptions;
  /**
   * Send the session id in a header on every call, for a load balancer's
   * session affinity: `true` sends `x-session-id` (what envoy/envoy.yaml
   * hashes on), a string names another header. Default: no header.
   */
  readonly affinityHeader?: boolean | string;
  readonly timers?: TimerProvider;
}

/**
 * A session on a bridge server, with a local cache. The TypeScript port of
 * snakepit's Python SessionContext.
 *
 * @example
 * ```ts
 * import { createConnectTransport } from "@connectrpc/connect-web";
 * import { createSessionContext } from "unified-session-bridge";
 *
 * const ctx = await createSessionContext({
 *   transport: createConnectTransport({ baseUrl: location.origin, useBinaryFormat: true }),
 * });
 * const vars = await ctx.bind({
 *   temperature: { type: "float", default: 0.7, constraints: { min: 0, max: 2 } },
 * });
 * await vars.temperature.set(0.9);      // 1 round trip, validated locally first
 * await vars.temperature.get();         // 0 round trips: served from the cache
 * ```
 */
export interface SessionContext
  extends ReadMethods,
    VariableWrites,
    OptimizationLock,
    AsyncDisposable {
  readonly sessionId: string;
  /**
   * The access token the context sends: the one it was given or last
   * fetched, or the owner token the bridge answered when the context
   * created the session; undefined without one (a bridge in session-id
   * mode opens the session by its id).
   */
  readonly accessToken: string | undefined;
  /**
   * The role {@link SessionContext.accessToken} grants, as the token says (for choosing
   * what to offer; the bridge checks every call); undefined without one.
   */
  readonly accessRole: AccessRoleName | undefined;
  /**
   * Mints a token for this session, e.g. a view-only link's: of `role`
   * (no higher than this context's), for `ttlSeconds` (default: the
   * bridge's `--token-ttl`), and never outliving this context's token.
   * Needs the owner role.
   */
  mintToken(options: { role: AccessRoleName; ttlSeconds?: number }): Promise<MintedToken>;
  /**
   * Whether opening this context created the session on the server (a new
   * session, or an id whose session had expired). Persisted values of an
   * earlier session with that id are discarded then.
   */
  readonly created: boolean;
  /** Resolves once persisted values have been revalidated (at once without persistence). */
  readonly revalidated: Promise<void>;
  /**
   * True when the context opened without reaching the bridge: it was given
   * a `sessionId` and a `persistence` or an `outbox`, and the bridge was
   * unreachable. It shows what was persisted, stores writes in the outbox,
   * and connects when the bridge is back (`created` is then false).
   */
  readonly openedOffline: boolean;

  /** A variable's value, by name or id. */
  get(identifier: string, options?: ReadOptions): Promise<VariableValue>;
  /**
   * The cached snapshot, without any call. The same frozen object is
   * returned until the cached entry changes (a new version, or a version
   * restored from persistence being confirmed). With `{ pending: true }`,
   * a variable with writes not answered yet shows the newest one's value
   * (`snapshot.pending` true, every other field confirmed).
   */
  peek(identifier: string, options?: PeekOptions): Peeked | undefined;
  /**
   * Hands a write to the outbox and returns its two promises: `stored`
   * (kept locally, it will be sent) and `committed` (the server applied
   * it, or refused it). Needs the `outbox` option.
   */
  enqueue(identifier: string, value: VariableValue, options?: WriteOptions): OutboxWrite;
  /** Writes made and not answered yet, oldest first (the outbox's included). */
  pendingWrites(): PendingWrite[];
  /** A typed handle on one variable. */
  variable<V extends VariableValue = VariableValue>(
    name: string,
    options?: { ttlMs?: number },
  ): VariableHandle<V>;
  /** Declares variables once and returns typed handles; one round trip. */
  bind<S extends VariableSchema>(schema: S): Promise<BoundVariables<S>>;
  listTools(): Promise<ToolInfo[]>;
  callTool(name: string, args?: ToolArgs, options?: { signal?: AbortSignal }): Promise<JsonValue>;
  /** Like callTool, with the tool's binary result (`binary`) and metadata too. */
  callToolResult(
    name: string,
    args?: ToolArgs,
    options?: { signal?: AbortSignal },
  ): Promise<ToolCallResult>;
  streamTool(
    name: string,
    args?: ToolArgs,
    options?: { signal?: AbortSignal },
  ): AsyncIterable<JsonValue>;
  /** Subscribes to an event; returns the unsubscribe function. */
  on<K extends keyof SessionContextEvents>(
    type: K,
    listener: (event: SessionContextEvents[K]) => void,
  ): () => void;
  readonly cache: {
    /** Drops one variable from the cache. */
    invalidate(identifier: string): void;
    clear(): void;
    readonly size: number;
    /** True while the watch stream keeps the cache current. */
    readonly live: boolean;
  };
  /**
   * Stops the watch, heartbeat and tab sharing, and empties the cache and
   * the listeners, whatever fails on the way. With `cleanup`, also ends the
   * session on the server and clears its persisted store; if that fails,
   * close rejects and can be called again to retry it.
   */
  close(options?: { cleanup?: boolean }): Promise<void>;
}

/**
 * Opens (or creates) a session and returns its context. Costs one call
 * (InitializeSession); with persistence the cached values are available
 * as soon as this resolves and are revalidated in one batch call.
 */
export async function createSessionContext(
  options: SessionContextOptions,
): Promise<SessionContext> {
  const timers = options.timers ?? systemTimers;
  if (options.token !== undefined && options.getToken !== undefined) {
    throw new ConnectError(
      "pass token or getToken, not both: getToken fetches the tokens it replaces",
      Code.InvalidArgument,
    );
  }
  const tokens = createTokenSource({
    token: options.token,
    getToken: options.getToken,
    refreshBeforeMs: options.refreshTokenBeforeMs ?? 60_000,
    timers,
  });
  // A token names its session: attaching with one needs no id.
  const given =
    options.sessionId ??
    (options.token === undefined && options.getToken === undefined
      ? undefined
      : tokenClaims((await tokens.current()) ?? "").sessionId);
  // The id is known up front when attaching, and once the server minted it otherwise.
  let affinityKey = given ?? "";
  const header = options.affinityHeader === true ? defaultAffinityHeader : options.affinityHeader;
  const authorized = withAccessToken(withHonestTransportErrors(options.transport), tokens);
  const transport =
    typeof header === "string" && header !== ""
      ? withAffinityHeader(authorized, header, () => affinityKey)
      : authorized;
  const client = createClient(BridgeService, transport);
  const call = options.callOptions ?? {};
  const init = await client
    .initializeSession(
      {
        sessionId: given ?? "",
        metadata: options.metadata ?? {},
        ttlSeconds: options.ttlSeconds ?? 0,
        allowedTools: [...(options.allowedTools ?? [])],
      },
      call,
    )
    .catch((reason: unknown) => {
      // A known session with something kept locally opens without the
      // bridge: what was kept shows, writes wait in the outbox.
      const kept = options.persistence !== undefined || options.outbox !== undefined;
      const error = ConnectError.from(reason);
      if (given === undefined || !kept || fromServerReply(error)) throw reason;
      return undefined;
    });
  if (init !== undefined) tokens.adopt(init.accessToken);
  const openedOffline = init === undefined;
  const created = init?.created ?? false;
  const sessionId = init?.sessionId || (given ?? "");
  affinityKey = sessionId;
  const rpc: SessionRpc = { client, sessionId, call };
  const events = createEmitter<SessionContextEvents>();
  const cache = createVariableCache({
    ttlMs: options.cache?.ttlMs ?? 5000,
    maxEntries: options.cache?.maxEntries ?? 1000,
    timers,
  });
  const binaryThreshold = options.binaryThreshold ?? 1024;
  const closing = new AbortController();
  const adapter = options.persistence;
  const persistence =
    adapter === undefined
      ? undefined
      : createPersistenceWriter(adapter, sessionId, timers, (error) =>
          events.emit("persistence-degraded", { error }),
        );
  // Tabs exist where pages do; elsewhere (Node, Workers) a channel would
  // only cost every write a broadcast nobody receives.
  const tabSync = options.tabSync ?? typeof document !== "undefined";
  const local = createLocalCopy({
    cache,
    persistence,
    events,
    openTabs: (onMessage) => (tabSync ? openTabChannel(sessionId, onMessage) : undefined),
  });

  if (adapter !== undefined) {
    await hydrate(adapter, local, sessionId, created, (error) => {
      persistence?.degrade();
      // Nobody can have subscribed before this function returns: report on
      // the next task, so `ctx.on(...)` right after creation hears it.
      timers.setTimeout(() => events.emit("persistence-degraded", { error }), 0);
    });
  }
  const hydrated = cache.size > 0;
  const watch = options.watch ?? true;
  const connection = createConnection({ cache, events, watched: watch !== false, hydrated });
  const resync = createResync(rpc, local, connection, closing.signal);
  const coherence = startCoherence({
    rpc,
    local,
    connection,
    resync,
    watch: watch === false ? false : typeof watch === "object" ? watch : {},
    hydrated,
    timers,
    signal: closing.signal,
  });
  const stopHeartbeat = startHeartbeat(
    rpc,
    connection,
    options.heartbeatMs ?? 0,
    timers,
    closing.signal,
  );

  const reads = createVariableReads(rpc, local, () =>
    connection.state.status === "resyncing" ? connection.state.run : undefined,
  );
  const overlay = createPendingOverlay(cache, {
    listening: () => events.has("pending"),
    announce: (event) => events.emit("pending", event),
  });
  const outbox =
    options.outbox === undefined
      ? undefined
      : createOutboxWrites({
          rpc,
          local,
          overlay,
          store: options.outbox,
          reads,
          connection,
          events,
          binaryThreshold,
          timers,
          signal: closing.signal,
          openedOffline,
        });
  const writes = createVariableWrites(rpc, local, {
    reads,
    events,
    binaryThreshold,
    autoRegister: options.autoRegister === true,
    overlay,
    outbox,
    now: () => timers.now(),
  });
  const lock = createOptimizationLock(rpc, local);
  const handles = createVariableHandles(rpc, local, {
    reads,
    writes,
    events,
    binaryThreshold,
    overlay,
  });

  const close = createClose({
    rpc,
    local,
    connection,
    events,
    adapter,
    persistence,
    abort: () => closing.abort(),
    stopHeartbeat,
    coherence,
    outbox,
    overlay,
  });
  // A session the server just created (again) has nothing to do with the
  // writes an ended session of that id left: they are dropped, as hydrate
  // drops its persisted values.
  await outbox?.start({ discard: created });
  const optimistic = new WeakMap<VariableSnapshot, Peeked>();
  /** peek with `{ pending: true }`: the optimistic snapshot when a write is pending. */
  const peekPending = (identifier: string): Peeked | undefined => {
    const confirmed = cache.peek(identifier)?.peeked;
    const view = confirmed === undefined ? undefined : overlay.snapshot(identifier);
    if (confirmed === undefined || view === undefined) return confirmed;
    let peeked = optimistic.get(view);
    if (peeked === undefined) {
      peeked = Object.freeze({ snapshot: view, possiblyStale: confirmed.possiblyStale });
      optimistic.set(view, peeked);
    }
    return peeked;
  };

  const ctx: SessionContext = {
    sessionId,
    get accessToken() {
      return tokens.token;
    },
    get accessRole() {
      return tokens.token === undefined ? undefined : tokenClaims(tokens.token).role;
    },
    mintToken: (mint) => mintToken(client, sessionId, mint, call),
    created,
    revalidated: connection.revalidated,
    openedOffline,

    register: writes.register,
    get: reads.getValue,
    getVariable: reads.getVariable,

    // The confirmed read is the hot path: one lookup, as reads.peek.
    peek: (identifier, peek) =>
      peek?.pending === true ? peekPending(identifier) : cache.peek(identifier)?.peeked,
    cached: reads.cached,
    set: writes.set,
    enqueue(identifier, value, write) {
      if (outbox === undefined) {
        throw new ConnectError(
          "enqueue() needs an outbox: pass outbox: idbOutbox() (browsers) or memoryOutbox() to createSessionContext",
          Code.FailedPrecondition,
        );
      }
      return outbox.enqueue(identifier, value, write);
    },
    pendingWrites: () => overlay.list(),
    assign: writes.assign,
    exists: reads.exists,
    list: reads.list,
    delete: writes.delete,
    getMany: reads.getMany,
    setMany: writes.setMany,
    batch: writes.batch,
    history: reads.history,
    rollback: writes.rollback,
    startOptimization: lock.startOptimization,
    stopOptimization: lock.stopOptimization,
    withOptimizationLock: lock.withOptimizationLock,
    variable: (name, extra = {}) => handles.variable(name, extra.ttlMs),
    bind: handles.bind,

    listTools: () => listTools(client, sessionId),
    callTool: (name, args = {}, extra = {}) =>
      callTool(client, sessionId, name, args, extra.signal),
    callToolResult: (name, args = {}, extra = {}) =>
      callToolResult(client, sessionId, name, args, extra.signal),
    streamTool: (name, args = {}, extra = {}) =>
      streamTool(client, sessionId, name, args, extra.signal),

    on: (type, listener) => events.on(type, listener),

    cache: {
      invalidate: (identifier) => cache.invalidate(identifier),
      clear: () => cache.clear(),
      get size() {
        return cache.size;
      },
      get live() {
        return cache.live;
      },
    },

    close,
    [Symbol.asyncDispose]: () => ctx.close(),
  };
  return ctx;
}
