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
 * The file is long (about 1,000 lines) because its parts (the copy of the
 * sessions, the commit with its retry, the feed reader, the sweeper, the
 * shared tool directory and audit trail) are one closure over one
 * connection and one copy of the sessions, and each reads or updates the
 * state of the others; the scripts and the codec, which do not, are in
 * redis/scripts.ts (with redis/script.ts, redis/lua-functions.ts,
 * redis/tools-script.ts) and redis/codec.ts.
 */
import { randomBytes } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { Redis } from "ioredis";
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
  decodeFeedChanges,
  decodeHistory,
  decodeRecord,
  decodeSession,
  deletedRecord,
  encodeData,
  encodeDependencies,
  encodeFeedChanges,
  encodeHistory,
  encodeRecord,
  encodeSession,
  type FeedChange,
} from "./redis/codec.js";
import { keySpace, runScript } from "./redis/script.js";
import {
  type CommitReply,
  commitScript,
  createScript,
  endScript,
  loadScript,
  type StoredSession,
} from "./redis/scripts.js";
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
  StoreEvent,
  SubscribeOptions,
  VariableChange,
  VariableRecord,
} from "./session-store.js";

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
  /** False while Redis cannot be reached. */
  readonly healthy: boolean;
  /**
   * Resolves once this replica has delivered every change committed before
   * the call (tests use it to wait for the feed).
   */
  caughtUp(): Promise<void>;
}

interface Cached {
  state: SessionState;
  rev: string;
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
  const cacheSize = options.cacheSize ?? 10_000;
  // The one URL check of the project (the CLI's too): a malformed URL fails here.
  const shownUrl = parseRedisUrl(options.url).redacted;
  const replica = randomBytes(6).toString("base64url");
  const connection = {
    lazyConnect: true,
    connectTimeout: options.connectTimeoutMs ?? 5000,
    // Calls fail at once while Redis is away (UNAVAILABLE), never queue.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    retryStrategy: (times: number) => Math.min(50 * 2 ** times, 2000),
  };
  const redis = new Redis(options.url, {
    ...connection,
    commandTimeout: options.commandTimeoutMs ?? 2000,
  });
  // The feed reader blocks up to 5 s per read; a read unanswered well past
  // that (a frozen Redis) fails, so the loop notices.
  const reader = new Redis(options.url, { ...connection, commandTimeout: 10_000 });
  // The connection's own error says more than connect()'s rejection
  // ("Connection is closed"): e.g. "connect ECONNREFUSED 127.0.0.1:6379".
  let lastError: Error | undefined;
  const onError = (error: Error) => {
    lastError = error;
    options.logger?.debug("redis connection error", { error: error.message });
  };
  redis.on("error", onError);
  reader.on("error", onError);
  const connectTimeoutMs = options.connectTimeoutMs ?? 5000;
  let connectTimer: ReturnType<typeof setTimeout> | undefined;
  try {
    // ioredis' connectTimeout covers the TCP connection only; a Redis that
    // accepts but never answers must not hold the start either.
    await Promise.race([
      Promise.all([redis.connect(), reader.connect()]),
      new Promise((_, reject) => {
        connectTimer = setTimeout(
          () => reject(new Error(`no answer within ${connectTimeoutMs} ms`)),
          connectTimeoutMs,
        );
      }),
    ]);
  } catch (e) {
    redis.disconnect();
    reader.disconnect();
    const reason = lastError?.message ?? (e instanceof Error ? e.message : String(e));
    throw new RedisConnectError(shownUrl, reason, e);
  } finally {
    clearTimeout(connectTimer);
  }

  const keys = keySpace(prefix);

  // What Redis said reaches the log (sampled: every caller of a failing
  // store would otherwise write a line), never the caller: its address and
  // replies (script hashes, OOM text) are internal.
  const storeFailures = options.logger
    ? createLogSampler(options.logger, { level: "warn", msg: "session store call failed" })
    : undefined;
  const unavailable = (e: unknown): ConnectError => {
    if (e instanceof ConnectError) return e;
    const message = e instanceof Error ? e.message : String(e);
    storeFailures?.report({ store: shownUrl, error: message });
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

  const cache = new Map<string, Cached>();
  const remember = (sessionId: string, cached: Cached) => {
    cache.delete(sessionId);
    cache.set(sessionId, cached);
    if (cache.size > cacheSize) {
      const oldest = cache.keys().next().value;
      if (oldest !== undefined) cache.delete(oldest);
    }
  };

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
          remember(sessionId, cached);
          return cached;
        }
        throw unavailable(new Error("the load script found a revision never asked"));
      case "full": {
        const fresh: Cached = { state: stateOf(reply.stored, reply.expiresAt), rev: reply.rev };
        remember(sessionId, fresh);
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

  const listeners = new Map<(event: StoreEvent) => void, SubscribeOptions["sessions"]>();
  const toolListeners = new Set<(tools: readonly SharedTool[]) => void>();
  const publish = (event: StoreEvent) => {
    for (const listener of listeners.keys()) listener(event);
  };
  /** Whether a subscriber wants the changes of a session. */
  const wanted = (sessionId: string) => {
    for (const sessions of listeners.values()) {
      if (sessions === undefined || sessions(sessionId)) return true;
    }
    return false;
  };

  // What this replica appended to the feed, for feedAppended().
  let appendedEntries = 0;
  let appendedBytes = 0;
  /** Counts one appended entry: `fields` are its field names and values. */
  const appended = (...fields: string[]) => {
    appendedEntries++;
    // The script adds the entry's number: "n" and up to 16 digits.
    appendedBytes += 17;
    for (const f of fields) appendedBytes += Buffer.byteLength(f);
  };

  // The changes of this replica's commits until the feed delivers them, by
  // the revision the commit makes and the session: its own subscribers get
  // them without reading them back from Redis. A commit whose outcome was
  // never known may leave one behind; the cap bounds those.
  const ownChanges = new Map<string, readonly VariableChange[]>();
  const OWN_CHANGES_MAX = 4096;
  const ownKey = (sessionId: string, rev: string) => `${rev} ${sessionId}`;
  const keepOwn = (sessionId: string, rev: number, changes: readonly VariableChange[]) => {
    if (changes.length === 0) return;
    ownChanges.set(ownKey(sessionId, String(rev)), changes);
    if (ownChanges.size > OWN_CHANGES_MAX) {
      const oldest = ownChanges.keys().next().value;
      if (oldest !== undefined) ownChanges.delete(oldest);
    }
  };

  // Value versions delivered ahead of their own feed entry (another
  // replica's write, read back after a newer write replaced it), by session
  // and variable: entries up to that version are not delivered again, so
  // versions never go backwards. A mark goes when its own entry arrives.
  const ahead = new Map<string, number>();
  const publishChange = (change: VariableChange, entryVersion: number) => {
    const { kind, variable } = change;
    if (kind === "value_changed" || kind === "registered") {
      const key = `${change.sessionId}\n${variable.id}`;
      const mark = ahead.get(key);
      if (mark !== undefined) {
        if (entryVersion >= mark) ahead.delete(key);
        if (variable.version <= mark) return;
      }
      if (variable.version > entryVersion) ahead.set(key, variable.version);
    }
    publish({ type: "change", change });
  };

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
    if (reply.result === "ended") appended("t", "e", "sid", sessionId, "why", reason);
    cache.delete(sessionId);
    return reply.result === "ended" ? reply.variables : null;
  };

  /** One feed entry, with what delivering it takes. */
  interface Entry {
    readonly id: string;
    readonly f: Readonly<Record<string, string>>;
    /** This replica's own commit, as it made it. */
    own?: readonly VariableChange[] | undefined;
    /** Another replica's commit, as the feed says it (no values). */
    changes?: readonly FeedChange[];
  }

  /**
   * Reads the current records of variables other replicas' entries name:
   * one round trip for a whole batch of entries.
   */
  const readRecords = async (need: ReadonlyMap<string, ReadonlySet<string>>) => {
    const out = new Map<string, VariableRecord>();
    if (need.size === 0) return out;
    const asked: [string, string[]][] = [];
    const pipeline = redis.pipeline();
    for (const [sessionId, ids] of need) {
      const list = [...ids];
      asked.push([sessionId, list]);
      pipeline.hmget(keys.of(sessionId).vars, ...list);
    }
    const replies = (await call(() => pipeline.exec())) ?? [];
    asked.forEach(([sessionId, ids], k) => {
      const [error, texts] = replies[k] ?? [new Error("no reply")];
      if (error) throw unavailable(error);
      (texts as (string | null)[]).forEach((text, i) => {
        if (text === null) return;
        // A record this code cannot read must not stop the feed for all
        // (read again and again): its change is left out, and said so.
        try {
          out.set(`${sessionId}\n${ids[i]}`, decodeRecord(text));
        } catch (error) {
          options.logger?.error("unreadable variable record", { variable: ids[i], error });
        }
      });
    });
    return out;
  };

  // The change feed: one reader loop per replica. `lastNumber` is the
  // number (field `n`) of the last entry delivered.
  const { feed: feedKey, feedSeq: feedCounterKey } = keys.deployment;
  let lastId = "0-0";
  let lastNumber = 0;
  let delivered = "0-0";
  let closed = false;
  const waiters: { id: string; resolve: () => void }[] = [];
  const settleWaiters = () => {
    for (let i = waiters.length - 1; i >= 0; i--) {
      const w = waiters[i] as (typeof waiters)[number];
      if (compareIds(delivered, w.id) >= 0) {
        waiters.splice(i, 1);
        w.resolve();
      }
    }
  };

  /** Changes may have been missed: every subscriber must resynchronize. */
  const resync = (reason: string) => {
    cache.clear();
    ahead.clear();
    publish({ type: "resync", reason });
  };

  /** Delivers a batch of entries in feed order, after reading what they need. */
  const deliverBatch = async (batch: readonly [string, string[]][]) => {
    const entries: Entry[] = [];
    const need = new Map<string, Set<string>>();
    for (const [id, fields] of batch) {
      const f: Record<string, string> = {};
      for (let i = 0; i + 1 < fields.length; i += 2)
        f[fields[i] as string] = fields[i + 1] as string;
      const entry: Entry = { id, f };
      entries.push(entry);
      if (f.t !== "c") continue;
      const sessionId = f.sid ?? "";
      const key = ownKey(sessionId, f.rev ?? "");
      // (Another replica's commit of that revision clears what this
      // replica's failed attempt at it left behind.)
      entry.own = f.r === replica ? ownChanges.get(key) : undefined;
      ownChanges.delete(key);
      if (entry.own !== undefined || !wanted(sessionId)) continue;
      try {
        entry.changes = decodeFeedChanges(f.ev ?? "[]");
      } catch (error) {
        options.logger?.error("unreadable change feed entry", { id, error });
      }
      for (const change of entry.changes ?? []) {
        if (change.deleted !== undefined || change.record !== undefined) continue;
        let ids = need.get(sessionId);
        if (ids === undefined) {
          ids = new Set();
          need.set(sessionId, ids);
        }
        ids.add(change.id);
      }
    }
    const records = await readRecords(need);
    for (const entry of entries) {
      // Entries are numbered one by one: a jump means a trim took entries
      // this replica had not read (it fell behind, or was away), and a
      // number that goes back a feed Redis lost and began again. (Entries
      // without a number come from replicas of an older version; 0 is no
      // number known yet.)
      const n = entry.f.n === undefined ? undefined : Number(entry.f.n);
      if (n !== undefined && n !== lastNumber + 1 && lastNumber !== 0) {
        resync(
          n > lastNumber
            ? `the change feed was trimmed past ${n - lastNumber - 1} entries this replica had not read (feed length or age limit)`
            : "the change feed began again (Redis lost it)",
        );
      }
      if (n !== undefined) lastNumber = n;
      deliver(entry, records);
    }
  };

  const deliver = (
    { id, f, own, changes }: Entry,
    records: ReadonlyMap<string, VariableRecord>,
  ) => {
    const sessionId = f.sid ?? "";
    if (f.t === "e") {
      cache.delete(sessionId);
      for (const key of ahead.keys()) if (key.startsWith(`${sessionId}\n`)) ahead.delete(key);
      publish({
        type: "session_ended",
        sessionId,
        reason: f.why === "cleanup" ? "cleanup" : "expired",
      });
    } else if (f.t === "tools") {
      // This replica applied its own registrations when it made them.
      if (f.r !== replica) {
        try {
          const tools = (JSON.parse(f.ev ?? "[]") as { doc: string }[]).map(
            (t) => JSON.parse(t.doc) as SharedTool,
          );
          for (const listener of toolListeners) listener(tools);
        } catch (error) {
          options.logger?.error("unreadable tool registration in the feed", { id, error });
        }
      }
    } else if (f.t === "c") {
      // Another replica's commit makes this copy stale; this replica's own
      // commits were applied to it already.
      // (This replica's own entry may arrive before its commit's reply.)
      const cached = cache.get(sessionId);
      if (f.r !== replica && cached !== undefined && Number(cached.rev) < Number(f.rev)) {
        cache.delete(sessionId);
      }
      for (const change of own ?? []) publishChange(change, change.variable.version);
      for (const change of changes ?? []) {
        const variable =
          change.record ??
          (change.deleted !== undefined
            ? deletedRecord(change.deleted)
            : records.get(`${sessionId}\n${change.id}`));
        // Gone since (a later entry deletes it or ends the session), or a
        // variable of a session made again since: later entries say so.
        if (variable === undefined || variable.version < change.version) continue;
        publishChange(
          {
            sessionId,
            kind: change.kind,
            variable,
            source: change.source ?? variable.optimization?.optimizerId ?? variable.changedBy,
            metadata:
              change.metadata ??
              (change.kind === "registered"
                ? variable.metadata
                : change.kind === "value_changed"
                  ? variable.changeMetadata
                  : {}),
            timestamp: change.timestamp,
          },
          change.version,
        );
      }
    }
    delivered = id;
  };

  const tail = await call(() =>
    redis.multi().xrevrange(feedKey, "+", "-", "COUNT", 1).get(feedCounterKey).exec(),
  );
  lastId = (tail?.[0]?.[1] as [string, string[]][] | undefined)?.[0]?.[0] ?? "0-0";
  lastNumber = Number(tail?.[1]?.[1] ?? 0);
  delivered = lastId;
  let readerHealthy = true;

  const readLoop = async () => {
    let failed = false;
    // Every disconnect is checked for a gap once the reader is back, even
    // when ioredis answered the blocking read by sending it again.
    reader.on("close", () => {
      failed = true;
    });
    while (!closed) {
      try {
        if (failed) {
          // Back after a disconnect: resume from the last id, unless the
          // feed dropped entries after it (then subscribers must resync).
          // (Until this answers, the replica stays "away": a read that
          // succeeded first would skip a gap silently.) Entries numbered
          // past the next one say the same once they arrive; this sees a
          // deleted entry or a lost feed at once.
          let maxDeleted: string;
          try {
            const info = (await reader.call("XINFO", "STREAM", feedKey)) as unknown[];
            maxDeleted = String(field(info, "max-deleted-entry-id") ?? "0-0");
          } catch (error) {
            // No feed at all: a Redis that lost it lost what came after lastId.
            if (!String(error).includes("no such key")) throw error;
            maxDeleted = lastId === "0-0" ? "0-0" : "+";
          }
          if (maxDeleted === "+" || compareIds(maxDeleted, lastId) > 0) {
            resync("the change feed lost entries while this replica was away from Redis");
            // Resynchronized already: the numbers' jump is not another gap.
            lastNumber = 0;
          }
          failed = false;
          readerHealthy = true;
        }
        const reply = await reader.xread("COUNT", 512, "BLOCK", 5000, "STREAMS", feedKey, lastId);
        const batch = (reply?.[0]?.[1] ?? []) as [string, string[]][];
        if (batch.length > 0) {
          await deliverBatch(batch);
          lastId = (batch.at(-1) as [string, string[]])[0];
        }
        settleWaiters();
      } catch (error) {
        if (closed) break;
        if (!failed) {
          options.logger?.warn("change feed interrupted; reconnecting", {
            store: shownUrl,
            error: error instanceof Error ? error.message : String(error),
          });
        }
        failed = true;
        readerHealthy = false;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  };
  const reading = readLoop();

  // Expiry: every replica sweeps the index; each session ends once.
  let sweeping = false;
  const sweep = async () => {
    if (sweeping || closed) return;
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
      keepOwn(sessionId, rev, changes);
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
        ownChanges.delete(ownKey(sessionId, String(rev)));
        cache.delete(sessionId);
        for (const job of jobs) job.resolve(undefined);
        return;
      }
      if (reply.result === "ok") {
        if (changes.length > 0)
          appended("t", "c", "sid", sessionId, "rev", String(rev), "r", replica, "ev", ev);
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
        ownChanges.delete(ownKey(sessionId, String(rev)));
        for (const job of jobs) await attempt(sessionId, job.fn).then(job.resolve, job.reject);
        return;
      }
      // Another replica wrote first: run them all again on the current state.
      ownChanges.delete(ownKey(sessionId, String(rev)));
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
      keepOwn(sessionId, rev, tx.changes);
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
      if (reply.result !== "ok") ownChanges.delete(ownKey(sessionId, String(rev)));
      if (reply.result === "absent" || reply.result === "expired") {
        cache.delete(sessionId);
        return undefined;
      }
      // Decided on the current revision (the script checks it first).
      if (reply.result === "clientbytes") {
        throw clientBytesReached(reply.held, reply.adding, reply.max);
      }
      if (reply.result === "ok") {
        if (tx.changes.length > 0)
          appended("t", "c", "sid", sessionId, "rev", String(rev), "r", replica, "ev", ev);
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
          appended("t", "tools", "sid", sid, "r", replica, "ev", list);
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
      return redis.status === "ready" && reader.status === "ready" && readerHealthy;
    },

    async caughtUp() {
      const tailNow = await call(() => redis.xrevrange(feedKey, "+", "-", "COUNT", 1));
      const target = tailNow[0]?.[0];
      if (target === undefined || compareIds(delivered, target) >= 0) return;
      await new Promise<void>((resolve) => waiters.push({ id: target, resolve }));
    },

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
      keepOwn(init.id, 1, tx.changes);
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
      if (reply.result !== "ok") ownChanges.delete(ownKey(init.id, "1"));
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
          if (tx.changes.length > 0)
            appended("t", "c", "sid", init.id, "rev", "1", "r", replica, "ev", ev);
          tx.commit();
          state.record = { ...state.record, expiresAt: reply.expiresAt };
          remember(init.id, { state, rev: reply.rev });
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

    feedAppended() {
      return { entries: appendedEntries, bytes: appendedBytes };
    },

    subscribe(listener, subscribeOptions) {
      listeners.set(listener, subscribeOptions?.sessions);
      return () => {
        listeners.delete(listener);
      };
    },

    async close() {
      if (closed) return;
      closed = true;
      if (sweeper !== undefined) clearInterval(sweeper);
      listeners.clear();
      toolListeners.clear();
      reader.disconnect();
      await reading;
      await redis.quit().catch(() => redis.disconnect());
      for (const w of waiters.splice(0)) w.resolve();
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

/** Why {@link createRedisStore} could not connect; `reason` is the message without the URL. */
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

/** Stream ids compared as (ms, seq). */
function compareIds(a: string, b: string): number {
  const [am = 0, as = 0] = a.split("-").map(Number);
  const [bm = 0, bs = 0] = b.split("-").map(Number);
  return am !== bm ? am - bm : as - bs;
}

function field(reply: unknown[], name: string): unknown {
  for (let i = 0; i + 1 < reply.length; i += 2) if (reply[i] === name) return reply[i + 1];
  return undefined;
}
