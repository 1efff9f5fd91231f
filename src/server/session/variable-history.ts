import { Code, ConnectError } from "@connectrpc/connect";
import { formatBytes } from "../common/message-text.js";
import { type Limits, metadataBytes } from "../limits/limits.js";
import { StagingTransaction } from "../store/session-state.js";
import type {
  HistoryRecord,
  SessionTransaction,
  SessionView,
  VariableRecord,
} from "../store/session-store.js";

/**
 * A variable's history and what versions cost: the session byte budget
 * counts every retained version, so a write decides here how much of the
 * history it may keep.
 */

/** RESOURCE_EXHAUSTED for a session that would go over its byte budget. */
export function overBudget(limits: Limits, total: number, subject: string): ConnectError {
  return new ConnectError(
    `session would hold ${formatBytes(total)} with ${subject}; the limit is ${formatBytes(limits.maxSessionBytes)} (--max-session-bytes)`,
    Code.ResourceExhausted,
  );
}

/**
 * How a write of `next` over `current` treats the history: how many of
 * the oldest entries go, and whether the replaced version is kept. History
 * stays a run of consecutive versions ending at the replaced one, within
 * historyLimit entries and historyMaxBytes; when the session budget would
 * be exceeded, more of this variable's history goes, oldest first. Throws
 * when the value does not fit even with no history at all.
 */
export function planHistory(
  limits: Limits,
  tx: SessionTransaction,
  current: VariableRecord,
  next: VariableRecord,
  replaced: HistoryRecord,
): { drop: number; keepReplaced: boolean } {
  const past = tx.history(current.id);
  const pastBytes = historyBytes(tx, current.id, past);
  // The current version counts as one of historyLimit; the rest are past.
  const maxPast = Math.max(0, limits.historyLimit - 1);
  let keepReplaced = maxPast > 0 && replaced.bytes <= limits.historyMaxBytes;
  let drop = keepReplaced ? Math.max(0, past.length + 1 - maxPast) : past.length;
  // What stays of the past: all of it but the `drop` oldest (usually one).
  let dropped = 0;
  for (let i = 0; i < drop; i++) dropped += (past[i] as HistoryRecord).bytes;
  let kept = (keepReplaced ? replaced.bytes : 0) + pastBytes - dropped;
  const others = tx.bytes - current.bytes - pastBytes;
  const fits = () =>
    kept <= limits.historyMaxBytes && others + next.bytes + kept <= limits.maxSessionBytes;
  while (drop < past.length && !fits()) kept -= (past[drop++] as HistoryRecord).bytes;
  if (keepReplaced && !fits()) {
    keepReplaced = false;
    kept = 0;
  }
  const total = others + next.bytes + kept;
  if (total > limits.maxSessionBytes) {
    throw overBudget(limits, total, `variable '${current.name}'`);
  }
  return { drop, keepReplaced };
}

/**
 * What `past` (the variable's history in `tx`) counts for together: known
 * without a pass over it in the stores' own transactions.
 */
function historyBytes(
  tx: SessionTransaction,
  variableId: string,
  past: readonly HistoryRecord[],
): number {
  if (tx instanceof StagingTransaction) return tx.historyBytes(variableId);
  let sum = 0;
  for (const e of past) sum += e.bytes;
  return sum;
}

/**
 * What a version counts for in the session budget: its encoded value, the
 * variable's metadata and the metadata of the write that made it.
 */
export function recordBytes(
  valueBytes: number,
  metadata: Readonly<Record<string, string>>,
  changeMetadata: Readonly<Record<string, string>>,
): number {
  return valueBytes + metadataBytes(metadata) + metadataBytes(changeMetadata);
}

/**
 * The history entry of a record's current version. It keeps the write's
 * metadata but not the variable's, and counts for that much less.
 */
export function currentEntry(record: VariableRecord): HistoryRecord {
  return {
    version: record.version,
    value: record.value,
    timestamp: record.updatedAt,
    changedBy: record.changedBy,
    metadata: record.changeMetadata,
    bytes: record.bytes - metadataBytes(record.metadata),
  };
}

/** A variable's retained versions, oldest first, the current one last. */
export function historyOf(view: SessionView, record: VariableRecord): HistoryRecord[] {
  return [...view.history(record.id), currentEntry(record)];
}
