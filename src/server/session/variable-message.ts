import { create } from "@bufbuild/protobuf";
import { type Timestamp, timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  type OptimizationStatus,
  OptimizationStatusSchema,
  type Variable,
  VariableSchema,
} from "../../gen/snakepit/bridge/bridge_pb.js";
import { encodeValue } from "../../values/index.js";
import type { VariableRecord } from "../store/session-store.js";
import type { RegisterInput } from "./variable-ops.js";

/**
 * Records are immutable, so the message built for a record can be shared by
 * every read until a write replaces the record. Only reads use this cache,
 * and only the most recently read records stay in it: building a message
 * costs microseconds against a call's hundreds, a message per variable of
 * every session would double what a variable costs, and messages built for
 * writes (sent once) would only churn it.
 */
const CACHED_MESSAGES = 1024;
const full = new Map<VariableRecord, Variable>();
const withoutMetadata = new Map<VariableRecord, Variable>();

/** The wire form of a stored variable, for a read: cached while hot. */
export function readVariableMessage(record: VariableRecord, includeMetadata = true): Variable {
  const cache = includeMetadata ? full : withoutMetadata;
  let message = cache.get(record);
  if (message !== undefined) {
    // Most recently used goes last: eviction takes the first.
    cache.delete(record);
  } else {
    message = buildVariableMessage(record, includeMetadata);
    if (cache.size >= CACHED_MESSAGES) {
      const oldest = cache.keys().next();
      if (oldest.done !== true) cache.delete(oldest.value);
    }
  }
  cache.set(record, message);
  return message;
}

/** The wire form of a stored variable, built fresh (write responses, updates). */
export function toVariableMessage(record: VariableRecord, includeMetadata = true): Variable {
  return buildVariableMessage(record, includeMetadata);
}

// Shared by every message that has no binary value or no lock; messages
// are never mutated after they are built.
const NO_BYTES = new Uint8Array(0);
const NOT_OPTIMIZING = create(OptimizationStatusSchema, { optimizing: false });

function buildVariableMessage(record: VariableRecord, includeMetadata: boolean): Variable {
  const encoded = encodeValue(record.type, record.value, { binary: record.binary });
  return create(VariableSchema, {
    id: record.id,
    name: record.name,
    type: record.type,
    value: encoded.any,
    constraintsJson: record.constraintsJson,
    metadata: includeMetadata ? { ...record.metadata } : {},
    source: record.source,
    lastUpdatedAt: timestamp(record.updatedAt),
    version: record.version,
    accessControlJson: record.accessControlJson,
    optimizationStatus: optimizationStatus(record),
    binaryValue: encoded.binary ?? NO_BYTES,
  });
}

function optimizationStatus(record: VariableRecord): OptimizationStatus {
  const lock = record.optimization;
  if (lock === undefined) return NOT_OPTIMIZING;
  return create(OptimizationStatusSchema, {
    optimizing: true,
    optimizerId: lock.optimizerId,
    startedAt: timestamp(lock.startedAt),
  });
}

/**
 * A variable to register, as RegisterVariable, RegisterVariables and
 * InitializeSession carry it (VariableDeclaration and RegisterVariableRequest
 * have these fields alike).
 */
export function registerInputOf(declaration: {
  readonly name: string;
  readonly type: string;
  readonly initialValue?: RegisterInput["value"];
  readonly initialBinaryValue: Uint8Array;
  readonly constraintsJson: string;
  readonly metadata: Readonly<Record<string, string>>;
}): RegisterInput {
  return {
    name: declaration.name,
    type: declaration.type,
    value: declaration.initialValue,
    binary: declaration.initialBinaryValue,
    constraintsJson: declaration.constraintsJson,
    metadata: declaration.metadata,
  };
}

/** Epoch milliseconds to a protobuf Timestamp. */
export function timestamp(ms: number): Timestamp {
  return timestampFromMs(ms);
}
