import type { Any } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type Constraints,
  checkValue,
  constraintsFromJson,
  decodeValue,
  type JsonValue,
  parseVariableType,
  type VariableType,
  type VariableValue,
} from "../../values/index.js";
import { utf8Length } from "../../values/utf8-length.js";
import { valueByteSize } from "../../values/value-byte-size.js";
import { clip, formatBytes, quote } from "../common/message-text.js";
import { checkMetadata, checkVariableName, type Limits, metadataBytes } from "../limits/limits.js";
import { variableId } from "../store/ids.js";
import { IDEMPOTENCY_DATA_PREFIX } from "./idempotency.js";
// For its effect: exact pattern checks from the first request on.
import "./pattern-checks.js";
import type {
  SessionTransaction,
  SessionView,
  VariableChange,
  VariableRecord,
} from "../store/session-store.js";
import { addDependencyEdge } from "./variable-dependencies.js";
import {
  currentEntry,
  historyOf,
  overBudget,
  planHistory,
  recordBytes,
} from "./variable-history.js";

/**
 * The variable semantics, shared by every RPC that writes: validation,
 * versions, compare-and-swap, locks, history, change events, and the
 * session's byte budget (which tool data shares). Each function runs inside
 * a store transaction and throws a ConnectError before writing anything, so
 * a failed call changes nothing. What a version costs and how much history
 * a write keeps is variable-history.ts'; the dependency graph is
 * variable-dependencies.ts'; calls on many variables at once (batches,
 * listings) build on these in variable-batch.ts.
 */
export interface VariableOps {
  register(tx: SessionTransaction, input: RegisterInput): VariableRecord;
  /** Validates a write without applying it. */
  prepareWrite(view: SessionView, input: WriteInput): PreparedWrite;
  /**
   * Applies a prepared write: new version, history entry, change event.
   * Checks the session budget against `tx` as it stands (earlier writes of a
   * batch included) and fails with RESOURCE_EXHAUSTED, changing nothing,
   * when the value does not fit even without the variable's history.
   */
  applyWrite(tx: SessionTransaction, write: PreparedWrite): VariableRecord;
  find(view: SessionView, identifier: string): VariableRecord;
  remove(tx: SessionTransaction, identifier: string, source: string): VariableRecord;
  lock(
    tx: SessionTransaction,
    identifier: string,
    optimizerId: string,
    config?: Readonly<Record<string, string>>,
  ): VariableRecord;
  unlock(
    tx: SessionTransaction,
    identifier: string,
    optimizerId: string,
    force: boolean,
  ): VariableRecord;
  rollback(
    tx: SessionTransaction,
    identifier: string,
    targetVersion: number,
    source: string,
  ): VariableRecord;
  addDependency(tx: SessionTransaction, from: string, to: string, type: string): void;
  /**
   * Sets (or, with undefined, removes) session data for server-side tools:
   * its JSON must fit in maxValueBytes and the session budget.
   */
  setData(tx: SessionTransaction, key: string, value: JsonValue | undefined): void;
}

/** A new variable. */
export interface RegisterInput {
  readonly name: string;
  readonly type: string;
  readonly value: Any | undefined;
  readonly binary: Uint8Array;
  readonly constraintsJson: string;
  readonly metadata: Readonly<Record<string, string>>;
}

/** A write of a new value to an existing variable. */
export interface WriteInput {
  readonly identifier: string;
  /** The value as it came over the wire, or `{ raw }` from server code. */
  readonly value: Any | undefined | { readonly raw: unknown };
  readonly binary: Uint8Array;
  readonly metadata: Readonly<Record<string, string>>;
  /** Compare-and-swap: the version the caller expects, if any. */
  readonly expectedVersion: number | undefined;
}

/** A validated write, ready to apply. */
export interface PreparedWrite {
  readonly current: VariableRecord;
  readonly value: VariableValue;
  /** Encoded size of `value`. */
  readonly valueBytes: number;
  readonly binary: boolean;
  readonly metadata: Readonly<Record<string, string>>;
  readonly source: string;
  readonly kind: "value_changed";
  readonly changeMetadata: Readonly<Record<string, string>>;
}

/** One frozen empty map for every variable without metadata. */
const NO_METADATA: Readonly<Record<string, string>> = Object.freeze({});

/** Creates the variable semantics for the given limits and clock. */
export function createVariableOps(limits: Limits, now: () => number = Date.now): VariableOps {
  const find = (view: SessionView, identifier: string): VariableRecord => {
    if (identifier === "") {
      throw new ConnectError("variable identifier is required", Code.InvalidArgument);
    }
    const record = view.variable(identifier);
    if (record === undefined) {
      throw new ConnectError(`Variable not found: ${clip(identifier)}`, Code.NotFound);
    }
    return record;
  };

  const checkUnlocked = (record: VariableRecord, writer: string | undefined, action: string) => {
    const lock = record.optimization;
    if (lock !== undefined && lock.optimizerId !== writer) {
      throw new ConnectError(
        `variable '${record.name}' is locked by optimizer '${lock.optimizerId}': cannot ${action} it until the optimization stops`,
        Code.FailedPrecondition,
      );
    }
  };

  const decodeChecked = (
    type: VariableType,
    input: WriteInput["value"],
    binary: Uint8Array,
    constraints: Constraints,
    name: string,
  ): { value: VariableValue; bytes: number; binary: boolean } => {
    let raw: unknown;
    if (input !== undefined && "raw" in input) raw = input.raw;
    else {
      try {
        raw = decodeValue(input, binary.length > 0 ? binary : undefined).value;
      } catch (e) {
        throw ofVariable(name, e);
      }
    }
    const checked = checkValue(type, raw, constraints, name);
    if (!checked.ok) throw new ConnectError(checked.message, Code.InvalidArgument);
    const size = valueByteSize(type, checked.value);
    if (size > limits.maxValueBytes) {
      throw new ConnectError(
        `variable '${name}': value is ${size} bytes; the limit is ${limits.maxValueBytes}`,
        Code.ResourceExhausted,
      );
    }
    // The binary form is what the type URL says, not whether bytes came
    // along: decodeValue ignores a payload under a JSON type URL.
    const isBinary = input !== undefined && !("raw" in input) && input.typeUrl.endsWith(".binary");
    return { value: checked.value, bytes: size, binary: isBinary };
  };

  const emit = (
    tx: SessionTransaction,
    kind: VariableChange["kind"],
    variable: VariableRecord,
    source: string,
    metadata: Readonly<Record<string, string>>,
  ) => {
    tx.emit({ sessionId: tx.session.id, kind, variable, source, metadata, timestamp: now() });
  };

  const prepareWrite = (view: SessionView, input: WriteInput): PreparedWrite => {
    const current = find(view, input.identifier);
    const writer = input.metadata.optimizer_id;
    checkUnlocked(current, writer, "write");
    if (input.expectedVersion !== undefined && input.expectedVersion !== current.version) {
      throw new ConnectError(
        `variable '${current.name}': expected version ${input.expectedVersion} but the current version is ${current.version}`,
        Code.Aborted,
      );
    }
    const constraints = constraintsFromJson(current.type, current.constraintsJson);
    const decoded = decodeChecked(
      current.type,
      input.value,
      input.binary,
      constraints,
      current.name,
    );
    // optimizer_id says who writes (the lock holder); it belongs to this
    // write's history entry, not to the variable.
    const { optimizer_id: _writer, ...merged } = input.metadata;
    const metadata = { ...current.metadata, ...merged };
    checkMetadata(metadata, limits, `variable '${current.name}'`);
    return {
      current,
      value: decoded.value,
      valueBytes: decoded.bytes,
      binary: decoded.binary,
      metadata,
      source: writer ?? input.metadata.source ?? "client",
      kind: "value_changed",
      changeMetadata: input.metadata,
    };
  };

  const applyWrite = (tx: SessionTransaction, write: PreparedWrite): VariableRecord => {
    const t = now();
    const next: VariableRecord = {
      ...write.current,
      value: write.value,
      binary: write.binary,
      metadata: write.metadata,
      version: write.current.version + 1,
      updatedAt: t,
      changedBy: write.source,
      changeMetadata: write.changeMetadata,
      bytes: recordBytes(write.valueBytes, write.metadata, write.changeMetadata),
    };
    // The version being replaced becomes history; the current one is the
    // record itself, so a variable that is never written keeps no history.
    const replaced = currentEntry(write.current);
    const { drop, keepReplaced } = planHistory(limits, tx, write.current, next, replaced);
    tx.putVariable(next);
    tx.dropHistory(next.id, drop);
    if (keepReplaced) tx.appendHistory(next.id, replaced);
    emit(tx, write.kind, next, write.source, write.changeMetadata);
    return next;
  };

  return {
    find,
    prepareWrite,
    applyWrite,

    register(tx, input) {
      checkVariableName(input.name, limits);
      const type = parseVariableType(input.type);
      if (tx.variable(input.name) !== undefined) {
        throw new ConnectError(
          `variable '${input.name}' already exists; use SetVariable to change its value`,
          Code.AlreadyExists,
        );
      }
      if (tx.variableCount >= limits.maxVariablesPerSession) {
        throw new ConnectError(
          `session has ${tx.variableCount} variables; the limit is ${limits.maxVariablesPerSession}`,
          Code.ResourceExhausted,
        );
      }
      let constraints: Constraints;
      try {
        constraints = constraintsFromJson(type, input.constraintsJson);
      } catch (e) {
        throw ofVariable(input.name, e);
      }
      const decoded = decodeChecked(type, input.value, input.binary, constraints, input.name);
      checkMetadata(input.metadata, limits, `variable '${input.name}'`);
      const bytes = recordBytes(decoded.bytes, input.metadata, NO_METADATA);
      if (tx.bytes + bytes > limits.maxSessionBytes) {
        throw overBudget(limits, tx.bytes + bytes, `variable '${input.name}'`);
      }
      const t = now();
      const record: VariableRecord = {
        id: variableId(tx.nextVariableSeq(), input.name),
        name: input.name,
        type,
        value: decoded.value,
        binary: decoded.binary,
        constraintsJson: constraints.json,
        metadata: Object.keys(input.metadata).length === 0 ? NO_METADATA : { ...input.metadata },
        source: input.metadata.source === "python" ? 1 : 0,
        version: 0,
        updatedAt: t,
        accessControlJson: "",
        changedBy: input.metadata.source ?? "client",
        changeMetadata: NO_METADATA,
        bytes,
      };
      tx.putVariable(record);
      emit(tx, "registered", record, record.changedBy, input.metadata);
      return record;
    },

    remove(tx, identifier, source) {
      const record = find(tx, identifier);
      checkUnlocked(record, undefined, "delete");
      tx.deleteVariable(record.id);
      emit(tx, "deleted", record, source, {});
      return record;
    },

    lock(tx, identifier, optimizerId, config = {}) {
      if (optimizerId === "") {
        throw new ConnectError(
          "optimizer_id is required to start an optimization",
          Code.InvalidArgument,
        );
      }
      const record = find(tx, identifier);
      const held = record.optimization;
      if (held !== undefined) {
        if (held.optimizerId === optimizerId) return record;
        throw new ConnectError(
          `variable '${record.name}' is already being optimized by '${held.optimizerId}'`,
          Code.FailedPrecondition,
        );
      }
      const t = now();
      const next: VariableRecord = {
        ...record,
        optimization: {
          optimizerId,
          optimizationId: `opt:${record.id}:${record.version}:${t}`,
          startedAt: t,
        },
      };
      tx.putVariable(next);
      emit(tx, "optimization_started", next, optimizerId, config);
      return next;
    },

    unlock(tx, identifier, optimizerId, force) {
      const record = find(tx, identifier);
      const held = record.optimization;
      if (held === undefined) return record;
      if (!force && optimizerId !== "" && held.optimizerId !== optimizerId) {
        throw new ConnectError(
          `variable '${record.name}' is locked by optimizer '${held.optimizerId}', not '${optimizerId}'; pass force to release it anyway`,
          Code.FailedPrecondition,
        );
      }
      const { optimization: _released, ...rest } = record;
      const next: VariableRecord = rest;
      tx.putVariable(next);
      emit(tx, "optimization_stopped", next, optimizerId || held.optimizerId, {});
      return next;
    },

    rollback(tx, identifier, targetVersion, source) {
      const current = find(tx, identifier);
      // A rollback names no optimizer (`source` is only the history label):
      // no lock holder may be taken for its writer.
      checkUnlocked(current, undefined, "roll back");
      const entry = historyOf(tx, current).find((e) => e.version === targetVersion);
      if (entry === undefined) {
        throw new ConnectError(
          `variable '${current.name}': version ${targetVersion} not found in the retained history`,
          Code.NotFound,
        );
      }
      return applyWrite(tx, {
        current,
        value: entry.value,
        valueBytes: entry.bytes - metadataBytes(entry.metadata),
        binary: current.binary,
        metadata: current.metadata,
        source,
        kind: "value_changed",
        changeMetadata: { rollback_to: String(targetVersion) },
      });
    },

    addDependency(tx, from, to, type) {
      addDependencyEdge(limits, tx, find(tx, from), find(tx, to), type);
    },

    setData(tx, key, value) {
      if (key.startsWith(IDEMPOTENCY_DATA_PREFIX)) {
        throw new ConnectError(
          `session data key ${quote(key)} is reserved: keys starting with ${quote(IDEMPOTENCY_DATA_PREFIX)} hold the session's idempotency keys`,
          Code.InvalidArgument,
        );
      }
      if (value === undefined) {
        tx.setData(key, undefined, 0);
        return;
      }
      const bytes = utf8Length(JSON.stringify(value));
      if (bytes > limits.maxValueBytes) {
        throw new ConnectError(
          `session data ${quote(key)} would be ${formatBytes(bytes)} as JSON; the limit is ${formatBytes(limits.maxValueBytes)} (--max-value-bytes)`,
          Code.ResourceExhausted,
        );
      }
      const total = tx.bytes - tx.dataBytes(key) + bytes;
      if (total > limits.maxSessionBytes)
        throw overBudget(limits, total, `session data ${quote(key)}`);
      tx.setData(key, value, bytes);
    },
  };
}

/**
 * A decoding error, prefixed with the variable's name. The decoders throw
 * ConnectErrors for every problem with the input; anything else is a defect
 * of the server and passes unchanged (answered as INTERNAL, its text not
 * shown), rather than blaming the caller with the engine's message.
 */
function ofVariable(name: string, e: unknown): unknown {
  if (!(e instanceof ConnectError)) return e;
  return new ConnectError(`variable '${name}': ${e.rawMessage}`, e.code, undefined, undefined, e);
}
