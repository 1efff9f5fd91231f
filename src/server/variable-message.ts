import { create } from "@bufbuild/protobuf";
import { type Timestamp, timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  type OptimizationStatus,
  OptimizationStatusSchema,
  type Variable,
  VariableSchema,
} from "../gen/snakepit/bridge/bridge_pb.js";
import { encodeValue, type VariableType, type VariableValue } from "../values/index.js";
import type { VariableRecord } from "./store/session-store.js";

/**
 * Records are immutable, so the message for a record is built once and
 * shared by every read and every watcher until the next write replaces the
 * record. This is what keeps GetVariable close to a bare echo handler.
 */
const full = new WeakMap<VariableRecord, Variable>();
const withoutMetadata = new WeakMap<VariableRecord, Variable>();

/** The wire form of a stored variable. */
export function toVariableMessage(record: VariableRecord, includeMetadata = true): Variable {
  const cache = includeMetadata ? full : withoutMetadata;
  let message = cache.get(record);
  if (message === undefined) {
    message = buildVariableMessage(record, includeMetadata);
    cache.set(record, message);
  }
  return message;
}

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
    binaryValue: encoded.binary ?? new Uint8Array(0),
  });
}

function optimizationStatus(record: VariableRecord): OptimizationStatus {
  const lock = record.optimization;
  if (lock === undefined) return create(OptimizationStatusSchema, { optimizing: false });
  return create(OptimizationStatusSchema, {
    optimizing: true,
    optimizerId: lock.optimizerId,
    startedAt: timestamp(lock.startedAt),
  });
}

/** Encodes a value the way a record of this type would carry it. */
export function encodeRecordValue(type: VariableType, value: VariableValue, binary: boolean) {
  return encodeValue(type, value, { binary });
}

/** Epoch milliseconds to a protobuf Timestamp. */
export function timestamp(ms: number): Timestamp {
  return timestampFromMs(ms);
}
