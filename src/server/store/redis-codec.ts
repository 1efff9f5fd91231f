/**
 * How session state is written in Redis: JSON, with a variable's value kept
 * as a JSON text of its own in which NaN and ±Infinity (which JSON cannot
 * carry) are written as `{"$num":"NaN"}`. Only values are decoded that way,
 * so no other field (metadata, tool data) can be mistaken for a number.
 */
import type { JsonValue, VariableValue } from "../../values/index.js";
import type {
  DependencyEdge,
  HistoryEntry,
  SessionRecord,
  VariableChange,
  VariableRecord,
} from "./session-store.js";

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

export function encodeHistory(entries: readonly HistoryEntry[]): string {
  return JSON.stringify(entries.map((e) => ({ ...e, value: encodeValue(e.value) })));
}

export function decodeHistory(text: string): HistoryEntry[] {
  const raw = JSON.parse(text) as (HistoryEntry & { value: string })[];
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

/** The changes of one commit, as the change feed carries them. */
export function encodeChanges(changes: readonly VariableChange[]): string {
  return JSON.stringify(changes.map((c) => ({ ...c, variable: encodeRecord(c.variable) })));
}

export function decodeChanges(text: string): VariableChange[] {
  const raw = JSON.parse(text) as (VariableChange & { variable: string })[];
  return raw.map((c) => ({ ...c, variable: decodeRecord(c.variable) }));
}
