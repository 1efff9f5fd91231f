import { type ServerTimers, systemTimers } from "../common/timers.js";
import { clientBytesReached, clientQuotaReached, sessionLimitReached } from "./errors.js";
import {
  createTransaction,
  createView,
  emptySessionState,
  newSessionRecord,
  type SessionState,
} from "./session-state.js";
import type {
  SessionEndReason,
  SessionStore,
  SessionTransaction,
  StoreEvent,
} from "./session-store.js";

/** Options of {@link createMemoryStore}. */
export interface MemoryStoreOptions {
  /** Clock in epoch milliseconds (default: `timers.now`). Replaceable so tests can move time. */
  readonly now?: () => number;
  /** Runs the expiry sweeper (default: Node's timers). */
  readonly timers?: ServerTimers;
  /** How often the expiry sweeper runs (default 1000 ms; 0 disables it). */
  readonly sweepIntervalMs?: number;
  /**
   * Longest run of the sweeper before it lets other work in (default 8 ms),
   * so a mass expiry never stalls the event loop for long.
   */
  readonly sweepSliceMs?: number;
  /**
   * Runs every transaction callback (and creation setup) twice, throwing
   * the first run's writes, changes, result and error away, as a store on
   * Redis throws away a run that lost a race (default false). For tests: a
   * callback with effects outside its transaction, or one that carries
   * state out of a run, then misbehaves here as it would under contention
   * there (see SessionStore.transact).
   */
  readonly rehearse?: boolean;
}

/** A session as the memory store keeps it: its state and its expiry bucket. */
interface MemorySessionState extends SessionState {
  /** Expiry bucket (whole second) this session is filed under. */
  bucket: number;
  /** The client it counts against (SessionInit.quota). */
  client: ClientShare | undefined;
}

/** What one client's live sessions hold together (SessionInit.quota). */
interface ClientShare {
  readonly client: string;
  sessions: number;
  bytes: number;
  /** Bytes its sessions may hold together; Infinity without a limit. */
  maxBytes: number;
}

const BUCKET_MS = 1000;

/**
 * The embedded in-memory {@link SessionStore}. Everything a transaction does
 * happens synchronously inside one call, so transactions are atomic by
 * construction. Expiry uses one-second buckets keyed by expiry time: a touch
 * moves a session between buckets in O(1), and the sweeper only visits
 * buckets that are due, so its work grows with what expires, not with what
 * is stored. A callback runs once, unless the `rehearse` option asks for
 * the extra run a shared store may make.
 */
export function createMemoryStore(options: MemoryStoreOptions = {}): SessionStore {
  const timers = options.timers ?? systemTimers;
  const now = options.now ?? timers.now;
  const sweepSliceMs = options.sweepSliceMs ?? 8;
  const rehearse = options.rehearse ?? false;
  const sessions = new Map<string, MemorySessionState>();
  const buckets = new Map<number, Set<string>>();
  /** Sessions and bytes per client (SessionInit.quota). */
  const perClient = new Map<string, ClientShare>();
  const listeners = new Set<(event: StoreEvent) => void>();
  let variableTotal = 0;
  let sweeping = false;
  let closed = false;

  const publish = (event: StoreEvent): void => {
    for (const listener of listeners) listener(event);
  };

  const file = (state: MemorySessionState): void => {
    const bucket = Math.ceil(state.record.expiresAt / BUCKET_MS);
    if (bucket === state.bucket) return;
    buckets.get(state.bucket)?.delete(state.record.id);
    let set = buckets.get(bucket);
    if (set === undefined) {
      set = new Set();
      buckets.set(bucket, set);
    }
    set.add(state.record.id);
    state.bucket = bucket;
  };

  const remove = (state: MemorySessionState, reason: SessionEndReason): number => {
    sessions.delete(state.record.id);
    const set = buckets.get(state.bucket);
    set?.delete(state.record.id);
    if (set?.size === 0) buckets.delete(state.bucket);
    const count = state.vars.size;
    variableTotal -= count;
    const share = state.client;
    if (share !== undefined) {
      share.sessions--;
      share.bytes -= state.bytes;
      if (share.sessions === 0) perClient.delete(share.client);
    }
    publish({ type: "session_ended", sessionId: state.record.id, reason });
    return count;
  };

  /** The live session, refreshed; removes it if it has expired. */
  const live = (sessionId: string): MemorySessionState | undefined => {
    const state = sessions.get(sessionId);
    if (state === undefined) return undefined;
    const t = now();
    if (state.record.expiresAt <= t) {
      remove(state, "expired");
      return undefined;
    }
    // Refresh at a coarse granularity (at most the bucket size, at most a
    // sixteenth of the TTL): a busy session then costs one record copy per
    // second, not one per call, and never expires early by more than that.
    const step = Math.min(BUCKET_MS, state.record.ttlMs / 16);
    if (t + state.record.ttlMs - state.record.expiresAt >= step) {
      state.record = { ...state.record, expiresAt: t + state.record.ttlMs };
      file(state);
    }
    return state;
  };

  /**
   * A run of `fn` that decides nothing, as a run that lost a race on a
   * shared store: its transaction is never committed, and what it returned
   * or threw is dropped.
   */
  const rehearsal = (state: MemorySessionState, fn: (tx: SessionTransaction) => unknown) => {
    if (!rehearse) return;
    try {
      fn(createTransaction(state).api);
    } catch {
      // Deliberately dropped: only the run that follows decides.
    }
  };

  const runTransaction = <T>(state: MemorySessionState, fn: (tx: SessionTransaction) => T): T => {
    rehearsal(state, fn);
    const tx = createTransaction(state);
    const value = fn(tx.api);
    const share = state.client;
    const growth = tx.staged().bytes;
    if (share !== undefined && growth > 0 && share.bytes + growth > share.maxBytes) {
      throw clientBytesReached(share.bytes, growth, share.maxBytes);
    }
    const delta = tx.commit();
    if (share !== undefined) share.bytes += growth;
    variableTotal += delta;
    for (const change of tx.changes) publish({ type: "change", change });
    return value;
  };

  const sweep = async (): Promise<void> => {
    if (sweeping) return;
    sweeping = true;
    try {
      const due = Math.floor(now() / BUCKET_MS);
      // performance.now, not the injected clock: the slice bounds how long
      // the event loop is held, which only the process's own clock measures.
      let sliceStart = performance.now();
      let done = 0;
      for (const [bucket, ids] of buckets) {
        if (bucket > due) continue;
        for (const id of [...ids]) {
          const state = sessions.get(id);
          if (state !== undefined && state.record.expiresAt <= now()) remove(state, "expired");
          else ids.delete(id);
          // Check the clock every few sessions: a time budget holds whatever
          // one removal costs (listeners included).
          if (++done % 32 === 0 && performance.now() - sliceStart > sweepSliceMs) {
            await yieldToLoop();
            sliceStart = performance.now();
          }
        }
        if (ids.size === 0) buckets.delete(bucket);
      }
    } finally {
      sweeping = false;
    }
  };

  const interval = options.sweepIntervalMs ?? 1000;
  const timer =
    interval > 0
      ? timers.setInterval(() => {
          void sweep();
        }, interval)
      : undefined;
  // The sweeper must never keep a process alive on its own.
  timer?.unref();

  return {
    async createSession(init, maxSessions, setup) {
      const existing = live(init.id);
      if (existing !== undefined) return { session: existing.record, created: false };
      if (sessions.size >= maxSessions) throw sessionLimitReached(maxSessions);
      const { quota } = init;
      let share = quota === undefined ? undefined : perClient.get(quota.client);
      if (quota !== undefined) {
        const maxBytes = quota.maxBytes ?? Number.POSITIVE_INFINITY;
        if (share !== undefined && share.sessions >= quota.max)
          throw clientQuotaReached(share.sessions, quota.max);
        if (share !== undefined && share.bytes >= maxBytes)
          throw clientBytesReached(share.bytes, 0, maxBytes);
        share ??= { client: quota.client, sessions: 0, bytes: 0, maxBytes };
        // The limit in force is the one the latest session was created under.
        share.maxBytes = maxBytes;
      }
      const state: MemorySessionState = {
        ...emptySessionState(newSessionRecord(init, now())),
        bucket: Number.NaN,
        client: share,
      };
      // Run the setup before the session becomes visible, so a failing
      // setup leaves no half-created session behind.
      if (setup !== undefined) rehearsal(state, setup);
      const tx = createTransaction(state);
      setup?.(tx.api);
      const initial = tx.staged().bytes;
      if (share !== undefined && initial > 0 && share.bytes + initial > share.maxBytes) {
        throw clientBytesReached(share.bytes, initial, share.maxBytes);
      }
      variableTotal += tx.commit();
      sessions.set(init.id, state);
      if (share !== undefined) {
        share.sessions++;
        share.bytes += initial;
        perClient.set(share.client, share);
      }
      file(state);
      for (const change of tx.changes) publish({ type: "change", change });
      return { session: state.record, created: true };
    },

    async read(sessionId, fn) {
      const state = live(sessionId);
      if (state === undefined) return undefined;
      return { value: fn(createView(state)) };
    },

    async transact(sessionId, fn) {
      const state = live(sessionId);
      if (state === undefined) return undefined;
      return { value: runTransaction(state, fn) };
    },

    async deleteSession(sessionId, reason) {
      const state = sessions.get(sessionId);
      if (state === undefined) return undefined;
      return { variables: remove(state, reason) };
    },

    async stats() {
      return { sessions: sessions.size, variables: variableTotal };
    },

    subscribe(listener) {
      listeners.add(listener);
      return () => {
        listeners.delete(listener);
      };
    },

    // One node sees every change: there is nothing to follow.
    follow: async () => () => undefined,

    async close() {
      if (closed) return;
      closed = true;
      timers.clearInterval(timer);
      listeners.clear();
    },
  };
}

/**
 * Lets other work in between slices of a sweep. Node's own setTimeout, not
 * the injected timers: this waits for no time, only for the event loop to
 * take a turn, and a sweep driven by a test's clock must not stall on it.
 */
function yieldToLoop(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}
