/**
 * The Redis store's connection: ioredis clients, one for calls and scripts,
 * one per change feed stream for its blocking reads and one for the
 * session channels' subscriptions, with one status for all.
 * On a Redis Cluster both are ioredis Cluster clients, which send each
 * command to the primary of its key's slot and follow the cluster through
 * failovers and slot migrations. The status changes in one place ({@link RedisConnection}'s
 * `setStatus`); the store's health, and whether its loops go on, follow
 * from it.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { Cluster, Redis } from "ioredis";
import type { ServerTimers, TimerHandle } from "../../common/timers.js";
import { createLogSampler } from "../../observability/log-sampler.js";
import type { Logger } from "../../observability/logger.js";
import type { RedisClusterAddress } from "../redis-url.js";
import { describeRedisError } from "./redis-errors.js";
import { type AnyKeys, type KeyName, runScript, type Script } from "./script.js";

/**
 * Where the connection is:
 * - "connecting": opening both connections (createRedisStore has not returned);
 * - "ready": all are up and the feed reader follows the feed;
 * - "degraded": one is down (ioredis reconnects it, calls fail with
 *   UNAVAILABLE meanwhile), or the feed reader failed and has not checked
 *   the feed for a gap since;
 * - "closing": close() was called; the loops stop;
 * - "closed": all are released, or opening them failed.
 */
export type ConnectionStatus = "connecting" | "ready" | "degraded" | "closing" | "closed";

/** Options of {@link connect}. */
export interface ConnectOptions {
  readonly url: string;
  /** For a Redis Cluster (a `redis+cluster://` URL): its nodes and credentials. */
  readonly cluster?: RedisClusterAddress | undefined;
  /** Connections for the change feed's blocking reads: one per feed stream (default 1). */
  readonly feeds?: number;
  /**
   * "replicated": a durable script (Script.durable) is answered only once a
   * Redis replica has its write (WAIT 1, within half the command timeout).
   * Default "async": once the primary has it.
   */
  readonly durability?: "async" | "replicated" | undefined;
  /** The URL with its password hidden, for messages and logs. */
  readonly shownUrl: string;
  readonly connectTimeoutMs: number;
  readonly commandTimeoutMs: number;
  readonly logger?: Logger | undefined;
  /**
   * The store's timers: the connect deadline here, and the loops' and
   * sweeper's pauses (they reach them through {@link RedisConnection.timers}).
   * ioredis runs its own reconnection and command timeouts on Node's
   * timers: those are the client library's, as a socket's are Node's.
   */
  readonly timers: ServerTimers;
}

/** A client of one Redis server or of a Redis Cluster: the commands the store sends are the same. */
export type RedisClient = Redis | Cluster;

/** The connections and their status. */
export interface RedisConnection {
  /** Calls and scripts; a command unanswered within the command timeout fails. */
  readonly commands: RedisClient;
  /**
   * The change feed's blocking reads, one connection per feed stream: a
   * blocking read holds its connection, and on a Cluster one read cannot
   * name streams of several slots.
   */
  readonly feeds: readonly RedisClient[];
  /** The session channels' subscriptions (session-channels.ts). */
  readonly subscriber: RedisClient;
  /** Whether these are Redis Cluster clients: then every command touches keys of one slot. */
  readonly clustered: boolean;
  readonly status: ConnectionStatus;
  /** Status "ready". */
  readonly healthy: boolean;
  /** Status "closing" or "closed": the loops stop. */
  readonly closing: boolean;
  /** The store's timers and clock, for every part of it. */
  readonly timers: ServerTimers;
  /** Runs `p`, turning what it throws into UNAVAILABLE or RESOURCE_EXHAUSTED (see {@link unavailable}). */
  call<T>(p: () => Promise<T>): Promise<T>;
  /**
   * What a caller is told when Redis failed: UNAVAILABLE, or
   * RESOURCE_EXHAUSTED when Redis is full. What Redis said goes to the log
   * (sampled), never to the caller: its address and replies are internal.
   */
  unavailable(e: unknown): ConnectError;
  /** Runs a script on the command connection, through {@link call}, and decodes its reply. */
  run<K extends KeyName, A extends string, R>(
    script: Script<K, A, R>,
    keys: Pick<AnyKeys, K>,
    args: Readonly<Record<A, string>>,
  ): Promise<R>;
  /**
   * Makes the status follow the feed reader too: "ready" only while
   * `following()` is true. The reader calls {@link update} when it changes.
   */
  follow(following: () => boolean): void;
  /** Derives the status again after something it follows changed. */
  update(): void;
  /**
   * Closes: status "closing", the feed connections dropped, `drain` awaited
   * (the feed reader stops), the command connection quit, status "closed".
   * Resolves at once when closing began already.
   */
  close(drain: () => Promise<void>): Promise<void>;
}

/**
 * Opens the connections.
 *
 * @throws RedisConnectError when Redis cannot be reached within `connectTimeoutMs`.
 */
export async function connect(options: ConnectOptions): Promise<RedisConnection> {
  const { shownUrl, connectTimeoutMs, logger, timers } = options;
  const shared = {
    lazyConnect: true,
    connectTimeout: connectTimeoutMs,
    // Calls fail at once while Redis is away (UNAVAILABLE), never queue.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    retryStrategy: (times: number) => Math.min(50 * 2 ** times, 2000),
  };
  const open = (commandTimeout: number, subscriber = false): RedisClient => {
    const { cluster } = options;
    if (cluster === undefined) {
      // The session channels subscribe again themselves, then check what
      // they missed (session-channels.ts).
      const resubscribe = subscriber ? { autoResubscribe: false } : {};
      return new Redis(options.url, { ...shared, commandTimeout, ...resubscribe });
    }
    const { retryStrategy, ...perNode } = shared;
    return new Cluster(
      cluster.nodes.map(({ host, port }) => ({ host, port })),
      {
        lazyConnect: true,
        enableOfflineQueue: false,
        // (No auto-pipelining: while a slot migrates, a batch that spans
        // the moving slot and another fails as a whole.)
        clusterRetryStrategy: retryStrategy,
        // After a failover the dead primary's slots are served elsewhere:
        // the map is asked for again every second, so calls on them go to
        // the promoted replica within a second of its promotion.
        slotsRefreshInterval: 1000,
        // One subscriber connection per primary, for SSUBSCRIBE.
        ...(subscriber ? { shardedSubscribers: true } : {}),
        redisOptions: {
          ...perNode,
          commandTimeout,
          ...(cluster.username === "" ? {} : { username: cluster.username }),
          ...(cluster.password === "" ? {} : { password: cluster.password }),
          ...(cluster.tls ? { tls: {} } : {}),
        },
      },
    );
  };
  const commands = open(options.commandTimeoutMs);
  // The feed reader blocks up to 5 s per read; a read unanswered well past
  // that (a frozen Redis) fails, so the loop notices.
  const feeds = Array.from({ length: options.feeds ?? 1 }, () => open(10_000));
  const subscriber = open(options.commandTimeoutMs, true);
  const all = [commands, ...feeds, subscriber];

  let status: ConnectionStatus = "connecting";
  let following = () => true;
  /** The one place the status changes: "closing" only goes on to "closed", which is final. */
  const setStatus = (next: ConnectionStatus) => {
    if (status === "closed" || (status === "closing" && next !== "closed")) return;
    status = next;
  };
  const up = () => all.every((c) => c.status === "ready");
  const derived = (): ConnectionStatus => (up() && following() ? "ready" : "degraded");
  // When a connection went down: its loss and its return are logged once
  // each, however many reconnection attempts lie between.
  let lostSince: number | undefined;
  const update = () => {
    if (status !== "ready" && status !== "degraded") return;
    setStatus(derived());
    const down = !up();
    if (down && lostSince === undefined) {
      lostSince = timers.now();
      logger?.warn("Redis connection lost; calls fail with UNAVAILABLE until it is back", {
        store: shownUrl,
        ...(lastError === undefined ? {} : { reason: describeRedisError(lastError) }),
      });
    } else if (!down && lostSince !== undefined) {
      logger?.info("Redis connection back", { store: shownUrl, downMs: timers.now() - lostSince });
      lostSince = undefined;
    }
  };
  // ioredis sets its own status and then emits an event of that name;
  // these are the ones into and out of "ready".
  for (const client of all) {
    for (const event of ["ready", "close", "end"]) client.on(event, update);
  }

  // The connection's own error says more than connect()'s rejection
  // ("Connection is closed"): e.g. "connect ECONNREFUSED 127.0.0.1:6379".
  let lastError: Error | undefined;
  const onError = (error: Error) => {
    lastError = error;
    logger?.debug("redis connection error", { error: describeRedisError(error) });
  };
  for (const client of all) client.on("error", onError);
  let connectTimer: TimerHandle | undefined;
  try {
    // ioredis' connectTimeout covers the TCP connection only; a Redis that
    // accepts but never answers must not hold the start either.
    await Promise.race([
      Promise.all(all.map((c) => c.connect())),
      new Promise((_, reject) => {
        connectTimer = timers.setTimeout(
          () => reject(new Error(`no answer within ${connectTimeoutMs} ms`)),
          connectTimeoutMs,
        );
      }),
    ]);
  } catch (e) {
    setStatus("closed");
    for (const c of all) c.disconnect();
    throw new RedisConnectError(shownUrl, describeRedisError(lastError ?? e), e);
  } finally {
    timers.clearTimeout(connectTimer);
  }
  setStatus(derived());

  // Within the command timeout, which the WAIT is sent under too.
  const waitMs = Math.max(100, Math.floor(options.commandTimeoutMs / 2));
  // Sampled: every caller of a failing store would otherwise write a line.
  const storeFailures = logger
    ? createLogSampler(logger, { level: "warn", msg: "session store call failed", timers })
    : undefined;
  const unavailable = (e: unknown): ConnectError => {
    if (e instanceof ConnectError) return e;
    const message = e instanceof Error ? e.message : String(e);
    storeFailures?.report({ store: shownUrl, error: describeRedisError(e) });
    // Redis at its maxmemory with noeviction refuses writes with "OOM …":
    // retrying does not help until space is freed.
    if (/^(?:ERR Error running script.*)?OOM\b|\bOOM command not allowed/.test(message)) {
      return new ConnectError(
        "the session store is full (its memory limit is reached): the write was refused and nothing changed; it will succeed once sessions expire or are cleaned up",
        Code.ResourceExhausted,
        undefined,
        undefined,
        e,
      );
    }
    return new ConnectError(
      "the session store is unavailable; retry shortly",
      Code.Unavailable,
      undefined,
      undefined,
      e,
    );
  };
  const call = async <T>(p: () => Promise<T>): Promise<T> => {
    try {
      return await p();
    } catch (e) {
      throw unavailable(e);
    }
  };

  return {
    commands,
    feeds,
    subscriber,
    clustered: options.cluster !== undefined,
    timers,
    get status() {
      return status;
    },
    get healthy() {
      return status === "ready";
    },
    get closing() {
      return status === "closing" || status === "closed";
    },
    call,
    unavailable,
    run: (script, keys, args) =>
      call(() =>
        runScript(
          commands,
          script,
          keys,
          args,
          timers,
          script.durable && options.durability === "replicated" ? waitMs : undefined,
        ),
      ),
    follow(next) {
      following = next;
      update();
    },
    update,
    async close(drain) {
      if (status === "closing" || status === "closed") return;
      setStatus("closing");
      for (const feed of feeds) feed.disconnect();
      subscriber.disconnect();
      await drain();
      await commands.quit().catch(() => commands.disconnect());
      setStatus("closed");
    },
  };
}

/** Why {@link connect} could not connect; `reason` is the message without the URL. */
export class RedisConnectError extends Error {
  override name = "RedisConnectError";
  constructor(
    url: string,
    readonly reason: string,
    cause: unknown,
  ) {
    super(`cannot connect to the session store at ${url}: ${reason}`, { cause });
  }
}
