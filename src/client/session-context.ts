import { type Any, timestampMs } from "@bufbuild/protobuf/wkt";
import {
  type CallOptions,
  Code,
  ConnectError,
  createClient,
  type Transport,
} from "@connectrpc/connect";
import {
  BridgeService,
  type Variable,
  type VariableUpdate,
} from "../gen/snakepit/bridge/bridge_pb.js";
import {
  decodeValue,
  encodeValue,
  inferType,
  type JsonValue,
  parseConstraints,
  type ValueOf,
  type VariableType,
  type VariableValue,
  validateValue,
} from "../values/index.js";
import { defaultAffinityHeader, withAffinityHeader } from "./affinity-header.js";
import { createEmitter } from "./events.js";
import {
  createPersistenceWriter,
  decodeVariableBytes,
  encodeVariable,
  openTabChannel,
  type PersistenceAdapter,
  type PersistenceWriter,
  type TabChannel,
} from "./persistence.js";
import type {
  BoundVariables,
  ReadOptions,
  VariableHandle,
  VariableSchema,
  WriteOptions,
} from "./schema.js";
import type { SessionContextEvents } from "./session-events.js";
import { callTool, listTools, streamTool, type ToolArgs, type ToolInfo } from "./session-tools.js";
import { systemTimers, type TimerProvider } from "./timers.js";
import { createVariableCache } from "./variable-cache.js";
import { decodeVariable, type VariableSnapshot } from "./variable-snapshot.js";
import { runWatch, type WatchOptions } from "./watch-coherence.js";
import { createWriteCoalescer, type QueuedWrite, type WriteOutcome } from "./write-coalescer.js";

/** Options of {@link createSessionContext}. Fixed for the context's life. */
export interface SessionContextOptions {
  /**
   * How to reach the bridge: connect-web's `createConnectTransport` (with
   * `useBinaryFormat: true`: values travel in protobuf Any, which the JSON
   * format cannot carry) or `createGrpcWebTransport` in browsers and
   * Workers, connect-node's transports in Node.
   */
  readonly transport: Transport;
  /** Attach to this session (created if missing); omit to get a new one. */
  readonly sessionId?: string | undefined;
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
   * Share changes with other tabs of this origin through BroadcastChannel
   * (default: true in pages, where there are tabs; false elsewhere).
   */
  readonly tabSync?: boolean;
  /** Let {@link SessionContext.assign} register unknown variables (default false). */
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

/** Result of {@link SessionContext.setMany}. */
export interface BatchResult {
  /** False only for an atomic batch that was refused as a whole. */
  readonly success: boolean;
  /** Error message per failed key. */
  readonly errors: Readonly<Record<string, string>>;
  /** The stored snapshot per applied key. */
  readonly variables: Readonly<Record<string, VariableSnapshot>>;
}

/** Collects writes and sends them in one call. */
export interface BatchBuilder {
  set(identifier: string, value: VariableValue): BatchBuilder;
  commit(options?: {
    atomic?: boolean;
    metadata?: Readonly<Record<string, string>>;
  }): Promise<BatchResult>;
}

/** One entry of a variable's history. */
export interface HistoryEntry {
  readonly version: number;
  readonly value: VariableValue;
  readonly timestamp: number;
  readonly changedBy: string;
  readonly metadata: Readonly<Record<string, string>>;
}

/** A cached variable and how much it can be trusted. */
export interface Peeked<V extends VariableValue = VariableValue> {
  readonly snapshot: VariableSnapshot<V>;
  /** Served from persistence and not revalidated yet. */
  readonly possiblyStale: boolean;
}

/**
 * A session on a bridge server, with a local cache. The TypeScript port of
 * snakepit's Python SessionContext.
 *
 * @example
 * ```ts
 * import { createConnectTransport } from "@connectrpc/connect-web";
 * import { createSessionContext } from "unified-bridge";
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
export interface SessionContext extends AsyncDisposable {
  readonly sessionId: string;
  /**
   * Whether opening this context created the session on the server (a new
   * session, or an id whose session had expired). Persisted values of an
   * earlier session with that id are discarded then.
   */
  readonly created: boolean;
  /** Resolves once persisted values have been revalidated (at once without persistence). */
  readonly revalidated: Promise<void>;

  register<T extends VariableType>(
    name: string,
    type: T,
    initialValue: ValueOf<T>,
    options?: {
      constraints?: Readonly<Record<string, unknown>>;
      metadata?: Readonly<Record<string, string>>;
    },
  ): Promise<VariableSnapshot<ValueOf<T>>>;
  /** A variable's value, by name or id. */
  get(identifier: string, options?: ReadOptions): Promise<VariableValue>;
  /** A variable's snapshot, by name or id. */
  getVariable(identifier: string, options?: ReadOptions): Promise<VariableSnapshot>;
  /** The cached snapshot, without any call. */
  peek(identifier: string): Peeked | undefined;
  /** Every cached snapshot, without any call. */
  cached(): Peeked[];
  set(identifier: string, value: VariableValue, options?: WriteOptions): Promise<VariableSnapshot>;
  /**
   * Sets a variable, registering it with an inferred type if it does not
   * exist: the original's `ctx["x"] = v`. Needs `autoRegister: true`; emits
   * "registered" when it registers.
   */
  assign(name: string, value: VariableValue): Promise<VariableSnapshot>;
  exists(identifier: string): Promise<boolean>;
  /** Variables whose names match a glob ('*', '?'). */
  list(pattern?: string): Promise<VariableSnapshot[]>;
  delete(identifier: string): Promise<void>;
  /** Many variables in one call (cache hits need none); NOT_FOUND if any is missing. */
  getMany(
    identifiers: readonly string[],
    options?: ReadOptions,
  ): Promise<Record<string, VariableSnapshot>>;
  /** Many writes in one call; atomic: all or nothing. */
  setMany(
    updates: Readonly<Record<string, VariableValue>>,
    options?: { atomic?: boolean; metadata?: Readonly<Record<string, string>> },
  ): Promise<BatchResult>;
  batch(): BatchBuilder;
  history(identifier: string, options?: { limit?: number }): Promise<HistoryEntry[]>;
  /** Writes the value of `version` as a new version. */
  rollback(identifier: string, version: number): Promise<VariableSnapshot>;
  startOptimization(
    identifier: string,
    optimizerId: string,
    config?: Readonly<Record<string, string>>,
  ): Promise<string>;
  stopOptimization(
    identifier: string,
    options?: { optimizerId?: string; force?: boolean },
  ): Promise<void>;
  /**
   * Locks the variables for `optimizerId`, runs `fn`, and always releases
   * them. Inside `fn`, write with `{ optimizerId }`.
   */
  withOptimizationLock<T>(
    identifiers: readonly string[],
    optimizerId: string,
    fn: () => Promise<T>,
  ): Promise<T>;
  /** A typed handle on one variable. */
  variable<V extends VariableValue = VariableValue>(
    name: string,
    options?: { ttlMs?: number },
  ): VariableHandle<V>;
  /** Declares variables once and returns typed handles; one round trip. */
  bind<S extends VariableSchema>(schema: S): Promise<BoundVariables<S>>;
  listTools(): Promise<ToolInfo[]>;
  callTool(name: string, args?: ToolArgs, options?: { signal?: AbortSignal }): Promise<JsonValue>;
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
   * Stops the watch, heartbeat and tab sharing. With `cleanup`, also ends
   * the session on the server and clears its persisted store.
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
  // The id is known up front when attaching, and once the server minted it otherwise.
  let affinityKey = options.sessionId ?? "";
  const header = options.affinityHeader === true ? defaultAffinityHeader : options.affinityHeader;
  const transport =
    typeof header === "string" && header !== ""
      ? withAffinityHeader(options.transport, header, () => affinityKey)
      : options.transport;
  const client = createClient(BridgeService, transport);
  const call = options.callOptions ?? {};
  const init = await client.initializeSession(
    {
      sessionId: options.sessionId ?? "",
      metadata: options.metadata ?? {},
      ttlSeconds: options.ttlSeconds ?? 0,
      allowedTools: [...(options.allowedTools ?? [])],
    },
    call,
  );
  const sessionId = init.sessionId || (options.sessionId ?? "");
  affinityKey = sessionId;
  const events = createEmitter<SessionContextEvents>();
  const cache = createVariableCache({
    ttlMs: options.cache?.ttlMs ?? 5000,
    maxEntries: options.cache?.maxEntries ?? 1000,
    timers,
  });
  const binaryThreshold = options.binaryThreshold ?? 1024;
  const closing = new AbortController();
  const inflight = new Map<string, Promise<VariableSnapshot>>();
  let revalidation: Promise<void> | undefined;

  const persistence: PersistenceWriter | undefined =
    options.persistence === undefined
      ? undefined
      : createPersistenceWriter(options.persistence, sessionId, timers, (error) =>
          events.emit("persistence-degraded", { error }),
        );

  /** Stores a variable and tells everyone who should know. */
  const accept = (
    message: Variable,
    origin: "local" | "server" | "tab",
    sameVersion = false,
  ): VariableSnapshot => {
    const decoded = decodeVariable(message);
    const outcome = cache.put(decoded, { sameVersion });
    if (outcome === "stored") {
      persistence?.put(decoded.snapshot.id, message);
      events.emit("change", { name: decoded.snapshot.name, snapshot: decoded.snapshot, origin });
    }
    // Share our own writes even when our watch push got here first: other
    // tabs may not watch, and they drop versions they already have.
    if (origin === "local") tabs?.post({ kind: "variable", bytes: encodeVariable(message) });
    // The cache may hold a newer version than this message: return that.
    return cache.peek(decoded.snapshot.id)?.variable.snapshot ?? decoded.snapshot;
  };

  const forget = (id: string, name: string | undefined, origin: "local" | "server" | "tab") => {
    const entry = cache.remove(id);
    persistence?.remove(id);
    if (origin === "local") tabs?.post({ kind: "deleted", id });
    const gone = entry?.variable.snapshot.name ?? name;
    if (gone !== undefined) events.emit("change", { name: gone, snapshot: undefined, origin });
  };

  // Tabs exist where pages do; elsewhere (Node, Workers) a channel would
  // only cost every write a broadcast nobody receives.
  const tabSync = options.tabSync ?? typeof document !== "undefined";
  const tabs: TabChannel | undefined = !tabSync
    ? undefined
    : openTabChannel(sessionId, (message) => {
        if (message.kind === "variable") accept(decodeVariableBytes(message.bytes), "tab");
        else forget(message.id, undefined, "tab");
      });

  // Hydrate from persistence before anything else reads the cache. A
  // session the server just created (again) has nothing in common with
  // what an earlier session of that id left behind: discard it.
  if (options.persistence !== undefined && init.created) {
    try {
      await options.persistence.clear(sessionId);
    } catch (error) {
      persistence?.degrade();
      timers.setTimeout(() => events.emit("persistence-degraded", { error }), 0);
    }
  } else if (options.persistence !== undefined) {
    try {
      for (const bytes of await options.persistence.load(sessionId)) {
        cache.put(decodeVariable(decodeVariableBytes(bytes)), { possiblyStale: true });
      }
    } catch (error) {
      persistence?.degrade();
      // Nobody can have subscribed before this function returns: report on
      // the next task, so `ctx.on(...)` right after creation hears it.
      timers.setTimeout(() => events.emit("persistence-degraded", { error }), 0);
    }
  }

  /** Re-reads every cached variable in one call; returns how many. */
  const resync = async (): Promise<number> => {
    const ids = [...cache.entries()].map((e) => e.variable.snapshot.id);
    if (ids.length === 0) return 0;
    const run = (async () => {
      const res = await client.getVariables(
        { sessionId, variableIdentifiers: ids, includeMetadata: true },
        { ...call, signal: closing.signal },
      );
      for (const message of Object.values(res.variables)) accept(message, "server");
      for (const id of res.missingVariables) forget(id, undefined, "server");
    })();
    revalidation = run;
    try {
      await run;
    } finally {
      if (revalidation === run) revalidation = undefined;
    }
    return ids.length;
  };

  const onUpdate = (update: VariableUpdate) => {
    if (update.updateType === "deleted") {
      forget(update.variableId, update.variable?.name, "server");
    } else if (update.variable !== undefined) {
      accept(update.variable, "server", update.updateType.startsWith("optimization_"));
    }
  };

  let resolveRevalidated: () => void = () => {};
  const revalidated = new Promise<void>((resolve) => {
    resolveRevalidated = resolve;
  });
  const hydrated = cache.size > 0;
  if (!hydrated) resolveRevalidated();

  const watchOptions = options.watch ?? true;
  let resynced = 0;
  let watching: Promise<void> | undefined;
  if (watchOptions !== false) {
    watching = runWatch(
      {
        open: (signal) =>
          client.watchVariables({ sessionId, syncMarker: true }, { ...call, signal, timeoutMs: 0 }),
        resync: async () => {
          resynced = await resync();
          resolveRevalidated();
        },
        onUpdate,
        setLive: (live) => {
          const was = cache.live;
          cache.setLive(live);
          if (was && !live) events.emit("stale", {});
          if (!was && live) events.emit("resynchronized", { variables: resynced });
        },
        onReconnecting: (attempt, delayMs, error) =>
          events.emit("reconnecting", { attempt, delayMs, error }),
        onSessionEnded: (error) => events.emit("session-ended", { error }),
        timers,
      },
      typeof watchOptions === "object" ? watchOptions : {},
      closing.signal,
    );
  } else if (hydrated) {
    resync().then(
      (variables) => {
        resolveRevalidated();
        events.emit("resynchronized", { variables });
      },
      // The hydrated values stay marked possibly stale; reads fetch them.
      () => events.emit("stale", {}),
    );
  }

  let heartbeat: unknown;
  const beat = () => {
    heartbeat = timers.setTimeout(async () => {
      try {
        const res = await client.heartbeat({ sessionId }, call);
        if (!res.sessionValid) {
          events.emit("session-ended", {
            error: new ConnectError("session expired or was cleaned up", Code.NotFound),
          });
          return;
        }
      } catch {
        // A missed heartbeat is retried on the next beat; the watch stream
        // reports connectivity problems.
      }
      if (!closing.signal.aborted) beat();
    }, options.heartbeatMs ?? 0);
  };
  if ((options.heartbeatMs ?? 0) > 0) beat();

  // --- reads -------------------------------------------------------------

  const fetchOne = (identifier: string, bypassCache: boolean): Promise<VariableSnapshot> => {
    const key = bypassCache ? `!${identifier}` : identifier;
    let pending = inflight.get(key);
    if (pending === undefined) {
      pending = client
        .getVariable({ sessionId, variableIdentifier: identifier, bypassCache }, call)
        .then((res) => {
          if (res.variable === undefined) {
            throw new ConnectError(
              `server returned no variable for '${identifier}'`,
              Code.Internal,
            );
          }
          return accept(res.variable, "server");
        })
        .finally(() => inflight.delete(key));
      inflight.set(key, pending);
    }
    return pending;
  };

  const getVariable = async (
    identifier: string,
    read: ReadOptions = {},
  ): Promise<VariableSnapshot> => {
    if (read.bypassCache !== true) {
      const hit = cache.fresh(identifier, read.maxAgeMs);
      if (hit !== undefined) return hit.variable.snapshot;
      // A revalidation in flight answers for a hydrated entry: no extra call.
      if (revalidation !== undefined && cache.peek(identifier)?.possiblyStale === true) {
        await revalidation.catch(() => undefined);
        const after = cache.fresh(identifier, read.maxAgeMs);
        if (after !== undefined) return after.variable.snapshot;
      }
    }
    return fetchOne(identifier, read.bypassCache === true);
  };

  /**
   * The hot path of every read: a fresh hit resolves without entering an
   * async function, so a cached read costs one map lookup and one settled
   * promise.
   */
  const getValue = (identifier: string, read?: ReadOptions): Promise<VariableValue> => {
    if (read === undefined) {
      const hit = cache.fresh(identifier);
      if (hit !== undefined) return Promise.resolve(hit.variable.snapshot.value);
    }
    return getVariable(identifier, read).then((snapshot) => snapshot.value);
  };

  // --- writes ------------------------------------------------------------

  /** Validates against what the cache knows and encodes for the wire. */
  const prepare = (identifier: string, value: VariableValue): { any: Any; binary?: Uint8Array } => {
    const entry = cache.peek(identifier);
    if (entry !== undefined) {
      const { type, name } = entry.variable.snapshot;
      const normalized = validateValue(type, value, entry.variable.constraints, name);
      return encodeValue(type, normalized, { binaryThreshold });
    }
    // Unknown locally: encode by shape; the server validates against the
    // variable's real type and constraints.
    return encodeValue(shapeType(value), value, { binaryThreshold });
  };

  const sendOne = async (
    w: QueuedWrite,
    expectedVersion?: number,
  ): Promise<Variable | undefined> => {
    const res = await client.setVariable(
      {
        sessionId,
        variableIdentifier: w.identifier,
        value: w.any,
        binaryValue: w.binary ?? NO_BYTES,
        metadata: w.metadata,
        expectedVersion: expectedVersion ?? 0,
        expectVersionZero: expectedVersion === 0,
      },
      call,
    );
    return res.variable;
  };

  // Concurrent plain writes share calls (see write-coalescer.ts); a
  // compare-and-swap goes alone, since a batch has no per-key expectation.
  const coalesced = createWriteCoalescer({
    one: (w) => sendOne(w),
    async many(writes) {
      const updates: Record<string, Any> = {};
      const binaryUpdates: Record<string, Uint8Array> = {};
      for (const w of writes) {
        updates[w.identifier] = w.any;
        if (w.binary !== undefined) binaryUpdates[w.identifier] = w.binary;
      }
      const res = await client.setVariables(
        { sessionId, updates, binaryUpdates, metadata: writes[0]?.metadata ?? {}, atomic: false },
        call,
      );
      const outcomes = new Map<QueuedWrite, WriteOutcome>();
      for (const w of writes) {
        const message = res.errors[w.identifier];
        outcomes.set(
          w,
          message === undefined
            ? { variable: res.variables[w.identifier] }
            : { error: new ConnectError(message, res.errorCodes[w.identifier] ?? Code.Unknown) },
        );
      }
      return outcomes;
    },
  });

  const set = async (identifier: string, value: VariableValue, write: WriteOptions = {}) => {
    const encoded = prepare(identifier, value);
    const metadata = { ...write.metadata };
    if (write.optimizerId !== undefined) metadata.optimizer_id = write.optimizerId;
    const queued: QueuedWrite = {
      identifier,
      variableKey: cache.peek(identifier)?.variable.snapshot.id ?? identifier,
      any: encoded.any,
      binary: encoded.binary,
      metadata,
    };
    const stored =
      write.expectedVersion === undefined
        ? await coalesced(queued)
        : await sendOne(queued, write.expectedVersion);
    if (stored === undefined) {
      cache.invalidate(identifier);
      return getVariable(identifier);
    }
    return accept(stored, "local");
  };

  const setMany = async (
    updates: Readonly<Record<string, VariableValue>>,
    batch: { atomic?: boolean; metadata?: Readonly<Record<string, string>> } = {},
  ): Promise<BatchResult> => {
    const errors: Record<string, string> = {};
    const wire: Record<string, Any> = {};
    const binary: Record<string, Uint8Array> = {};
    for (const [key, value] of Object.entries(updates)) {
      try {
        const encoded = prepare(key, value);
        wire[key] = encoded.any;
        if (encoded.binary !== undefined) binary[key] = encoded.binary;
      } catch (e) {
        errors[key] = ConnectError.from(e).rawMessage;
      }
    }
    // An atomic batch that fails locally would fail on the server too.
    if (batch.atomic === true && Object.keys(errors).length > 0) {
      return { success: false, errors, variables: {} };
    }
    if (Object.keys(wire).length === 0) {
      return {
        success: batch.atomic !== true || Object.keys(errors).length === 0,
        errors,
        variables: {},
      };
    }
    const res = await client.setVariables(
      {
        sessionId,
        updates: wire,
        binaryUpdates: binary,
        atomic: batch.atomic === true,
        metadata: batch.metadata ?? {},
      },
      call,
    );
    const variables: Record<string, VariableSnapshot> = {};
    for (const [key, message] of Object.entries(res.variables))
      variables[key] = accept(message, "local");
    if (Object.keys(res.variables).length === 0) {
      for (const key of Object.keys(res.newVersions)) cache.invalidate(key);
    }
    return { success: res.success, errors: { ...errors, ...res.errors }, variables };
  };

  // --- handles -----------------------------------------------------------

  const handle = <V extends VariableValue>(name: string, ttlMs?: number): VariableHandle<V> => {
    if (ttlMs !== undefined) cache.setTtl(name, ttlMs);
    return {
      name,
      get: (read) => getValue(name, read) as Promise<V>,
      snapshot: async (read) => (await getVariable(name, read)) as VariableSnapshot<V>,
      set: async (value, write) => (await set(name, value, write)) as VariableSnapshot<V>,
      peek: () => cache.peek(name)?.variable.snapshot as VariableSnapshot<V> | undefined,
      subscribe: (listener) =>
        events.on("change", (event) => {
          if (event.name === name) listener(event.snapshot as VariableSnapshot<V> | undefined);
        }),
    };
  };

  const ctx: SessionContext = {
    sessionId,
    created: init.created,
    revalidated,

    async register(name, type, initialValue, extra = {}) {
      const constraints = parseConstraints(type, extra.constraints ?? {});
      const value = validateValue(type, initialValue, constraints, name);
      const encoded = encodeValue(type, value, { binaryThreshold });
      const res = await client.registerVariable(
        {
          sessionId,
          name,
          type,
          initialValue: encoded.any,
          initialBinaryValue: encoded.binary ?? new Uint8Array(0),
          constraintsJson: constraints.json,
          metadata: extra.metadata ?? {},
        },
        call,
      );
      if (res.variable === undefined) return (await fetchOne(res.variableId, false)) as never;
      return accept(res.variable, "local") as VariableSnapshot<ValueOf<typeof type>>;
    },

    get: getValue,
    getVariable,

    peek(identifier) {
      const entry = cache.peek(identifier);
      return entry === undefined
        ? undefined
        : { snapshot: entry.variable.snapshot, possiblyStale: entry.possiblyStale };
    },

    cached() {
      return [...cache.entries()].map((e) => ({
        snapshot: e.variable.snapshot,
        possiblyStale: e.possiblyStale,
      }));
    },

    set,

    async assign(name, value) {
      if (options.autoRegister !== true) {
        throw new ConnectError(
          "assign() registers unknown variables and is off: pass autoRegister: true to createSessionContext, or call register()",
          Code.FailedPrecondition,
        );
      }
      if (cache.peek(name) !== undefined) return set(name, value);
      try {
        return await set(name, value);
      } catch (e) {
        if (!(e instanceof ConnectError) || e.code !== Code.NotFound) throw e;
      }
      const type = inferType(value);
      const snapshot = await ctx.register(name, type, value as never);
      events.emit("registered", { name, type, inferred: true });
      return snapshot;
    },

    async exists(identifier) {
      if (cache.fresh(identifier) !== undefined) return true;
      const res = await client.getVariables(
        { sessionId, variableIdentifiers: [identifier], includeMetadata: true },
        call,
      );
      const message = res.variables[identifier];
      if (message !== undefined) accept(message, "server");
      return message !== undefined;
    },

    async list(pattern = "") {
      const res = await client.listVariables({ sessionId, pattern }, call);
      return res.variables.map((message) => accept(message, "server"));
    },

    async delete(identifier) {
      const known = cache.peek(identifier)?.variable.snapshot;
      await client.deleteVariable({ sessionId, variableIdentifier: identifier }, call);
      if (known !== undefined) forget(known.id, known.name, "local");
      else cache.invalidate(identifier);
    },

    async getMany(identifiers, read = {}) {
      const out: Record<string, VariableSnapshot> = {};
      const misses: string[] = [];
      for (const identifier of identifiers) {
        const hit = read.bypassCache === true ? undefined : cache.fresh(identifier, read.maxAgeMs);
        if (hit !== undefined) out[identifier] = hit.variable.snapshot;
        else misses.push(identifier);
      }
      if (misses.length === 0) return out;
      const res = await client.getVariables(
        {
          sessionId,
          variableIdentifiers: misses,
          includeMetadata: true,
          bypassCache: read.bypassCache === true,
        },
        call,
      );
      for (const [identifier, message] of Object.entries(res.variables)) {
        out[identifier] = accept(message, "server");
      }
      if (res.missingVariables.length > 0) {
        throw new ConnectError(
          `variables not found: ${res.missingVariables.join(", ")}`,
          Code.NotFound,
        );
      }
      return out;
    },

    setMany,

    batch() {
      const updates: Record<string, VariableValue> = {};
      const builder: BatchBuilder = {
        set(identifier, value) {
          updates[identifier] = value;
          return builder;
        },
        commit: (batch) => setMany(updates, batch),
      };
      return builder;
    },

    async history(identifier, { limit = 0 } = {}) {
      const res = await client.getVariableHistory(
        { sessionId, variableIdentifier: identifier, limit },
        call,
      );
      return res.entries.map((entry) => {
        const decoded = decodeValue(
          entry.value,
          entry.binaryValue.length > 0 ? entry.binaryValue : undefined,
        );
        return {
          version: entry.version,
          value: validateValue(decoded.type, decoded.value),
          timestamp: entry.timestamp === undefined ? 0 : timestampMs(entry.timestamp),
          changedBy: entry.changedBy,
          metadata: entry.metadata,
        };
      });
    },

    async rollback(identifier, version) {
      const res = await client.rollbackVariable(
        { sessionId, variableIdentifier: identifier, targetVersion: version },
        call,
      );
      if (res.variable === undefined)
        throw new ConnectError("rollback returned no variable", Code.Internal);
      return accept(res.variable, "local");
    },

    async startOptimization(identifier, optimizerId, config = {}) {
      const res = await client.startOptimization(
        { sessionId, variableIdentifier: identifier, optimizerId, optimizerConfig: config },
        call,
      );
      // Lock state arrives by the watch; without it, read it fresh next time.
      if (!cache.live) cache.invalidate(identifier);
      return res.optimizationId;
    },

    async stopOptimization(identifier, stop = {}) {
      await client.stopOptimization(
        {
          sessionId,
          variableIdentifier: identifier,
          optimizerId: stop.optimizerId ?? "",
          force: stop.force === true,
        },
        call,
      );
      if (!cache.live) cache.invalidate(identifier);
    },

    async withOptimizationLock(identifiers, optimizerId, fn) {
      // Lock everything at once (others see the whole set locked within one
      // round trip), then release whatever was taken, however fn ends.
      const attempts = await Promise.allSettled(
        identifiers.map((identifier) => ctx.startOptimization(identifier, optimizerId)),
      );
      const locked = identifiers.filter((_, i) => attempts[i]?.status === "fulfilled");
      const refused = attempts.find((r): r is PromiseRejectedResult => r.status === "rejected");
      let outcome:
        | { ok: true; value: Awaited<ReturnType<typeof fn>> }
        | { ok: false; error: unknown };
      if (refused !== undefined) outcome = { ok: false, error: refused.reason };
      else {
        try {
          outcome = { ok: true, value: await fn() };
        } catch (error) {
          outcome = { ok: false, error };
        }
      }
      const released = await Promise.allSettled(
        locked.map((identifier) => ctx.stopOptimization(identifier, { optimizerId })),
      );
      if (!outcome.ok) throw outcome.error;
      // A release failure matters more than the result: a stuck lock blocks
      // every other writer.
      const failed = released.find((r): r is PromiseRejectedResult => r.status === "rejected");
      if (failed !== undefined) throw failed.reason;
      return outcome.value;
    },

    variable: (name, extra = {}) => handle(name, extra.ttlMs),

    async bind(schema) {
      const names = Object.keys(schema);
      const declarations = names.map((name) => {
        const d = schema[name] as VariableSchema[string];
        const constraints = parseConstraints(d.type, d.constraints ?? {});
        const value = validateValue(d.type, d.default, constraints, name);
        const encoded = encodeValue(d.type, value, { binaryThreshold });
        return {
          name,
          type: d.type,
          initialValue: encoded.any,
          initialBinaryValue: encoded.binary ?? new Uint8Array(0),
          constraintsJson: constraints.json,
          metadata: d.metadata ?? {},
        };
      });
      const res = await client.registerVariables(
        { sessionId, ifAbsent: true, variables: declarations },
        call,
      );
      for (const message of res.variables) accept(message, "server");
      const bound: Record<string, VariableHandle> = {};
      for (const name of names) bound[name] = handle(name, schema[name]?.ttlMs);
      return bound as BoundVariables<typeof schema>;
    },

    listTools: () => listTools(client, sessionId),
    callTool: (name, args = {}, extra = {}) =>
      callTool(client, sessionId, name, args, extra.signal),
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

    async close({ cleanup = false } = {}) {
      if (closing.signal.aborted) return;
      closing.abort();
      if (heartbeat !== undefined) timers.clearTimeout(heartbeat);
      tabs?.close();
      await watching;
      await revalidation?.catch(() => undefined);
      if (cleanup) persistence?.stop();
      else await persistence?.flush();
      persistence?.stop();
      if (cleanup) {
        await client.cleanupSession({ sessionId, force: true }, call);
        await options.persistence?.clear(sessionId);
      }
      cache.clear();
      events.clear();
    },

    [Symbol.asyncDispose]: () => ctx.close(),
  };
  return ctx;
}

const NO_BYTES = new Uint8Array(0);

/** The wire type a value of unknown variable type is sent as. */
function shapeType(value: VariableValue): VariableType {
  if (typeof value === "object" && value !== null && !Array.isArray(value)) return "tensor";
  if (typeof value === "string") return "string";
  return inferType(value);
}
