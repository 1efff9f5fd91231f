/**
 * How a write's value is checked and encoded, the same for a write sent at
 * once (variable-writes.ts) and one kept in the outbox (outbox-writes.ts).
 * @module
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Any } from "@bufbuild/protobuf/wkt";
import type { SetVariableRequestSchema } from "../gen/snakepit/bridge/bridge_pb.js";
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

const NO_BYTES = new Uint8Array(0);

/** One write as SetVariable sends it; `expectedVersion` makes it a compare-and-swap. */
export interface SetRequestParts {
  readonly sessionId: string;
  readonly identifier: string;
  readonly any: Any;
  readonly binary: Uint8Array | undefined;
  readonly metadata: Readonly<Record<string, string>>;
  readonly expectedVersion: number | undefined;
  readonly idempotencyKey: string;
}

/** The SetVariable request of a write (version 0 expected travels as its own flag). */
export function setVariableRequest(
  parts: SetRequestParts,
): MessageInitShape<typeof SetVariableRequestSchema> {
  const { expectedVersion } = parts;
  return {
    sessionId: parts.sessionId,
    variableIdentifier: parts.identifier,
    value: parts.any,
    binaryValue: parts.binary ?? NO_BYTES,
    metadata: parts.metadata,
    expectedVersion: expectedVersion ?? 0,
    expectVersionZero: expectedVersion === 0,
    idempotencyKey: parts.idempotencyKey,
  };
}
