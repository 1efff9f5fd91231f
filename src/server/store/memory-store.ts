import { Code, ConnectError } from "@connectrpc/connect";
import type { JsonValue } from "../../values/index.js";
import { isVariableId } from "../ids.js";
import type {
  DependencyEdge,
  HistoryEntry,
  SessionEndReason,
  SessionRecord,
  SessionStore,
  SessionTransaction,
  SessionView,
  StoreEvent,
  VariableChange,
  VariableRecord,
} from "./session-store.js";

/** Options of {@link createMemoryStore}. */
export interface MemoryStoreOptions {
  /** Clock in epoch milliseconds. Replaceable so tests can move time. */
  readonly now?: () => number;
  /** How often the expiry sweeper runs (default 1000 ms; 0 disables it). */
  readonly sweepIntervalMs?: number;
  /**
   * Longest run of the sweeper before it lets other work in (default 8 ms),
   * so a mass expiry never stalls the event loop for long.
   */
  readonly sweepSliceMs?: number;
}

interface SessionState {
  record: SessionRecord;
  readonly vars: Map<string, VariableRecord>;
  readonly byName: Map<string, string>;
  /** Past versions by variable id; created by the first write. */
  history: Map<string, HistoryEntry[]> | undefined;
  deps: readonly DependencyEdge[];
  /** Created on first use: most sessions never hold tool data. */
  data: Map<string, DataEntry> | undefined;
  /** What the session holds, by the records' own count (see SessionView.bytes). */
  bytes: number;
  /** Expiry bucket (whole second) this session is filed under. */
  bucket: number;
}

/** A session data entry with the size it was stored with. */
interface DataEntry {
  readonly value: JsonValue;
  readonly bytes: number;
}

const BUCKET_MS = 1000;
const NO_DEPENDENCIES: readonly DependencyEdge[] = Object.freeze([]);

/**
 * The embedded in-memory {@link SessionStore}. Everything a transaction does
 * happens synchronously inside one call, so transactions are atomic by
 * construction. Expiry uses one-second buckets keyed by expiry time: a touch
 * moves a session between buckets in O(1), and the sweeper only visits
 * buckets that are due, so its work grows with what expires, not with what
 * is stored.
 */
export function createMemoryStore(options: MemoryStoreOptions = {}): SessionStore {
  const now = options.now ?? Date.now;
  const sweepSliceMs = options.sweepSliceMs ?? 8;
  const sessions = new Map<string, SessionState>();
  const buckets = new Map<number, Set<string>>();
  const listeners = new Set<(event: StoreEvent) => void>();
  let variableTotal = 0;
  let sweeping = false;
  let closed = false;

  const publish = (event: StoreEvent): void => {
    for (const listener of listeners) listener(event);
  };

  const file = (state: SessionState): void => {
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

  const remove = (state: SessionState, reason: SessionEndReason): number => {
    sessions.delete(state.record.id);
    const set = buckets.get(state.bucket);
    set?.delete(state.record.id);
    if (set?.size === 0) buckets.delete(state.bucket);
    const count = state.vars.size;
    variableTotal -= count;
    publish({ type: "session_ended", sessionId: state.record.id, reason });
    return count;
  };

  /** The live session, refreshed; removes it if it has expired. */
  const live = (sessionId: string): SessionState | undefined => {
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

  const runTransaction = <T>(state: SessionState, fn: (tx: SessionTransaction) => T): T => {
    const tx = createTransaction(state);
    const value = fn(tx.api);
    const delta = tx.commit();
    variableTotal += delta;
    for (const change of tx.changes) publish({ type: "change", change });
    return value;
  };

  const sweep = async (): Promise<void> => {
    if (sweeping) return;
    sweeping = true;
    try {
      const due = Math.floor(now() / BUCKET_MS);
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
      ? setInterval(() => {
          void sweep();
        }, interval)
      : undefined;
  // The sweeper must never keep a process alive on its own.
  (timer as { unref?: () => void } | undefined)?.unref?.();

  return {
    async createSession(init, maxSessions, setup) {
      const existing = live(init.id);
      if (existing !== undefined) return { session: existing.record, created: false };
      if (sessions.size >= maxSessions) {
        throw new ConnectError(
          `session limit reached: ${maxSessions} sessions are live; clean up unused sessions or raise maxSessions`,
          Code.ResourceExhausted,
        );
      }
      const t = now();
      const state: SessionState = {
        record: {
          id: init.id,
          metadata: init.metadata,
          createdAt: t,
          ttlMs: init.ttlMs,
          expiresAt: t + init.ttlMs,
          allowedTools: init.allowedTools,
          nextVariableSeq: 1,
        },
        vars: new Map(),
        byName: new Map(),
        history: undefined,
        deps: NO_DEPENDENCIES,
        data: undefined,
        bytes: 0,
        bucket: Number.NaN,
      };
      // Run the setup before the session becomes visible, so a failing
      // setup leaves no half-created session behind.
      const tx = createTransaction(state);
      setup?.(tx.api);
      variableTotal += tx.commit();
      sessions.set(init.id, state);
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

    async close() {
      if (closed) return;
      closed = true;
      if (timer !== undefined) clearInterval(timer);
      listeners.clear();
    },
  };
}

function yieldToLoop(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

function createView(state: SessionState): SessionView {
  return {
    get session() {
      return state.record;
    },
    variable(identifier) {
      const id = isVariableId(identifier) ? identifier : state.byName.get(identifier);
      return id === undefined ? undefined : state.vars.get(id);
    },
    variables() {
      return state.vars.values();
    },
    get variableCount() {
      return state.vars.size;
    },
    history(variableId) {
      return state.history?.get(variableId) ?? [];
    },
    dependencies() {
      return state.deps;
    },
    data(key) {
      return state.data?.get(key)?.value;
    },
    dataBytes(key) {
      return state.data?.get(key)?.bytes ?? 0;
    },
    dataKeys() {
      return state.data?.keys() ?? [][Symbol.iterator]();
    },
    get bytes() {
      return state.bytes;
    },
  };
}

/**
 * A transaction stages its writes in overlays and applies them in commit(),
 * so a callback that throws half-way leaves the session untouched.
 */
function createTransaction(state: SessionState) {
  // Overlays are created by the first write that needs them: most
  // transactions touch one or two of them, and reads none.
  let vars: Map<string, VariableRecord | null> | undefined;
  let names: Map<string, string | null> | undefined;
  let history: Map<string, HistoryEntry[] | null> | undefined;
  let data: Map<string, DataEntry | undefined> | undefined;
  /** Change in the session's bytes staged so far. */
  let bytes = 0;
  const stageVar = (id: string, record: VariableRecord | null) => {
    vars ??= new Map();
    vars.set(id, record);
  };
  const stageName = (name: string, id: string | null) => {
    names ??= new Map();
    names.set(name, id);
  };
  const stageHistory = (id: string, entries: HistoryEntry[] | null) => {
    history ??= new Map();
    history.set(id, entries);
  };
  let deps: DependencyEdge[] | undefined;
  let seq = state.record.nextVariableSeq;
  const changes: VariableChange[] = [];

  const getVar = (id: string): VariableRecord | undefined => {
    const staged = vars?.get(id);
    if (staged !== undefined) return staged ?? undefined;
    return state.vars.get(id);
  };
  const idForName = (name: string): string | undefined => {
    const staged = names?.get(name);
    if (staged !== undefined) return staged ?? undefined;
    return state.byName.get(name);
  };
  const getHistory = (id: string): readonly HistoryEntry[] => {
    const staged = history?.get(id);
    if (staged !== undefined) return staged ?? [];
    return state.history?.get(id) ?? [];
  };
  /**
   * The variable's history as an array this transaction owns and may change
   * in place: copied on first write, since committed arrays are shared with
   * every view that read them.
   */
  const ownHistory = (id: string): HistoryEntry[] => {
    const staged = history?.get(id);
    if (staged !== undefined && staged !== null) return staged;
    const own = staged === null ? [] : [...(state.history?.get(id) ?? [])];
    stageHistory(id, own);
    return own;
  };
  const getData = (key: string): DataEntry | undefined =>
    data?.has(key) ? data.get(key) : state.data?.get(key);

  const api: SessionTransaction = {
    get session() {
      return state.record;
    },
    variable(identifier) {
      const id = isVariableId(identifier) ? identifier : idForName(identifier);
      return id === undefined ? undefined : getVar(id);
    },
    *variables() {
      for (const [id, record] of state.vars) {
        if (!vars?.has(id)) yield record;
      }
      for (const record of vars?.values() ?? []) if (record !== null) yield record;
    },
    get variableCount() {
      let count = state.vars.size;
      for (const [id, record] of vars ?? []) {
        const before = state.vars.has(id);
        if (record === null && before) count--;
        if (record !== null && !before) count++;
      }
      return count;
    },
    history: getHistory,
    dependencies() {
      return deps ?? state.deps;
    },
    data(key) {
      return getData(key)?.value;
    },
    dataBytes(key) {
      return getData(key)?.bytes ?? 0;
    },
    *dataKeys() {
      for (const key of state.data?.keys() ?? []) if (!data?.has(key)) yield key;
      for (const [key, entry] of data ?? []) if (entry !== undefined) yield key;
    },
    get bytes() {
      return state.bytes + bytes;
    },
    putVariable(record) {
      const previous = getVar(record.id);
      if (previous !== undefined && previous.name !== record.name) stageName(previous.name, null);
      stageVar(record.id, record);
      stageName(record.name, record.id);
      bytes += record.bytes - (previous?.bytes ?? 0);
    },
    deleteVariable(id) {
      const previous = getVar(id);
      if (previous === undefined) return;
      bytes -= previous.bytes;
      for (const entry of getHistory(id)) bytes -= entry.bytes;
      stageVar(id, null);
      stageName(previous.name, null);
      stageHistory(id, null);
      deps = (deps ?? state.deps).filter((e) => e.from !== id && e.to !== id);
    },
    appendHistory(variableId, entry) {
      ownHistory(variableId).push(entry);
      bytes += entry.bytes;
    },
    dropHistory(variableId, count) {
      if (count <= 0 || getHistory(variableId).length === 0) return;
      for (const entry of ownHistory(variableId).splice(0, count)) bytes -= entry.bytes;
    },
    addDependency(edge) {
      deps = [...(deps ?? state.deps), edge];
    },
    setData(key, value, size) {
      bytes -= getData(key)?.bytes ?? 0;
      data ??= new Map();
      if (value === undefined) data.set(key, undefined);
      else {
        data.set(key, { value, bytes: size });
        bytes += size;
      }
    },
    nextVariableSeq() {
      return seq++;
    },
    emit(change) {
      changes.push(change);
    },
  };

  /** Applies the staged writes; returns the change in variable count. */
  const commit = (): number => {
    let delta = 0;
    for (const [id, record] of vars ?? []) {
      const before = state.vars.get(id);
      if (record === null) {
        if (before !== undefined) {
          state.vars.delete(id);
          delta--;
        }
      } else {
        if (before === undefined) delta++;
        state.vars.set(id, record);
      }
    }
    for (const [name, id] of names ?? []) {
      if (id === null) state.byName.delete(name);
      else state.byName.set(name, id);
    }
    for (const [id, entries] of history ?? []) {
      if (entries === null || entries.length === 0) state.history?.delete(id);
      else {
        state.history ??= new Map();
        state.history.set(id, entries);
      }
    }
    for (const [key, entry] of data ?? []) {
      if (entry === undefined) state.data?.delete(key);
      else {
        state.data ??= new Map();
        state.data.set(key, entry);
      }
    }
    state.bytes += bytes;
    if (deps !== undefined) state.deps = deps;
    if (seq !== state.record.nextVariableSeq) {
      state.record = { ...state.record, nextVariableSeq: seq };
    }
    return delta;
  };

  return { api, commit, changes };
}
