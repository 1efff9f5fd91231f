import { Code, ConnectError } from "@connectrpc/connect";
import {
  type Constraints,
  constraintsFromJson,
  PATTERN_CHECK_BUDGET,
  parseVariableType,
} from "../../values/index.js";
import { formatBytes } from "../common/message-text.js";
import type { Limits } from "../limits/limits.js";
import type { BridgeCore } from "../rpc/bridge-core.js";
import { compileGlob } from "./glob.js";
import { type KeyedWrite, once, recordAt, type WriteKey } from "./idempotency.js";
// For its effect: exact pattern checks from the first request on.
import "./pattern-checks.js";
import { byName } from "../common/order.js";
import type { SessionTransaction, SessionView, VariableRecord } from "../store/session-store.js";
import type { PreparedWrite, RegisterInput, VariableOps, WriteInput } from "./variable-ops.js";

/**
 * The rules of calls that touch many variables at once: how many a call may
 * name, how large its reply may be, and the batch semantics of SetVariables
 * and RegisterVariables. The per-variable semantics are {@link VariableOps}'.
 */

/**
 * A request naming more variables than a session can hold cannot be
 * valid; refusing it up front keeps one call from costing the server
 * work (an error per name) in proportion to the request's size.
 */
export function checkBatch(limits: Limits, count: number, what: string): void {
  const max = limits.maxVariablesPerSession;
  if (count > max) {
    throw new ConnectError(
      `${what} names ${count} variables; a session holds at most ${max} (--max-variables-per-session)`,
      Code.InvalidArgument,
    );
  }
}

/**
 * Refuses a reply that would be over the reply limit before building it,
 * from the stored sizes (connect's own check on the encoded bytes stays
 * behind this one).
 */
export function checkReply(
  limits: Limits,
  records: Iterable<Pick<VariableRecord, "bytes" | "name">>,
  what: string,
): void {
  let bytes = 0;
  for (const r of records) bytes += r.bytes + 2 * r.name.length + 64;
  const max = limits.maxReplyBytes;
  if (bytes > max) {
    throw new ConnectError(
      `the reply would be about ${formatBytes(bytes)} (${what}); the limit is ${formatBytes(max)} (--max-reply-bytes): ask for fewer at once`,
      Code.ResourceExhausted,
    );
  }
}

/**
 * Most pattern work one request may cause, summed over the values it
 * writes: value length (UTF-16 units) × instructions of the pattern it is
 * checked against. Each check is bounded by PATTERN_CHECK_BUDGET, but a
 * batch checks all its values in one go on the event loop every caller
 * shares; this allows 20 checks at their own limit (at most ~0.5 s for the
 * costliest patterns found, ~15 ms typically), not 1,000.
 */
export const PATTERN_REQUEST_BUDGET = 20 * PATTERN_CHECK_BUDGET;

/** A value a request would check, with the constraints it is checked against. */
export interface PatternWork {
  readonly constraints: Constraints | undefined;
  readonly value: WriteInput["value"];
}

/**
 * Refuses a request whose values would cost more pattern work than
 * {@link PATTERN_REQUEST_BUDGET}, before any of them is decoded or checked.
 * The length is bounded from the wire form without decoding it: a string's
 * JSON text has at least as many UTF-8 bytes as the string has UTF-16 units.
 * A value longer than its pattern's own limit is refused unmatched, so it
 * counts at most that limit; `max_length` (code points) caps it likewise.
 */
export function checkPatternWork(items: Iterable<PatternWork>, what: string): void {
  let work = 0;
  for (const { constraints, value } of items) {
    const pattern = constraints?.rules.pattern;
    if (pattern === undefined || value === undefined) continue;
    let length: number;
    if ("raw" in value) length = typeof value.raw === "string" ? value.raw.length : 0;
    else length = value.value.length;
    length = Math.min(length, pattern.maxValueLength);
    const maxLength = constraints?.rules.maxLength;
    if (maxLength !== undefined) length = Math.min(length, 2 * maxLength);
    work += length * pattern.instructions;
  }
  if (work > PATTERN_REQUEST_BUDGET) {
    throw new ConnectError(
      `${what} would cost up to ${work} characters × instructions of pattern checks; a request may cost at most ${PATTERN_REQUEST_BUDGET} (20 checks at the per-value limit of ${PATTERN_CHECK_BUDGET}): send fewer or shorter patterned values per request`,
      Code.ResourceExhausted,
    );
  }
}

/**
 * The pattern work of variables to register, for {@link checkPatternWork}.
 * Constraints that do not parse count for nothing here: registering them
 * is refused with their own error before any value is checked.
 */
export function registerWork(inputs: readonly RegisterInput[]): PatternWork[] {
  const out: PatternWork[] = [];
  for (const input of inputs) {
    if (input.constraintsJson === "") continue;
    try {
      const type = parseVariableType(input.type);
      out.push({
        constraints: constraintsFromJson(type, input.constraintsJson),
        value: input.value,
      });
    } catch {
      // Deliberately not counted: register() refuses it with a precise message.
    }
  }
  return out;
}

/** The variables whose names match a glob pattern, ordered by name. */
export function listMatching(view: SessionView, pattern: string): VariableRecord[] {
  const matches = compileGlob(pattern);
  const out: VariableRecord[] = [];
  for (const record of view.variables()) if (matches(record.name)) out.push(record);
  return out.sort(byName);
}

/** GetVariables: the records found, under the identifiers asked for, and the ones missing. */
export function getMany(
  limits: Limits,
  view: SessionView,
  identifiers: readonly string[],
): { found: [string, VariableRecord][]; missing: string[] } {
  const found: [string, VariableRecord][] = [];
  const missing: string[] = [];
  for (const identifier of identifiers) {
    const record = view.variable(identifier);
    if (record === undefined) missing.push(identifier);
    else found.push([identifier, record]);
  }
  checkReply(
    limits,
    found.map(([, r]) => r),
    `${found.length} variables`,
  );
  return { found, missing };
}

/** Names of the variables under an optimization lock. */
export function lockedVariables(view: SessionView): string[] {
  return [...view.variables()].filter((r) => r.optimization !== undefined).map((r) => r.name);
}

/**
 * RegisterVariables: registers each variable in order, all or none. With
 * `ifAbsent`, a variable that exists with the same type is returned as it
 * stands (and not listed in `created`); with another type it is refused.
 */
export function registerMany(
  ops: VariableOps,
  tx: SessionTransaction,
  inputs: readonly RegisterInput[],
  ifAbsent: boolean,
): { records: VariableRecord[]; created: string[] } {
  checkPatternWork(registerWork(inputs), `RegisterVariables of ${inputs.length} variables`);
  const records: VariableRecord[] = [];
  const created: string[] = [];
  for (const input of inputs) {
    const existing = ifAbsent ? tx.variable(input.name) : undefined;
    if (existing !== undefined) {
      if (existing.type !== input.type) {
        throw new ConnectError(
          `variable '${input.name}' exists with type ${existing.type}, not ${input.type}`,
          Code.InvalidArgument,
        );
      }
      records.push(existing);
      continue;
    }
    const record = ops.register(tx, input);
    created.push(record.name);
    records.push(record);
  }
  return { records, created };
}

/** One write of a SetVariables batch, under the key the caller used. */
export type BatchWrite = Omit<WriteInput, "expectedVersion" | "metadata">;

/** The outcome of a SetVariables batch. */
export interface BatchResult {
  readonly success: boolean;
  /** Per key: why its write was refused, and the code. */
  readonly errors: Record<string, string>;
  readonly errorCodes: Record<string, number>;
  /**
   * Per key: the record its write made (empty when the batch was refused).
   * A repeated idempotency key leaves out records the session no longer
   * retains; `newVersions` still names them.
   */
  readonly written: ReadonlyMap<string, VariableRecord>;
  /** Per key: the version its write made. */
  readonly newVersions: Readonly<Record<string, number>>;
}

/** Per key: the id and version a write made, as a repeated key is answered from. */
type BatchSummary = {
  s: boolean;
  e: Record<string, string>;
  c: Record<string, number>;
  w: Record<string, [string, number]>;
};

/** How a SetVariables batch is remembered under an idempotency key. */
const batchWrite: KeyedWrite<BatchResult> = {
  summary(result): BatchSummary {
    const w: Record<string, [string, number]> = {};
    for (const [key, record] of result.written) w[key] = [record.id, record.version];
    return { s: result.success, e: result.errors, c: result.errorCodes, w };
  },
  replay(view, summary) {
    const { s, e, c, w } = summary as BatchSummary;
    const written = new Map<string, VariableRecord>();
    const newVersions: Record<string, number> = {};
    for (const [key, [id, version]] of Object.entries(w)) {
      newVersions[key] = version;
      const record = recordAt(view, id, version);
      if (record !== undefined) written.set(key, record);
    }
    return { success: s, errors: e, errorCodes: c, written, newVersions };
  },
};

/**
 * SetVariables: validates every write first, then applies them in one
 * transaction. A key naming a variable another key of the batch names too is
 * refused. Not atomic: refused keys are reported and the others written.
 * Atomic: any refusal (a validation, or the session budget while applying)
 * writes nothing and refuses the batch in-band.
 */
export async function setMany(
  core: Pick<BridgeCore, "ops" | "transact" | "now">,
  sessionId: string,
  batch: {
    readonly writes: readonly BatchWrite[];
    readonly metadata: Readonly<Record<string, string>>;
    readonly atomic: boolean;
  },
  writeKey?: WriteKey,
): Promise<BatchResult> {
  const { ops } = core;
  // The callback may run more than once (SessionStore.transact). An atomic
  // refusal is kept with the error that undid its writes, and reported only
  // when the transaction failed with that very error: one left here by a
  // run the store dropped is not what the last run decided.
  let refused:
    | {
        readonly error: ConnectError;
        readonly errors: Record<string, string>;
        readonly errorCodes: Record<string, number>;
      }
    | undefined;
  const transact = <R>(fn: (tx: SessionTransaction) => R) => core.transact(sessionId, fn);
  const response = once(transact, core.now, writeKey, batchWrite, (tx): BatchResult => {
    checkPatternWork(
      batch.writes.map((write) => {
        const current = tx.variable(write.identifier);
        return {
          constraints:
            current === undefined
              ? undefined
              : constraintsFromJson(current.type, current.constraintsJson),
          value: write.value,
        };
      }),
      `SetVariables of ${batch.writes.length} values`,
    );
    const errors: Record<string, string> = {};
    const errorCodes: Record<string, number> = {};
    const fail = (key: string, e: unknown) => {
      const error = ConnectError.from(e);
      errors[key] = error.rawMessage;
      errorCodes[key] = error.code;
      return error;
    };
    const prepared = new Map<string, PreparedWrite>();
    const seen = new Map<string, string>();
    for (const write of batch.writes) {
      const key = write.identifier;
      try {
        const next = ops.prepareWrite(tx, {
          ...write,
          metadata: batch.metadata,
          expectedVersion: undefined,
        });
        const other = seen.get(next.current.id);
        if (other !== undefined) {
          throw new ConnectError(
            `variable '${next.current.name}' is updated twice in one batch (as '${other}' and '${key}')`,
            Code.InvalidArgument,
          );
        }
        seen.set(next.current.id, key);
        prepared.set(key, next);
      } catch (e) {
        fail(key, e);
      }
    }
    if (batch.atomic && Object.keys(errors).length > 0) {
      return { success: false, errors, errorCodes, written: new Map(), newVersions: {} };
    }
    const written = new Map<string, VariableRecord>();
    for (const [key, write] of prepared) {
      try {
        written.set(key, ops.applyWrite(tx, write));
      } catch (e) {
        // Over the session budget. Atomic: throwing undoes the writes
        // applied so far, and the batch is refused in-band below.
        const error = fail(key, e);
        if (batch.atomic) {
          refused = { error, errors, errorCodes };
          throw error;
        }
      }
    }
    const newVersions: Record<string, number> = {};
    for (const [key, record] of written) newVersions[key] = record.version;
    return { success: true, errors, errorCodes, written, newVersions };
  });
  return response.catch((e: unknown) => {
    if (refused === undefined || refused.error !== e) throw e;
    const { errors, errorCodes } = refused;
    return { success: false, errors, errorCodes, written: new Map(), newVersions: {} };
  });
}
