/**
 * A session's state to and from what the scripts take and return: the
 * writes one or more transactions staged, as the payload of the create and
 * commit scripts, and the state the load script read.
 */
import { emptySessionState, type SessionState, type StagingTransaction } from "../session-state.js";
import {
  decodeData,
  decodeDependencies,
  decodeHistory,
  decodeRecord,
  decodeSession,
  encodeData,
  encodeDependencies,
  encodeHistory,
  encodeRecord,
  encodeSession,
} from "./codec.js";
import type { StoredSession } from "./scripts.js";

/** What one or more transactions staged, as the scripts write it. */
export interface Writes {
  readonly vset: Map<string, string>;
  readonly vdel: Set<string>;
  readonly hset: Map<string, string>;
  readonly hdel: Set<string>;
  readonly dset: Map<string, string>;
  readonly ddel: Set<string>;
  /** Change in the number of variables. */
  nvar: number;
  deps: string | undefined;
  rec: string | undefined;
  /** The session's bytes once written. */
  bytes: number;
}

/** Nothing staged yet against `state`. */
export function noWrites(state: SessionState): Writes {
  return {
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
  };
}

/**
 * Adds what `tx` staged against `state` (before it is committed there) to
 * `w`; a later transaction's writes replace an earlier one's. With
 * `withRecord`, the session record is written even when unchanged (a new
 * session's).
 */
export function stage(
  w: Writes,
  tx: StagingTransaction,
  state: SessionState,
  withRecord: boolean,
): void {
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
}

/** Whether `w` writes nothing. */
export function isEmpty(w: Writes): boolean {
  return (
    w.vset.size + w.vdel.size + w.hset.size + w.hdel.size + w.dset.size + w.ddel.size === 0 &&
    w.deps === undefined &&
    w.rec === undefined
  );
}

/**
 * The scripts' `payload`: `w` as JSON, with the sliding TTL for a new
 * session. Empty objects must reach Lua as objects: cjson reads [] and {}
 * alike.
 */
export function payloadOf(w: Writes, ttlMs?: number): string {
  return JSON.stringify({
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
}

/** The state of a session as the load script read it, expiring at `expiresAt`. */
export function stateOf(stored: StoredSession, expiresAt: number): SessionState {
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

/** A copy of a state that transactions can be committed to without touching the original. */
export function cloneState(state: SessionState): SessionState {
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
