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
  return new StateView(state);
}

/** {@link createView}'s view: one object, its methods on the prototype (a read makes one). */
class StateView implements SessionView {
  constructor(private readonly state: SessionState) {}

  get session(): SessionRecord {
    return this.state.record;
  }

  variable(identifier: string): VariableRecord | undefined {
    const id = isVariableId(identifier) ? identifier : this.state.byName.get(identifier);
    return id === undefined ? undefined : this.state.vars.get(id);
  }

  variables(): IterableIterator<VariableRecord> {
    return this.state.vars.values();
  }

  get variableCount(): number {
    return this.state.vars.size;
  }

  history(variableId: string): readonly HistoryRecord[] {
    return this.state.history?.get(variableId) ?? [];
  }

  dependencies(): readonly DependencyEdge[] {
    return this.state.deps;
  }

  data(key: string): JsonValue | undefined {
    return this.state.data?.get(key)?.value;
  }

  dataBytes(key: string): number {
    return this.state.data?.get(key)?.bytes ?? 0;
  }

  dataKeys(): IterableIterator<string> {
    return this.state.data?.keys() ?? [][Symbol.iterator]();
  }

  get bytes(): number {
    return this.state.bytes;
  }
}

/**
 * The sum of a committed history array's entry bytes, by array. Committed
 * arrays are never changed (a transaction copies one before its first
 * change), so the sum made for one holds for as long as the array lives:
 * a write then costs no pass over its variable's history to learn it.
 */
const committedSums = new WeakMap<readonly HistoryRecord[], number>();

function committedBytes(entries: readonly HistoryRecord[]): number {
  let sum = committedSums.get(entries);
  if (sum === undefined) {
    sum = bytesOf(entries);
    committedSums.set(entries, sum);
  }
  return sum;
}

function bytesOf(entries: readonly HistoryRecord[]): number {
  let sum = 0;
  for (const e of entries) sum += e.bytes;
  return sum;
}

/**
 * A transaction stages its writes in overlays and applies them in commit(),
 * so a callback that throws half-way leaves the session untouched.
 */
export function createTransaction(state: SessionState): StagingTransaction {
  return new StagingTransaction(state);
}

/**
 * What {@link createTransaction} returns: `api` is what the callback gets,
 * `commit` applies the staged writes, `changes` are the changes emitted and
 * `staged` what was staged. One object with its methods on the prototype:
 * a transaction runs per write, and a set of closures per transaction was
 * a measurable part of a write's cost.
 */
export class StagingTransaction implements SessionTransaction {
  // Overlays are created by the first write that needs them: most
  // transactions touch one or two of them, and reads none.
  private vars: Map<string, VariableRecord | null> | undefined = undefined;
  private names: Map<string, string | null> | undefined = undefined;
  private historyOverlay: Map<string, HistoryRecord[] | null> | undefined = undefined;
  /** What each staged history counts for together (0 for a deleted one). */
  private historySums: Map<string, number> | undefined = undefined;
  private dataOverlay: Map<string, DataEntry | undefined> | undefined = undefined;
  /** Change in the session's bytes staged so far. */
  private staging = 0;
  private deps: DependencyEdge[] | undefined = undefined;
  private seq: number;
  /** The changes emitted, in order. */
  readonly changes: VariableChange[] = [];

  constructor(private readonly state: SessionState) {
    this.seq = state.record.nextVariableSeq;
  }

  /** The transaction as its callback sees it. */
  get api(): SessionTransaction {
    return this;
  }

  private stageVar(id: string, record: VariableRecord | null): void {
    this.vars ??= new Map();
    this.vars.set(id, record);
  }

  private stageName(name: string, id: string | null): void {
    this.names ??= new Map();
    this.names.set(name, id);
  }

  private stageHistory(id: string, entries: HistoryRecord[] | null, sum: number): void {
    this.historyOverlay ??= new Map();
    this.historyOverlay.set(id, entries);
    this.historySums ??= new Map();
    this.historySums.set(id, sum);
  }

  private getVar(id: string): VariableRecord | undefined {
    const staged = this.vars?.get(id);
    if (staged !== undefined) return staged ?? undefined;
    return this.state.vars.get(id);
  }

  private idForName(name: string): string | undefined {
    const staged = this.names?.get(name);
    if (staged !== undefined) return staged ?? undefined;
    return this.state.byName.get(name);
  }

  /**
   * The variable's history as an array this transaction owns and may change
   * in place: copied on first write, since committed arrays are shared with
   * every view that read them.
   */
  private ownHistory(id: string): HistoryRecord[] {
    const staged = this.historyOverlay?.get(id);
    if (staged !== undefined && staged !== null) return staged;
    const committed = staged === null ? undefined : this.state.history?.get(id);
    const own = committed === undefined ? [] : [...committed];
    this.stageHistory(id, own, committed === undefined ? 0 : committedBytes(committed));
    return own;
  }

  private getData(key: string): DataEntry | undefined {
    return this.dataOverlay?.has(key) ? this.dataOverlay.get(key) : this.state.data?.get(key);
  }

  get session(): SessionRecord {
    return this.state.record;
  }

  variable(identifier: string): VariableRecord | undefined {
    const id = isVariableId(identifier) ? identifier : this.idForName(identifier);
    return id === undefined ? undefined : this.getVar(id);
  }

  *variables(): IterableIterator<VariableRecord> {
    const vars = this.vars;
    for (const [id, record] of this.state.vars) {
      if (!vars?.has(id)) yield record;
    }
    for (const record of vars?.values() ?? []) if (record !== null) yield record;
  }

  get variableCount(): number {
    let count = this.state.vars.size;
    for (const [id, record] of this.vars ?? []) {
      const before = this.state.vars.has(id);
      if (record === null && before) count--;
      if (record !== null && !before) count++;
    }
    return count;
  }

  history(variableId: string): readonly HistoryRecord[] {
    const staged = this.historyOverlay?.get(variableId);
    if (staged !== undefined) return staged ?? [];
    return this.state.history?.get(variableId) ?? [];
  }

  /** What the entries of `history(variableId)` count for together. */
  historyBytes(variableId: string): number {
    const staged = this.historyOverlay?.get(variableId);
    if (staged !== undefined) return this.historySums?.get(variableId) ?? 0;
    const committed = this.state.history?.get(variableId);
    return committed === undefined ? 0 : committedBytes(committed);
  }

  dependencies(): readonly DependencyEdge[] {
    return this.deps ?? this.state.deps;
  }

  data(key: string): JsonValue | undefined {
    return this.getData(key)?.value;
  }

  dataBytes(key: string): number {
    return this.getData(key)?.bytes ?? 0;
  }

  *dataKeys(): IterableIterator<string> {
    const data = this.dataOverlay;
    for (const key of this.state.data?.keys() ?? []) if (!data?.has(key)) yield key;
    for (const [key, entry] of data ?? []) if (entry !== undefined) yield key;
  }

  get bytes(): number {
    return this.state.bytes + this.staging;
  }

  putVariable(record: VariableRecord): void {
    const previous = this.getVar(record.id);
    if (previous !== undefined && previous.name !== record.name)
      this.stageName(previous.name, null);
    this.stageVar(record.id, record);
    this.stageName(record.name, record.id);
    this.staging += record.bytes - (previous?.bytes ?? 0);
  }

  deleteVariable(id: string): void {
    const previous = this.getVar(id);
    if (previous === undefined) return;
    this.staging -= previous.bytes;
    for (const entry of this.history(id)) this.staging -= entry.bytes;
    this.stageVar(id, null);
    this.stageName(previous.name, null);
    this.stageHistory(id, null, 0);
    this.deps = (this.deps ?? this.state.deps).filter((e) => e.from !== id && e.to !== id);
  }

  appendHistory(variableId: string, entry: HistoryRecord): void {
    this.ownHistory(variableId).push(entry);
    this.historySums?.set(variableId, (this.historySums.get(variableId) ?? 0) + entry.bytes);
    this.staging += entry.bytes;
  }

  dropHistory(variableId: string, count: number): void {
    if (count <= 0) return;
    const staged = this.historyOverlay?.get(variableId);
    let less = 0;
    if (staged !== undefined && staged !== null) {
      for (const entry of staged.splice(0, count)) less += entry.bytes;
      this.historySums?.set(variableId, (this.historySums.get(variableId) ?? 0) - less);
    } else {
      const committed = staged === null ? undefined : this.state.history?.get(variableId);
      if (committed === undefined || committed.length === 0) return;
      // Not owned yet: the kept part is this transaction's copy (one copy of
      // the array, not a copy and then a shift of it).
      const dropped = Math.min(count, committed.length);
      for (let i = 0; i < dropped; i++) less += (committed[i] as HistoryRecord).bytes;
      this.stageHistory(variableId, committed.slice(dropped), committedBytes(committed) - less);
    }
    this.staging -= less;
  }

  addDependency(edge: DependencyEdge): void {
    this.deps = [...(this.deps ?? this.state.deps), edge];
  }

  setData(key: string, value: JsonValue | undefined, size: number): void {
    this.staging -= this.getData(key)?.bytes ?? 0;
    this.dataOverlay ??= new Map();
    if (value === undefined) this.dataOverlay.set(key, undefined);
    else {
      this.dataOverlay.set(key, { value, bytes: size });
      this.staging += size;
    }
  }

  nextVariableSeq(): number {
    return this.seq++;
  }

  emit(change: VariableChange): void {
    this.changes.push(change);
  }

  /** Applies the staged writes; returns the change in variable count. */
  commit(): number {
    const state = this.state;
    let delta = 0;
    for (const [id, record] of this.vars ?? []) {
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
    for (const [name, id] of this.names ?? []) {
      if (id === null) state.byName.delete(name);
      else state.byName.set(name, id);
    }
    for (const [id, entries] of this.historyOverlay ?? []) {
      if (entries === null || entries.length === 0) state.history?.delete(id);
      else {
        state.history ??= new Map();
        state.history.set(id, entries);
        // From here on the array is never changed: its sum holds.
        const sum = this.historySums?.get(id);
        if (sum !== undefined) committedSums.set(entries, sum);
      }
    }
    for (const [key, entry] of this.dataOverlay ?? []) {
      if (entry === undefined) state.data?.delete(key);
      else {
        state.data ??= new Map();
        state.data.set(key, entry);
      }
    }
    state.bytes += this.staging;
    if (this.deps !== undefined) state.deps = this.deps;
    if (this.seq !== state.record.nextVariableSeq) {
      state.record = { ...state.record, nextVariableSeq: this.seq };
    }
    return delta;
  }

  /** What the transaction staged, for stores that write it elsewhere first. */
  staged() {
    return {
      vars: this.vars,
      history: this.historyOverlay,
      data: this.dataOverlay,
      deps: this.deps,
      seq: this.seq,
      bytes: this.staging,
    };
  }
}
