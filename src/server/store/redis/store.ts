/**
 * A {@link SessionStore} on Redis, for several bridge replicas serving the
 * same sessions: what one replica writes, every replica reads, watches and
 * expires, and nothing acknowledged is lost when a replica dies.
 *
 * Each replica keeps a copy of the sessions it serves, tagged with the
 * session's revision in Redis (session-cache.ts). A read runs one script
 * that refreshes the sliding TTL and returns the session only if its
 * revision moved (1 round trip). A transaction commits what it staged
 * with one script that checks the revision (committer.ts) and publishes
 * the commit on the session's channel: a replica follows the sessions it
 * has watch streams on (session-channels.ts), so it reads the changes of
 * the sessions it serves, in commit order, its own included. Session ends
 * and tool registrations go on the change feed that every replica reads
 * (feed-reader.ts), trimmed by length and age. Expiry is an index of sessions by expiry
 * time that every replica sweeps (sweeper.ts); the script that ends a
 * session runs once, whoever wins. Remote tools and the audit trail are
 * shared by every replica (shared-tools.ts, shared-audit.ts).
 *
 * On a single Redis primary the session's own keys share its `{id}` hash
 * tag and the expiry index, the feed and the counters are one per
 * deployment. On a Redis Cluster (a `redis+cluster://` URL) those are kept
 * per group of sessions, each group in one slot, so that every script
 * touches one slot and the load spreads over the primaries (script.ts,
 * keySpace), and the deployment's limits are counted apart
 * (cluster-limits.ts).
 */
import { randomBytes } from "node:crypto";
import { type ServerTimers, systemTimers } from "../../common/timers.js";
import type { Logger } from "../../observability/logger.js";
import { clientBytesReached, clientQuotaReached, sessionLimitReached } from "../errors.js";
import { parseRedisUrl } from "../redis-url.js";
import {
  createTransaction,
  createView,
  emptySessionState,
  newSessionRecord,
} from "../session-state.js";
import type { SessionEndReason, SessionStore } from "../session-store.js";
import { createClusterLimits } from "./cluster-limits.js";
import { encodeFeedChanges } from "./codec.js";
import { createCommitter } from "./committer.js";
import { connect } from "./connection.js";
import { createFeedDelivery } from "./feed-delivery.js";
import { startFeedReader } from "./feed-reader.js";
import { createFeedWrites } from "./feed-writes.js";
import { keySpace } from "./script.js";
import { type CreateReply, createScript, endScript, loadScript } from "./scripts.js";
import { type Cached, createSessionCache } from "./session-cache.js";
import { startSessionChannels } from "./session-channels.js";
import { createSharedAudit } from "./shared-audit.js";
import { createSharedTools } from "./shared-tools.js";
import { noWrites, payloadOf, stage, stateOf } from "./staging.js";
import { startSweeper } from "./sweeper.js";

/** Options of {@link createRedisStore}. */
export interface RedisStoreOptions {
  /**
   * `redis://[user:password@]host:port[/db]` or `rediss://…` (TLS), or a
   * Redis Cluster as `redis+cluster://[user:password@]host:port[,host:port…]`.
   */
  readonly url: string;
  /** Prepended to every key, so several deployments can share one Redis (default "ub:"). */
  readonly keyPrefix?: string;
  /** Clock in epoch milliseconds (default: `timers.now`); expiry follows it (tests replace it). */
  readonly now?: () => number;
  /**
   * Runs the expiry sweeper, the connect deadline and the change feed's
   * and commits' retry pauses (default: Node's timers).
   */
  readonly timers?: ServerTimers;
  /** How often this replica sweeps expired sessions (default 1000 ms; 0 disables it). */
  readonly sweepIntervalMs?: number;
  /** How long connecting may take before createRedisStore rejects (default 5000 ms). */
  readonly connectTimeoutMs?: number;
  /** How long one command may take before the call fails with UNAVAILABLE (default 2000 ms). */
  readonly commandTimeoutMs?: number;
  /**
   * When a write is acknowledged: "async" (default) once the Redis primary
   * has it; "replicated" once a Redis replica has it too (WAIT), so that a
   * primary's failover loses no acknowledged write. A write no replica
   * confirms within half the command timeout fails with UNAVAILABLE.
   */
  readonly durability?: "async" | "replicated";
  /** Entries the change feed keeps (approximately; default 100,000). */
  readonly feedLength?: number;
  /**
   * How long the change feed keeps an entry (approximately; default
   * 300,000 ms). A replica away from Redis longer than this ends its watch
   * streams so that their clients resynchronize.
   */
  readonly feedMaxAgeMs?: number;
  /** Entries the shared audit trail keeps (approximately; default 10,000). */
  readonly auditLength?: number;
  /** Sessions whose copy a replica keeps (least recently used dropped; default 10,000). */
  readonly cacheSize?: number;
  readonly logger?: Logger;
}

/** What this replica appended to the change feed since it started. */
export interface FeedAppended {
  readonly entries: number;
  /** Bytes of the entries' fields and values (Redis adds its own overhead). */
  readonly bytes: number;
}

/** What this replica read of the changes since it started. */
export interface FeedRead {
  /** Entries of the feed (session ends, tool registrations), which every replica reads. */
  readonly feed: number;
  /** Commits of the sessions it follows, from their channels. */
  readonly channels: number;
}

/** The Redis store, with its connection state. */
export interface RedisStore extends SessionStore {
  /** What this replica appended to the change feed since it started (its commits included). */
  feedAppended(): FeedAppended;
  /** What this replica read of the changes since it started. */
  feedRead(): FeedRead;
  /** False while Redis cannot be reached or the change feed is not followed. */
  readonly healthy: boolean;
  /**
   * Resolves once this replica has delivered every change committed before
   * the call (tests use it to wait for the feed).
   */
  caughtUp(): Promise<void>;
}

/** Extra real time a session's keys outlive its expiry, so a replica always ends it first. */
const GRACE_MS = 10 * 60_000;

/**
 * Connects and returns the store.
 *
 * @throws RedisConnectError naming the URL (its password hidden) when
 *   Redis cannot be reached within `connectTimeoutMs`.
 */
export async function createRedisStore(options: RedisStoreOptions): Promise<RedisStore> {
  const timers = options.timers ?? systemTimers;
  const now = options.now ?? timers.now;
  const feedMaxLen = String(options.feedLength ?? 100_000);
  const feedMaxAgeMs = String(options.feedMaxAgeMs ?? 300_000);
  // The one URL check of the project (the CLI's too): a malformed URL fails here.
  const { redacted: shownUrl, cluster } = parseRedisUrl(options.url);
  const keys = keySpace(options.keyPrefix ?? "ub:", cluster !== undefined);
  const replica = randomBytes(6).toString("base64url");
  const { logger } = options;
  const connection = await connect({
    url: options.url,
    cluster,
    feeds: keys.groups.length,
    durability: options.durability,
    shownUrl,
    connectTimeoutMs: options.connectTimeoutMs ?? 5000,
    commandTimeoutMs: options.commandTimeoutMs ?? 2000,
    logger,
    timers,
  });
  const cache = createSessionCache(options.cacheSize ?? 10_000);
  const feedWrites = createFeedWrites();
  const limits =
    keys.limitsOf === undefined ? undefined : createClusterLimits(connection, keys.limitsOf);

  /** The session's current state, refreshed (1 round trip), or undefined when it is gone. */
  const load = async (sessionId: string): Promise<Cached | undefined> => {
    const cached = cache.get(sessionId);
    const reply = await connection.run(loadScript, keys.of(sessionId), {
      cachedRev: cached?.rev ?? "",
      now: String(now()),
      graceMs: String(GRACE_MS),
      sessionId,
    });
    switch (reply.result) {
      case "absent":
        cache.delete(sessionId);
        return undefined;
      case "expired":
        cache.delete(sessionId);
        // Due but not swept yet: end it now (the sweeper would, soon).
        endSession(sessionId, "expired", now()).catch((error: unknown) => {
          logger?.debug("ending an expired session failed", { error: String(error) });
        });
        return undefined;
      case "same":
        // (Only a copy's revision can be the same.)
        if (cached !== undefined) {
          if (cached.state.record.expiresAt !== reply.expiresAt) {
            cached.state.record = { ...cached.state.record, expiresAt: reply.expiresAt };
          }
          cache.remember(sessionId, cached);
          return cached;
        }
        throw connection.unavailable(
          new Error("the load script found the revision of a copy this replica does not hold"),
        );
      case "full": {
        const fresh: Cached = {
          state: stateOf(reply.stored, reply.expiresAt),
          rev: reply.rev,
          quota: reply.quota,
        };
        cache.remember(sessionId, fresh);
        return fresh;
      }
    }
  };

  /** Ends a session (if due by `dueBy`, for expiry); resolves to what it held, or undefined. */
  const endSession = async (sessionId: string, reason: SessionEndReason, dueBy?: number) => {
    const reply = await connection.run(endScript, keys.of(sessionId), {
      sessionId,
      reason,
      feedMaxLen,
      dueBy: dueBy === undefined ? "" : String(dueBy),
      feedMaxAgeMs,
    });
    if (reply.result === "ended") {
      feedWrites.countEnd(sessionId, reason);
      await limits?.release(reply.outside.client, reply.outside.bytes).catch((error: unknown) => {
        // Ended already: the place stays counted, which the log says.
        logger?.warn("a session ended but its place in the limits was not given back", {
          error: String(error),
        });
      });
    }
    cache.delete(sessionId);
    return reply.result === "ended" ? { variables: reply.variables } : undefined;
  };

  const tools = createSharedTools({
    connection,
    keys,
    feedWrites,
    replica,
    feedMaxLen,
    feedMaxAgeMs,
  });
  const delivery = createFeedDelivery({
    connection,
    keys,
    cache,
    feedWrites,
    replica,
    onTools: tools.publish,
    logger,
  });
  const channels = startSessionChannels({ connection, keys, delivery, logger });
  const feed = await startFeedReader({
    connection,
    keys,
    delivery,
    holdEnd: channels.holdEnd,
    shownUrl,
    logger,
  }).catch(async (e: unknown) => {
    // (Where the feed ends could not be read.)
    await connection.close(async () => {});
    throw e;
  });
  const stopSweeping = startSweeper({
    connection,
    expiryKeys: keys.groups.map((g) => g.expiry),
    intervalMs: options.sweepIntervalMs ?? 1000,
    now,
    end: (sessionId, dueBy) => endSession(sessionId, "expired", dueBy),
    logger,
  });

  const store: RedisStore = {
    sharedTools: tools.directory,
    sharedAudit: createSharedAudit({
      connection,
      key: keys.audit,
      length: options.auditLength ?? 10_000,
      logger,
    }),

    get healthy() {
      return connection.healthy;
    },

    async caughtUp() {
      await Promise.all([feed.caughtUp(), channels.caughtUp()]);
    },

    async createSession(init, maxSessions, setup) {
      const t = now();
      const record = newSessionRecord(init, t);
      const state = emptySessionState(record);
      const tx = createTransaction(state);
      setup?.(tx.api);
      const writes = noWrites(state);
      stage(writes, tx, state, true);
      const changes = encodeFeedChanges(tx.changes);
      if (limits !== undefined) {
        try {
          await limits.admit({ maxSessions, quota: init.quota, bytes: writes.bytes });
        } catch (e) {
          // At a limit, a live session of this id is still answered: reopening is not creating.
          const existing = await load(init.id);
          if (existing !== undefined) return { session: existing.state.record, created: false };
          throw e;
        }
      }
      const limitsClient = limits === undefined ? "" : (init.quota?.client ?? "");
      feedWrites.keep(init.id, 1, tx.changes);
      let reply: CreateReply;
      try {
        reply = await connection.run(createScript, keys.of(init.id), {
          now: String(t),
          graceMs: String(GRACE_MS),
          sessionId: init.id,
          replica,
          // On a Cluster the limits were counted above, apart.
          maxSessions: limits === undefined ? String(maxSessions) : "1e18",
          payload: payloadOf(writes, init.ttlMs),
          changes,
          feedMaxLen,
          quotaClient: limits === undefined ? (init.quota?.client ?? "") : "",
          quotaMax: String(init.quota?.max ?? 0),
          feedMaxAgeMs,
          quotaMaxBytes: String(init.quota?.maxBytes ?? 0),
          limitsClient,
          limitsMaxBytes: String(init.quota?.maxBytes ?? 0),
        });
      } catch (e) {
        feedWrites.forget(init.id, 1);
        // Whether it was created is unknown; the place stays counted rather than counted twice.
        throw e;
      }
      if (reply.result !== "ok") {
        feedWrites.forget(init.id, 1);
        await limits?.release(limitsClient, writes.bytes);
      } else if (reply.ended !== undefined) {
        await limits?.release(reply.ended.client, reply.ended.bytes);
      }
      switch (reply.result) {
        case "quota":
          throw clientQuotaReached(reply.held, init.quota?.max ?? 0);
        case "clientbytes":
          throw clientBytesReached(reply.held, writes.bytes, init.quota?.maxBytes ?? 0);
        case "full":
          throw sessionLimitReached(maxSessions);
        case "exists": {
          const existing = await load(init.id);
          if (existing !== undefined) return { session: existing.state.record, created: false };
          // It ended between the two calls: create it after all.
          return store.createSession(init, maxSessions, setup);
        }
        case "ok":
          if (tx.changes.length > 0) feedWrites.countCommit(init.id, "1", replica, changes);
          tx.commit();
          state.record = { ...state.record, expiresAt: reply.expiresAt };
          cache.remember(init.id, {
            state,
            rev: reply.rev,
            quota:
              limitsClient === ""
                ? undefined
                : { client: limitsClient, maxBytes: init.quota?.maxBytes ?? 0 },
          });
          return { session: state.record, created: true };
      }
    },

    async read(sessionId, fn) {
      const current = await load(sessionId);
      if (current === undefined) return undefined;
      return { value: fn(createView(current.state)) };
    },

    transact: createCommitter({
      connection,
      limits,
      keys,
      cache,
      load,
      feedWrites,
      replica,
      now,
      graceMs: GRACE_MS,
      feedMaxLen,
      feedMaxAgeMs,
    }),

    deleteSession: (sessionId, reason) => endSession(sessionId, reason),

    async stats() {
      const counts = await connection.call(() =>
        Promise.all(
          keys.groups.map((g) =>
            Promise.all([
              connection.commands.zcard(g.expiry),
              connection.commands.get(g.variableCount),
            ]),
          ),
        ),
      );
      let sessions = 0;
      let variables = 0;
      for (const [n, v] of counts) {
        sessions += n;
        variables += Number(v ?? 0);
      }
      return { sessions, variables };
    },

    feedAppended: () => feedWrites.appended(),

    feedRead: () => ({ feed: feed.read(), channels: channels.received() }),

    subscribe: (listener) => delivery.subscribe(listener),

    follow: (sessionId) => channels.follow(sessionId),

    async close() {
      if (connection.closing) return;
      stopSweeping();
      tools.clear();
      await connection.close(async () => {
        await Promise.all([feed.stop(), channels.stop()]);
      });
    },
  };
  return store;
}
