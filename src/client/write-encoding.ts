/**
 * How a write's value is checked and encoded, the same for a write sent at
 * once (variable-writes.ts) and one kept in the outbox (outbox-writes.ts).
 * @module
 */
import type { Any } from "@bufbuild/protobuf/wkt";
import {
  encodeValue,
  inferType,
  type VariableType,
  type VariableValue,
  validateValue,
} from "../values/index.js";
import type { VariableCache } from "./variable-cache.js";

/** A value checked and encoded for a write. */
export interface PreparedWrite {
  /** The value as validated (normalized by the variable's type). */
  readonly value: VariableValue;
  readonly any: Any;
  readonly binary?: Uint8Array;
}

/**
 * Validates a write against what the cache knows of the variable, with the
 * server's rules, and encodes it for the wire. A variable the cache does
 * not hold is encoded by the value's shape; the server then validates it
 * against the variable's real type and constraints.
 */
export function prepareWrite(
  cache: VariableCache,
  identifier: string,
  value: VariableValue,
  binaryThreshold: number,
): PreparedWrite {
  const entry = cache.peek(identifier);
  if (entry !== undefined) {
    const { type, name } = entry.variable.snapshot;
    const normalized = validateValue(type, value, entry.variable.constraints, name);
    return { value: normalized, ...encodeValue(type, normalized, { binaryThreshold }) };
  }
  return { value, ...encodeValue(shapeType(value), value, { binaryThreshold }) };
}

/** The wire type a value of unknown variable type is sent as. */
function shapeType(value: VariableValue): VariableType {
  if (typeof value === "object" && value !== null && !Array.isArray(value)) return "tensor";
  if (typeof value === "string") return "string";
  return inferType(value);
}
