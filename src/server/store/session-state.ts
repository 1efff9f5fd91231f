/**
 * One session's state as a process holds it, with the view and the staging
 * transaction both stores use: the in-memory store keeps every session this
 * way, the Redis store keeps a copy of the sessions it serves.
 */
import type { JsonValue } from "../../values/index.js";
import { isVariableId } from "./ids.js";
import type {
  DependencyEdge,
  HistoryRecord,
  SessionInit,
  SessionRecord,
  SessionTransaction,
  SessionView,
  VariableChange,
  VariableRecord,
} from "./session-store.js";

/** A session's state: its record, variables, history, dependencies and data. */
export interface SessionState {
  record: SessionRecord;
  readonly vars: Map<string, VariableRecord>;
  readonly byName: Map<string, string>;
  /** Past versions by variable id; created by the first write. */
  history: Map<string, HistoryRecord[]> | undefined;
  deps: readonly DependencyEdge[];
  /** Created on first use: most sessions never hold tool data. */
  data: Map<string, DataEntry> | undefined;
  /** What the session holds, by the records' own count (see SessionView.bytes). */
  bytes: number;
}

/** A session data entry with the size it was stored with. */
export interface DataEntry {
  readonly value: JsonValue;
  readonly bytes: number;
}

/** Frozen empty dependency list shared by sessions without dependencies. */
export const NO_DEPENDENCIES: readonly DependencyEdge[] = Object.freeze([]);

/** The record of a session created now (`t`, epoch ms) from its init. */
export function newSessionRecord(init: SessionInit, t: number): SessionRecord {
  return {
    id: init.id,
    metadata: init.metadata,
    createdAt: t,
    ttlMs: init.ttlMs,
    expiresAt: t + init.ttlMs,
    allowedTools: init.allowedTools,
    nextVariableSeq: 1,
  };
}

/** A new, empty session state. */
export function emptySessionState(record: SessionRecord): SessionState {
  return {
    record,
    vars: new Map(),
    byName: new Map(),
    history: undefined,
    deps: NO_DEPENDENCIES,
    data: undefined,
    bytes: 0,
  };
}

/** A read-only view of a state. */
export function createView(state: SessionState): SessionView {
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
export function createTransaction(state: SessionState) {
  // Overlays are created by the first write that needs them: most
  // transactions touch one or two of them, and reads none.
  let vars: Map<string, VariableRecord | null> | undefined;
  let names: Map<string, string | null> | undefined;
  let history: Map<string, HistoryRecord[] | null> | undefined;
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
  const stageHistory = (id: string, entries: HistoryRecord[] | null) => {
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
  const getHistory = (id: string): readonly HistoryRecord[] => {
    const staged = history?.get(id);
    if (staged !== undefined) return staged ?? [];
    return state.history?.get(id) ?? [];
  };
  /**
   * The variable's history as an array this transaction owns and may change
   * in place: copied on first write, since committed arrays are shared with
   * every view that read them.
   */
  const ownHistory = (id: string): HistoryRecord[] => {
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

  /** What the transaction staged, for stores that write it elsewhere first. */
  const staged = () => ({ vars, history, data, deps, seq, bytes });

  return { api, commit, changes, staged };
}

/** What {@link createTransaction} returns. */
export type StagingTransaction = ReturnType<typeof createTransaction>;
