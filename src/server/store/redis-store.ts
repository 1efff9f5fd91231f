/**
 * A {@link SessionStore} on Redis, for several bridge replicas serving the
 * same sessions: what one replica writes, every replica reads, watches and
 * expires, and nothing acknowledged is lost when a replica dies.
 *
 * Each replica keeps a copy of the sessions it serves, tagged with the
 * session's revision in Redis. A read runs one script that refreshes the
 * sliding TTL and returns the session only if its revision moved (1 round
 * trip). A transaction runs its callback against an up-to-date copy and
 * commits what it staged with one script that checks the revision, writes,
 * appends the change to the feed and refreshes the TTL; on a conflict it
 * reloads and runs the callback again (so callbacks must be pure over their
 * view). Changes reach every replica's subscribers, its own included, from
 * the change feed (a Redis Stream read by one loop per replica), so every
 * replica sees them in commit order. The feed says which variables changed
 * to which version, never their values, and is trimmed by length and age:
 * a replica delivers its own commits' changes from memory, and reads
 * another's from the session's keys (one round trip per batch of feed
 * entries) only for sessions a subscriber wants (those watched there). A
 * value overwritten before a replica read it is delivered as the newer
 * version: versions never go backwards. Expiry is an index of sessions by
 * expiry time that every replica sweeps; the script that ends a session
 * runs once, whoever wins.
 *
 * The session's own keys share its `{id}` hash tag; the expiry index, the
 * feed and the variable count are per deployment, so this store needs a
 * single Redis primary (not Redis Cluster).
 *
 * Its parts are moving to `./redis/`: the connection and its status
 * (connection.ts), the copies of sessions (session-cache.ts), the change
 * feed's reader (feed-reader.ts, feed-delivery.ts, feed-writes.ts), the
 * committer (committer.ts, staging.ts), the scripts (scripts.ts) and the
 * codec are there; the sweeper, the shared tool directory and audit trail
 * are here.
 */
import { randomBytes } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  clientBytesReached,
  clientQuotaReached,
  sessionEndedBeforeTools,
  sessionLimitReached,
} from "../errors.js";
import { createLogSampler } from "../log-sampler.js";
import type { Logger } from "../logger.js";
import { parseRedisUrl } from "../redis-url.js";
import type { AuditEntry } from "../tools/audit-trail.js";
import type { SharedAuditTrail, SharedTool, SharedToolDirectory } from "../tools/shared-tools.js";
import { encodeFeedChanges } from "./redis/codec.js";
import { createCommitter } from "./redis/committer.js";
import { connect } from "./redis/connection.js";
import { startFeedReader } from "./redis/feed-reader.js";
import { createFeedWrites } from "./redis/feed-writes.js";
import { keySpace, runScript } from "./redis/script.js";
import { createScript, endScript, loadScript } from "./redis/scripts.js";
import { type Cached, createSessionCache } from "./redis/session-cache.js";
import { noWrites, payloadOf, stage, stateOf } from "./redis/staging.js";
import { toolsScript } from "./redis/tools-script.js";
import { createTransaction, createView, emptySessionState } from "./session-state.js";
import type { SessionRecord, SessionStore } from "./session-store.js";

export { RedisConnectError } from "./redis/connection.js";

/** Options of {@link createRedisStore}. */
export interface RedisStoreOptions {
  /** `redis://[user:password@]host:port[/db]` or `rediss://…` (TLS). */
  readonly url: string;
  /** Prepended to every key, so several deployments can share one Redis (default "ub:"). */
  readonly keyPrefix?: string;
  /** Clock in epoch milliseconds; expiry follows it (tests replace it). */
  readonly now?: () => number;
  /** How often this replica sweeps expired sessions (default 1000 ms; 0 disables it). */
  readonly sweepIntervalMs?: number;
  /** How long connecting may take before createRedisStore rejects (default 5000 ms). */
  readonly connectTimeoutMs?: number;
  /** How long one command may take before the call fails with UNAVAILABLE (default 2000 ms). */
  readonly commandTimeoutMs?: number;
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

/** The Redis store, with its connection state. */
export interface RedisStore extends SessionStore {
  /** What this replica appended to the change feed since it started. */
  feedAppended(): FeedAppended;
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
 * @throws Error naming the URL (its password hidden) when Redis cannot be
 *   reached within `connectTimeoutMs`.
 */
export async function createRedisStore(options: RedisStoreOptions): Promise<RedisStore> {
  const now = options.now ?? Date.now;
  const prefix = options.keyPrefix ?? "ub:";
  const feedLength = String(options.feedLength ?? 100_000);
  const feedMaxAgeMs = String(options.feedMaxAgeMs ?? 300_000);
  // The one URL check of the project (the CLI's too): a malformed URL fails here.
  const shownUrl = parseRedisUrl(options.url).redacted;
  const replica = randomBytes(6).toString("base64url");
  const connection = await connect({
    url: options.url,
    shownUrl,
    connectTimeoutMs: options.connectTimeoutMs ?? 5000,
    commandTimeoutMs: options.commandTimeoutMs ?? 2000,
    logger: options.logger,
  });
  const { commands: redis, call, unavailable } = connection;
  const keys = keySpace(prefix);

  const cache = createSessionCache(options.cacheSize ?? 10_000);

  /** The session's current state, refreshed (1 round trip), or undefined when it is gone. */
  const load = async (sessionId: string): Promise<Cached | undefined> => {
    const cached = cache.get(sessionId);
    const reply = await call(() =>
      runScript(redis, loadScript, keys.of(sessionId), {
        cachedRev: cached?.rev ?? "",
        now: String(now()),
        graceMs: String(GRACE_MS),
        sessionId,
      }),
    );
    switch (reply.result) {
      case "absent":
        cache.delete(sessionId);
        return undefined;
      case "expired":
        cache.delete(sessionId);
        // Due but not swept yet: end it now (the sweeper would, soon).
        endSession(sessionId, "expired", now()).catch((error: unknown) => {
          options.logger?.debug("ending an expired session failed", { error: String(error) });
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
        throw unavailable(new Error("the load script found a revision never asked"));
      case "full": {
        const fresh: Cached = { state: stateOf(reply.stored, reply.expiresAt), rev: reply.rev };
        cache.remember(sessionId, fresh);
        return fresh;
      }
    }
  };

  const toolListeners = new Set<(tools: readonly SharedTool[]) => void>();
  const feedWrites = createFeedWrites();

  /** Ends a session (if due by `dueBy`, for expiry); resolves to the number of variables it held. */
  const endSession = async (sessionId: string, reason: "cleanup" | "expired", dueBy?: number) => {
    const reply = await call(() =>
      runScript(redis, endScript, keys.of(sessionId), {
        sessionId,
        reason,
        feedMaxLen: feedLength,
        dueBy: dueBy === undefined ? "" : String(dueBy),
        feedMaxAgeMs,
      }),
    );
    if (reply.result === "ended") feedWrites.countEnd(sessionId, reason);
    cache.delete(sessionId);
    return reply.result === "ended" ? reply.variables : null;
  };

  const feed = await startFeedReader({
    connection,
    keys,
    cache,
    feedWrites,
    replica,
    onTools: (tools) => {
      for (const listener of toolListeners) listener(tools);
    },
    shownUrl,
    logger: options.logger,
  });

  // Expiry: every replica sweeps the index; each session ends once.
  let sweeping = false;
  const sweep = async () => {
    if (sweeping || connection.closing) return;
    sweeping = true;
    try {
      const t = now();
      const due = await redis.zrangebyscore(
        keys.deployment.expiry,
        "-inf",
        String(t),
        "LIMIT",
        0,
        256,
      );
      for (const sessionId of due) await endSession(sessionId, "expired", t);
    } catch (error) {
      options.logger?.debug("expiry sweep failed", {
        error: error instanceof Error ? error.message : String(error),
      });
    } finally {
      sweeping = false;
    }
  };
  const interval = options.sweepIntervalMs ?? 1000;
  const sweeper = interval > 0 ? setInterval(() => void sweep(), interval) : undefined;
  sweeper?.unref();

  const sharedTools: SharedToolDirectory = {
    async register(sessionId, tools, workerId, limits) {
      const sid = sessionId ?? "";
      const list = JSON.stringify(tools.map((t) => ({ name: t.name, doc: JSON.stringify(t) })));
      const { deployment } = keys;
      const reply = await call(() =>
        runScript(
          redis,
          toolsScript,
          {
            // A global registration reads no session: any key of the deployment does.
            session: sid === "" ? deployment.tools : keys.of(sid).session,
            tools: deployment.tools,
            toolCounts: deployment.toolCounts,
            feed: deployment.feed,
            feedSeq: deployment.feedSeq,
          },
          {
            sessionId: sid,
            owner: workerId,
            maxTools: String(limits.maxTools),
            maxPerSession: String(limits.maxToolsPerSession),
            feedMaxLen: feedLength,
            replica,
            toolsJson: list,
            feedMaxAgeMs,
          },
        ),
      );
      switch (reply.result) {
        case "ok":
          feedWrites.countTools(sid, replica, list);
          return;
        case "nosession":
          throw sessionEndedBeforeTools();
        case "taken":
          throw new ConnectError(
            `tool name '${reply.name}' is registered by another worker; choose another name`,
            Code.AlreadyExists,
          );
        case "full":
          throw new ConnectError(
            `the bridge holds ${reply.held} remote tools; these would exceed the limit of ${limits.maxTools} (--max-tools)`,
            Code.ResourceExhausted,
          );
        case "sessionfull":
          throw new ConnectError(
            `the session holds ${reply.held} tools; more would exceed the limit of ${limits.maxToolsPerSession} (--max-tools-per-session)`,
            Code.ResourceExhausted,
          );
      }
    },
    async list() {
      const all = await call(() => redis.hgetall(keys.deployment.tools));
      return Object.values(all).map((doc) => JSON.parse(doc) as SharedTool);
    },
    subscribe(listener) {
      toolListeners.add(listener);
      return () => {
        toolListeners.delete(listener);
      };
    },
  };

  const auditKey = keys.audit;
  const auditLength = String(options.auditLength ?? 10_000);
  // Every call a public client fails is audited: while Redis refuses
  // writes, one line each would let any client flood the log.
  const auditNotStored =
    options.logger === undefined
      ? undefined
      : createLogSampler(options.logger, { level: "warn", msg: "audit entry not stored" });
  const sharedAudit: SharedAuditTrail = {
    append(entry) {
      redis
        .xadd(auditKey, "MAXLEN", "~", auditLength, "*", "e", JSON.stringify(entry))
        .catch((error: unknown) => {
          auditNotStored?.report({
            tool: entry.tool,
            error: error instanceof Error ? error.message : String(error),
          });
        });
    },
    async read(filter = {}) {
      const rows = await call(() => redis.xrange(auditKey, "-", "+"));
      const out: AuditEntry[] = [];
      for (const [, fields] of rows) {
        const entry = JSON.parse(fields[1] ?? "null") as AuditEntry | null;
        if (entry === null) continue;
        if (filter.sessionId !== undefined && entry.sessionId !== filter.sessionId) continue;
        if (filter.tool !== undefined && entry.tool !== filter.tool) continue;
        if (filter.action !== undefined && entry.action !== filter.action) continue;
        out.push(entry);
      }
      return out;
    },
  };

  const store: RedisStore = {
    sharedTools,
    sharedAudit,

    get healthy() {
      return connection.healthy;
    },

    caughtUp: () => feed.caughtUp(),

    async createSession(init, maxSessions, setup) {
      const t = now();
      const record: SessionRecord = {
        id: init.id,
        metadata: init.metadata,
        createdAt: t,
        ttlMs: init.ttlMs,
        expiresAt: t + init.ttlMs,
        allowedTools: init.allowedTools,
        nextVariableSeq: 1,
      };
      const state = emptySessionState(record);
      const tx = createTransaction(state);
      setup?.(tx.api);
      const writes = noWrites(state);
      stage(writes, tx, state, true);
      const ev = encodeFeedChanges(tx.changes);
      feedWrites.keep(init.id, 1, tx.changes);
      const reply = await call(() =>
        runScript(redis, createScript, keys.of(init.id), {
          now: String(t),
          graceMs: String(GRACE_MS),
          sessionId: init.id,
          replica,
          maxSessions: String(maxSessions),
          payload: payloadOf(writes, init.ttlMs),
          changes: ev,
          feedMaxLen: feedLength,
          quotaClient: init.quota?.client ?? "",
          quotaMax: String(init.quota?.max ?? 0),
          feedMaxAgeMs,
          quotaMaxBytes: String(init.quota?.maxBytes ?? 0),
        }),
      );
      if (reply.result !== "ok") feedWrites.forget(init.id, 1);
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
          if (tx.changes.length > 0) feedWrites.countCommit(init.id, "1", replica, ev);
          tx.commit();
          state.record = { ...state.record, expiresAt: reply.expiresAt };
          cache.remember(init.id, { state, rev: reply.rev });
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
      keys,
      cache,
      load,
      feedWrites,
      replica,
      now,
      graceMs: GRACE_MS,
      feedMaxLen: feedLength,
      feedMaxAgeMs,
    }),

    async deleteSession(sessionId, reason) {
      const n = await endSession(sessionId, reason);
      return n === null ? undefined : { variables: n };
    },

    async stats() {
      const [sessions, variables] = await call(() =>
        Promise.all([
          redis.zcard(keys.deployment.expiry),
          redis.get(keys.deployment.variableCount),
        ]),
      );
      return { sessions, variables: Number(variables ?? 0) };
    },

    feedAppended: () => feedWrites.appended(),

    subscribe: (listener, subscribeOptions) => feed.subscribe(listener, subscribeOptions),

    async close() {
      if (connection.closing) return;
      if (sweeper !== undefined) clearInterval(sweeper);
      toolListeners.clear();
      await connection.close(() => feed.stop());
    },
  };
  return store;
}
