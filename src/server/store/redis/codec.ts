/**
 * How session state is written in Redis: JSON, with a variable's value kept
 * as a JSON text of its own in which NaN and ±Infinity (which JSON cannot
 * carry) are written as `{"$num":"NaN"}`. Only values are decoded that way,
 * so no other field (metadata, tool data) can be mistaken for a number.
 */
import type { JsonValue, VariableType, VariableValue } from "../../../values/index.js";
import type {
  DependencyEdge,
  HistoryRecord,
  SessionRecord,
  VariableChange,
  VariableRecord,
} from "../session-store.js";

const special = (_key: string, v: unknown): unknown =>
  typeof v === "number" && !Number.isFinite(v) ? { $num: String(v) } : v;

const revive = (_key: string, v: unknown): unknown => {
  if (v !== null && typeof v === "object" && !Array.isArray(v)) {
    const num = (v as { $num?: unknown }).$num;
    if (typeof num === "string" && Object.keys(v).length === 1) return Number(num);
  }
  return v;
};

function encodeValue(value: VariableValue): string {
  return JSON.stringify(value, special);
}

function decodeValue(text: string): VariableValue {
  return JSON.parse(text, revive) as VariableValue;
}

/** A variable record as stored. */
export function encodeRecord(record: VariableRecord): string {
  return JSON.stringify({ ...record, value: encodeValue(record.value) });
}

export function decodeRecord(text: string): VariableRecord {
  const raw = JSON.parse(text) as VariableRecord & { value: string };
  return { ...raw, value: decodeValue(raw.value) };
}

export function encodeHistory(entries: readonly HistoryRecord[]): string {
  return JSON.stringify(entries.map((e) => ({ ...e, value: encodeValue(e.value) })));
}

export function decodeHistory(text: string): HistoryRecord[] {
  const raw = JSON.parse(text) as (HistoryRecord & { value: string })[];
  return raw.map((e) => ({ ...e, value: decodeValue(e.value) }));
}

export function encodeData(value: JsonValue, bytes: number): string {
  return JSON.stringify({ value, bytes });
}

export function decodeData(text: string): { value: JsonValue; bytes: number } {
  return JSON.parse(text) as { value: JsonValue; bytes: number };
}

export function encodeSession(record: SessionRecord): string {
  return JSON.stringify(record);
}

export function decodeSession(text: string): SessionRecord {
  return JSON.parse(text) as SessionRecord;
}

export function encodeDependencies(edges: readonly DependencyEdge[]): string {
  return JSON.stringify(edges);
}

export function decodeDependencies(text: string): DependencyEdge[] {
  return text === "" ? [] : (JSON.parse(text) as DependencyEdge[]);
}

/**
 * One change as the change feed carries it: which variable, which version,
 * what kind of change; never the value. A replica that needs the value
 * reads the variable from the session's own keys, so a large value is held
 * once in Redis however long the feed is.
 */
export interface FeedChange {
  readonly kind: VariableChange["kind"];
  /** The variable's id. */
  readonly id: string;
  /** The version the change made (a lock does not change it). */
  readonly version: number;
  readonly timestamp: number;
  /**
   * Who made the change and its metadata, for the kinds whose record does
   * not say (locks and deletes); a write's and a registration's are the
   * record's `changedBy` and `changeMetadata` / `metadata`. Left out when
   * larger than {@link FEED_DETAIL_MAX_BYTES}.
   */
  readonly source?: string;
  readonly metadata?: Readonly<Record<string, string>>;
  /**
   * A deleted variable's last record without its value, metadata and
   * constraints (Redis no longer has it; watchers act on its id and name).
   */
  readonly deleted?: Omit<VariableRecord, "value">;
}

/**
 * The most a change's source and metadata take in the feed. A lock's
 * optimizer id and configuration are sized only by the request; beyond
 * this, other replicas' watchers get the lock holder from the record and
 * no metadata, so that no caller can make feed entries large.
 */
export const FEED_DETAIL_MAX_BYTES = 4096;

/** The changes of one commit, as the change feed carries them (without values). */
export function encodeFeedChanges(changes: readonly VariableChange[]): string {
  return JSON.stringify(
    changes.map((c): FeedChange => {
      const { id, version } = c.variable;
      const head = { kind: c.kind, id, version, timestamp: c.timestamp };
      if (c.kind === "value_changed" || c.kind === "registered") return head;
      const detail = { source: c.source, metadata: c.metadata };
      const fits = Buffer.byteLength(JSON.stringify(detail)) <= FEED_DETAIL_MAX_BYTES;
      if (c.kind !== "deleted") return fits ? { ...head, ...detail } : head;
      const { value: _value, optimization: _lock, ...last } = c.variable;
      const deleted = {
        ...last,
        metadata: {},
        constraintsJson: "{}",
        accessControlJson: "",
        changeMetadata: {},
      };
      return fits ? { ...head, ...detail, deleted } : { ...head, deleted };
    }),
  );
}

export function decodeFeedChanges(text: string): FeedChange[] {
  return JSON.parse(text) as FeedChange[];
}

/**
 * The record a watcher on another replica gets for a deleted variable:
 * its last record with an empty value of its type. The feed carries no
 * value and the session's keys no longer hold one; watchers act on the id
 * and name of a deletion, not on its value.
 */
export function deletedRecord(last: Omit<VariableRecord, "value">): VariableRecord {
  return { ...last, value: emptyValue(last.type), binary: false };
}

function emptyValue(type: VariableType): VariableValue {
  switch (type) {
    case "float":
    case "integer":
      return 0;
    case "boolean":
      return false;
    case "embedding":
      return [];
    case "tensor":
      return { shape: [0], data: [] };
    default:
      return "";
  }
}
