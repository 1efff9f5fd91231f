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
 * scripts (scripts.ts) and the codec are there; the commit with its
 * retry, the sweeper, the shared tool directory and audit trail are here.
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
import {
  decodeData,
  decodeDependencies,
  decodeHistory,
  decodeRecord,
  decodeSession,
  encodeData,
  encodeDependencies,
  encodeFeedChanges,
  encodeHistory,
  encodeRecord,
  encodeSession,
} from "./redis/codec.js";
import { connect } from "./redis/connection.js";
import { startFeedReader } from "./redis/feed-reader.js";
import { createFeedWrites } from "./redis/feed-writes.js";
import { keySpace, runScript } from "./redis/script.js";
import {
  type CommitReply,
  commitScript,
  createScript,
  endScript,
  loadScript,
  type StoredSession,
} from "./redis/scripts.js";
import { type Cached, createSessionCache } from "./redis/session-cache.js";
import { toolsScript } from "./redis/tools-script.js";
import {
  createTransaction,
  createView,
  emptySessionState,
  type SessionState,
  type StagingTransaction,
} from "./session-state.js";
import type {
  SessionRecord,
  SessionStore,
  SessionTransaction,
  VariableChange,
} from "./session-store.js";

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
const MAX_ATTEMPTS = 16;

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

  /** What one or more transactions staged, as the commit script takes it. */
  interface Writes {
    readonly vset: Map<string, string>;
    readonly vdel: Set<string>;
    readonly hset: Map<string, string>;
    readonly hdel: Set<string>;
    readonly dset: Map<string, string>;
    readonly ddel: Set<string>;
    nvar: number;
    deps: string | undefined;
    rec: string | undefined;
    bytes: number;
  }
  const noWrites = (state: SessionState): Writes => ({
    vset: new Map(),
    vdel: new Set(),
    hset: new Map(),
    hdel: new Set(),
    dset: new Map(),
    ddel: new Set(),
    nvar: 0,
    deps: undefined,
    rec: undefined,
    bytes: state.bytes,
  });
  /**
   * Adds what `tx` staged against `state` (before it is committed there) to
   * `w`; a later transaction's writes replace an earlier one's.
   */
  const stage = (w: Writes, tx: StagingTransaction, state: SessionState, withRecord: boolean) => {
    const staged = tx.staged();
    for (const [id, record] of staged.vars ?? []) {
      const before = state.vars.has(id);
      if (record === null) {
        w.vset.delete(id);
        w.vdel.add(id);
        if (before) w.nvar--;
      } else {
        w.vdel.delete(id);
        w.vset.set(id, encodeRecord(record));
        if (!before) w.nvar++;
      }
    }
    for (const [id, entries] of staged.history ?? []) {
      if (entries === null || entries.length === 0) {
        w.hset.delete(id);
        w.hdel.add(id);
      } else {
        w.hdel.delete(id);
        w.hset.set(id, encodeHistory(entries));
      }
    }
    for (const [key, entry] of staged.data ?? []) {
      if (entry === undefined) {
        w.dset.delete(key);
        w.ddel.add(key);
      } else {
        w.ddel.delete(key);
        w.dset.set(key, encodeData(entry.value, entry.bytes));
      }
    }
    if (staged.deps !== undefined) w.deps = encodeDependencies(staged.deps);
    if (withRecord || staged.seq !== state.record.nextVariableSeq) {
      w.rec = encodeSession({ ...state.record, nextVariableSeq: staged.seq });
    }
    w.bytes = state.bytes + staged.bytes;
  };
  const isEmpty = (w: Writes) =>
    w.vset.size + w.vdel.size + w.hset.size + w.hdel.size + w.dset.size + w.ddel.size === 0 &&
    w.deps === undefined &&
    w.rec === undefined;
  // Empty objects must reach Lua as objects: cjson reads [] and {} alike.
  // A new session's carry its sliding TTL.
  const writesJson = (w: Writes, ttlMs?: number) =>
    JSON.stringify({
      vset: Object.fromEntries(w.vset),
      vdel: [...w.vdel],
      hset: Object.fromEntries(w.hset),
      hdel: [...w.hdel],
      dset: Object.fromEntries(w.dset),
      ddel: [...w.ddel],
      nvar: w.nvar,
      bytes: String(w.bytes),
      ...(w.deps === undefined ? {} : { deps: w.deps }),
      ...(w.rec === undefined ? {} : { rec: w.rec }),
      ...(ttlMs === undefined ? {} : { ttl: String(ttlMs) }),
    });

  /** Serializes what a transaction staged for the commit script. */
  const payloadOf = (tx: StagingTransaction, state: SessionState, withRecord: boolean) => {
    const w = noWrites(state);
    stage(w, tx, state, withRecord);
    return { json: writesJson(w), empty: isEmpty(w) };
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

  // Transactions of one session run one at a time in this replica, so they
  // conflict only with other replicas'. Those that queue up while one
  // commits are committed together (group commit): each runs on the state
  // the ones before it left, and one script writes them all.
  interface Job {
    readonly fn: (tx: SessionTransaction) => unknown;
    readonly resolve: (result: { value: unknown } | undefined) => void;
    readonly reject: (error: unknown) => void;
  }
  const pending = new Map<string, Job[]>();

  const commit = <T>(
    sessionId: string,
    fn: (tx: SessionTransaction) => T,
  ): Promise<{ value: T } | undefined> =>
    new Promise((resolve, reject) => {
      const job: Job = { fn, resolve: resolve as Job["resolve"], reject };
      const queue = pending.get(sessionId);
      if (queue !== undefined) {
        queue.push(job);
        return;
      }
      pending.set(sessionId, [job]);
      void drain(sessionId);
    });

  const drain = async (sessionId: string) => {
    for (;;) {
      const jobs = pending.get(sessionId) ?? [];
      if (jobs.length === 0) {
        pending.delete(sessionId);
        return;
      }
      // Later arrivals queue behind this batch.
      pending.set(sessionId, []);
      if (jobs.length === 1) {
        const [job] = jobs as [Job];
        await attempt(sessionId, job.fn).then(job.resolve, job.reject);
      } else {
        await batch(sessionId, jobs);
      }
    }
  };

  /** Commits several queued transactions of one session in one script. */
  const batch = async (sessionId: string, jobs: readonly Job[]) => {
    for (let round = 1; ; round++) {
      let current: Cached | undefined;
      try {
        current = await load(sessionId);
      } catch (e) {
        for (const job of jobs) job.reject(e);
        return;
      }
      if (current === undefined) {
        for (const job of jobs) job.resolve(undefined);
        return;
      }
      const outcomes: ({ value: unknown } | { error: unknown })[] = [];
      // The batch runs on a copy of its own: until the script has committed
      // it, readers on this replica must not see any of it.
      const working = cloneState(current.state);
      const writes = noWrites(working);
      const changes: VariableChange[] = [];
      for (const job of jobs) {
        const tx = createTransaction(working);
        try {
          const value = job.fn(tx.api);
          stage(writes, tx, working, false);
          changes.push(...tx.changes);
          // The next transaction sees this one's writes.
          tx.commit();
          outcomes.push({ value });
        } catch (error) {
          outcomes.push({ error });
        }
      }
      const settle = () => {
        jobs.forEach((job, k) => {
          const outcome = outcomes[k] as (typeof outcomes)[number];
          if ("error" in outcome) job.reject(outcome.error);
          else job.resolve({ value: outcome.value });
        });
      };
      if (isEmpty(writes) && changes.length === 0) {
        settle();
        return;
      }
      let reply: CommitReply;
      const ev = encodeFeedChanges(changes);
      const rev = Number((current as Cached).rev) + 1;
      feedWrites.keep(sessionId, rev, changes);
      try {
        reply = await call(() =>
          runScript(redis, commitScript, keys.of(sessionId), {
            expectedRev: (current as Cached).rev,
            now: String(now()),
            graceMs: String(GRACE_MS),
            sessionId,
            replica,
            payload: writesJson(writes),
            changes: ev,
            feedMaxLen: feedLength,
            feedMaxAgeMs,
          }),
        );
      } catch (e) {
        cache.delete(sessionId);
        for (const job of jobs) job.reject(e);
        return;
      }
      if (reply.result === "absent" || reply.result === "expired") {
        feedWrites.forget(sessionId, rev);
        cache.delete(sessionId);
        for (const job of jobs) job.resolve(undefined);
        return;
      }
      if (reply.result === "ok") {
        if (changes.length > 0) feedWrites.countCommit(sessionId, String(rev), replica, ev);
        working.record = { ...working.record, expiresAt: reply.expiresAt };
        current.state = working;
        current.rev = reply.rev;
        settle();
        return;
      }
      if (reply.result === "clientbytes") {
        // Together they take the session's client past its bytes: each is
        // judged on its own, so a change that fits is not refused for
        // another's growth.
        feedWrites.forget(sessionId, rev);
        for (const job of jobs) await attempt(sessionId, job.fn).then(job.resolve, job.reject);
        return;
      }
      // Another replica wrote first: run them all again on the current state.
      feedWrites.forget(sessionId, rev);
      cache.delete(sessionId);
      if (round >= MAX_ATTEMPTS) {
        const error = new ConnectError(
          `the session changed ${round} times while these changes were being made; retry`,
          Code.Aborted,
        );
        for (const job of jobs) job.reject(error);
        return;
      }
      await new Promise((r) => setTimeout(r, Math.random() * 2 * round));
    }
  };

  const attempt = async <T>(
    sessionId: string,
    fn: (tx: SessionTransaction) => T,
  ): Promise<{ value: T } | undefined> => {
    for (let attempt = 1; ; attempt++) {
      // First try on the copy this replica has (the commit checks its
      // revision, so a stale copy only costs a retry): 1 round trip for a
      // write when nobody else wrote meanwhile, 2 otherwise.
      const cached = attempt === 1 ? cache.get(sessionId) : undefined;
      const current = cached ?? (await load(sessionId));
      if (current === undefined) return undefined;
      const tx = createTransaction(current.state);
      let value: T;
      try {
        value = fn(tx.api);
      } catch (e) {
        // A refusal decided on a copy that may be stale is decided again
        // on the current state; one from the current state stands.
        if (cached === undefined) throw e;
        cache.delete(sessionId);
        continue;
      }
      const { json, empty } = payloadOf(tx, current.state, false);
      if (empty && tx.changes.length === 0) {
        if (cached === undefined) return { value };
        // Nothing to write, but the answer came from the copy: confirm it.
        cache.delete(sessionId);
        continue;
      }
      const ev = encodeFeedChanges(tx.changes);
      const rev = Number(current.rev) + 1;
      feedWrites.keep(sessionId, rev, tx.changes);
      const reply = await call(() =>
        runScript(redis, commitScript, keys.of(sessionId), {
          expectedRev: current.rev,
          now: String(now()),
          graceMs: String(GRACE_MS),
          sessionId,
          replica,
          payload: json,
          changes: ev,
          feedMaxLen: feedLength,
          feedMaxAgeMs,
        }),
      );
      if (reply.result !== "ok") feedWrites.forget(sessionId, rev);
      if (reply.result === "absent" || reply.result === "expired") {
        cache.delete(sessionId);
        return undefined;
      }
      // Decided on the current revision (the script checks it first).
      if (reply.result === "clientbytes") {
        throw clientBytesReached(reply.held, reply.adding, reply.max);
      }
      if (reply.result === "ok") {
        if (tx.changes.length > 0) feedWrites.countCommit(sessionId, String(rev), replica, ev);
        tx.commit();
        current.rev = reply.rev;
        current.state.record = { ...current.state.record, expiresAt: reply.expiresAt };
        return { value };
      }
      // Another replica committed first: run again on its result, after a
      // short random pause so that racing replicas spread out (not after a
      // first try on a stale copy: that is no race).
      cache.delete(sessionId);
      if (cached !== undefined) continue;
      if (attempt >= MAX_ATTEMPTS) {
        throw new ConnectError(
          `the session changed ${attempt} times while this change was being made; retry`,
          Code.Aborted,
        );
      }
      await new Promise((r) => setTimeout(r, Math.random() * 2 * attempt));
    }
  };

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
          payload: writesJson(writes, init.ttlMs),
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

    transact: commit,

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

  function stateOf(stored: StoredSession, expiresAt: number): SessionState {
    const state = emptySessionState({ ...decodeSession(stored.record), expiresAt });
    for (const [id, text] of stored.vars) {
      const v = decodeRecord(text);
      state.vars.set(id, v);
      state.byName.set(v.name, id);
    }
    for (const [id, text] of stored.history) {
      state.history ??= new Map();
      state.history.set(id, decodeHistory(text));
    }
    for (const [key, text] of stored.data) {
      state.data ??= new Map();
      state.data.set(key, decodeData(text));
    }
    state.deps = decodeDependencies(stored.deps);
    state.bytes = stored.bytes;
    return state;
  }
}

/** A copy of a state that a transaction can be committed to without touching the original. */
function cloneState(state: SessionState): SessionState {
  return {
    record: state.record,
    vars: new Map(state.vars),
    byName: new Map(state.byName),
    history: state.history === undefined ? undefined : new Map(state.history),
    deps: state.deps,
    data: state.data === undefined ? undefined : new Map(state.data),
    bytes: state.bytes,
  };
}
