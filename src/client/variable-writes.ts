import type { Any } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Variable } from "../gen/snakepit/bridge/bridge_pb.js";
import {
  encodeValue,
  inferType,
  loadPatternEngine,
  parseConstraints,
  type ValueOf,
  type VariableType,
  type VariableValue,
  validateValue,
} from "../values/index.js";
import type { Emitter } from "./events.js";
import type { LocalCopy } from "./local-copy.js";
import type { OutboxWrites } from "./outbox-writes.js";
import type { PendingOverlay, PendingWrite } from "./pending-writes.js";
import type { WriteOptions } from "./schema.js";
import type { SessionContextEvents } from "./session-events.js";
import type { SessionRpc } from "./session-rpc.js";
import type { VariableReads } from "./variable-reads.js";
import type { VariableSnapshot } from "./variable-snapshot.js";
import { createWriteCoalescer, type QueuedWrite, type WriteOutcome } from "./write-coalescer.js";
import { prepareWrite, setVariableRequest } from "./write-encoding.js";
import { sentKeyedWrite, writeOutcome } from "./write-outcome.js";

/** Result of {@link VariableWrites.setMany}. */
export interface BatchResult {
  /** False only for an atomic batch that was refused as a whole. */
  readonly success: boolean;
  /** Error message per failed key. */
  readonly errors: Readonly<Record<string, string>>;
  /**
   * Error code per failed key, as a `ConnectError` would carry it (e.g.
   * `Code.InvalidArgument` for a value out of range, `Code.NotFound`).
   */
  readonly errorCodes: Readonly<Record<string, Code>>;
  /** The stored snapshot per applied key. */
  readonly variables: Readonly<Record<string, VariableSnapshot>>;
}

/** Options of a batch write. */
export interface BatchOptions {
  atomic?: boolean;
  metadata?: Readonly<Record<string, string>>;
}

/** Collects writes and sends them in one call. */
export interface BatchBuilder {
  set(identifier: string, value: VariableValue): BatchBuilder;
  commit(options?: BatchOptions): Promise<BatchResult>;
}

/** Options of a registration. */
export interface RegisterOptions {
  constraints?: Readonly<Record<string, unknown>>;
  metadata?: Readonly<Record<string, string>>;
}

/** A variable as RegisterVariable(s) takes it, validated and encoded here first. */
export interface Declaration {
  readonly name: string;
  readonly type: VariableType;
  readonly initialValue: Any;
  readonly initialBinaryValue: Uint8Array;
  readonly constraintsJson: string;
  readonly metadata: Readonly<Record<string, string>>;
}

/**
 * Loads the pattern engine before declarations that need it, so that
 * {@link declare} checks their patterns (and initial values against them)
 * here as the server would. Declarations without one never load it.
 */
export async function patternsReady(
  options: readonly { readonly constraints?: Readonly<Record<string, unknown>> }[],
): Promise<void> {
  if (options.some((o) => o.constraints?.pattern != null)) await loadPatternEngine();
}

/**
 * Validates a new variable with the server's rules and encodes it: bad
 * constraints or a bad initial value fail here, without a round trip.
 */
export function declare(
  name: string,
  type: VariableType,
  initialValue: VariableValue,
  options: RegisterOptions,
  binaryThreshold: number,
): Declaration {
  const constraints = parseConstraints(type, options.constraints ?? {});
  const value = validateValue(type, initialValue, constraints, name);
  const encoded = encodeValue(type, value, { binaryThreshold });
  return {
    name,
    type,
    initialValue: encoded.any,
    initialBinaryValue: encoded.binary ?? NO_BYTES,
    constraintsJson: constraints.json,
    metadata: options.metadata ?? {},
  };
}

/** The writes of a SessionContext: write-through, validated locally first. */
export interface VariableWrites {
  register<T extends VariableType>(
    name: string,
    type: T,
    initialValue: ValueOf<T>,
    options?: RegisterOptions,
  ): Promise<VariableSnapshot<ValueOf<T>>>;
  /**
   * Writes a variable; resolves with the stored snapshot. Validated locally
   * first; shown as pending (see `peek`) until answered. With an `outbox`,
   * the write is stored first and this resolves when the server applied
   * it, however long the bridge is unreachable (see `enqueue`).
   */
  set(identifier: string, value: VariableValue, options?: WriteOptions): Promise<VariableSnapshot>;
  /**
   * Sets a variable, registering it with an inferred type if it does not
   * exist: the original's `ctx["x"] = v`. Needs `autoRegister: true`; emits
   * "registered" when it registers.
   */
  assign(name: string, value: VariableValue): Promise<VariableSnapshot>;
  delete(identifier: string): Promise<void>;
  /** Many writes in one call; atomic: all or nothing. */
  setMany(
    updates: Readonly<Record<string, VariableValue>>,
    options?: BatchOptions,
  ): Promise<BatchResult>;
  batch(): BatchBuilder;
  /** Writes the value of `version` as a new version. */
  rollback(identifier: string, version: number): Promise<VariableSnapshot>;
}

/** What the writes need besides the session and the local copy. */
export interface WriteParts {
  readonly reads: VariableReads;
  readonly events: Emitter<SessionContextEvents>;
  readonly binaryThreshold: number;
  readonly autoRegister: boolean;
  /** Where a write shows as pending until it is answered. */
  readonly overlay: PendingOverlay;
  /** With an outbox, `set` goes through it (see outbox-writes.ts). */
  readonly outbox: OutboxWrites | undefined;
  readonly now: () => number;
}

/** Creates the writes. */
export function createVariableWrites(
  rpc: SessionRpc,
  local: LocalCopy,
  parts: WriteParts,
): VariableWrites {
  const { client, sessionId, call } = rpc;
  const { cache, accept } = local;
  const { reads, binaryThreshold, overlay } = parts;

  const prepare = (identifier: string, value: VariableValue) =>
    prepareWrite(cache, identifier, value, binaryThreshold);

  const sendOne = async (
    w: QueuedWrite,
    expectedVersion?: number,
  ): Promise<Variable | undefined> => {
    const what = () =>
      expectedVersion === undefined
        ? `set '${w.identifier}'`
        : `set '${w.identifier}' at expected version ${expectedVersion}`;
    const res = await sentKeyedWrite(what, call, (idempotencyKey, options) =>
      client.setVariable(
        setVariableRequest({
          sessionId,
          identifier: w.identifier,
          any: w.any,
          binary: w.binary,
          metadata: w.metadata,
          expectedVersion,
          idempotencyKey,
        }),
        options,
      ),
    );
    return res.variable;
  };

  // Concurrent plain writes share calls (see write-coalescer.ts); a
  // compare-and-swap goes alone, since a batch has no per-key expectation.
  const coalesced = createWriteCoalescer({
    one: (w) => sendOne(w),
    async many(writes) {
      const updates: Record<string, Any> = {};
      const binaryUpdates: Record<string, Uint8Array> = {};
      for (const w of writes) {
        updates[w.identifier] = w.any;
        if (w.binary !== undefined) binaryUpdates[w.identifier] = w.binary;
      }
      // Each call of a group commit has its own key.
      const res = await sentKeyedWrite(
        () => `set ${writes.map((w) => `'${w.identifier}'`).join(", ")}`,
        call,
        (idempotencyKey, options) =>
          client.setVariables(
            {
              sessionId,
              updates,
              binaryUpdates,
              metadata: writes[0]?.metadata ?? {},
              atomic: false,
              idempotencyKey,
            },
            options,
          ),
      );
      const outcomes = new Map<QueuedWrite, WriteOutcome>();
      for (const w of writes) {
        const message = res.errors[w.identifier];
        outcomes.set(
          w,
          message === undefined
            ? { variable: res.variables[w.identifier] }
            : { error: new ConnectError(message, res.errorCodes[w.identifier] ?? Code.Unknown) },
        );
      }
      return outcomes;
    },
  });

  let made = 0;

  const set = async (identifier: string, value: VariableValue, write: WriteOptions = {}) => {
    if (parts.outbox !== undefined) return parts.outbox.enqueue(identifier, value, write).committed;
    const encoded = prepare(identifier, value);
    const metadata = { ...write.metadata };
    if (write.optimizerId !== undefined) metadata.optimizer_id = write.optimizerId;
    const known = cache.peek(identifier)?.variable.snapshot;
    const queued: QueuedWrite = {
      identifier,
      variableKey: known?.id ?? identifier,
      any: encoded.any,
      binary: encoded.binary,
      metadata,
    };
    // Shown as pending until answered (peek(name, { pending: true })).
    const pending: PendingWrite = {
      key: `direct:${++made}`,
      name: known?.name ?? identifier,
      value: encoded.value,
      expectedVersion: write.expectedVersion,
      createdAt: parts.now(),
      queued: false,
    };
    overlay.add(pending);
    let stored: Variable | undefined;
    try {
      stored =
        write.expectedVersion === undefined
          ? await coalesced(queued)
          : await sendOne(queued, write.expectedVersion);
    } catch (error) {
      overlay.settle(pending.key);
      if (writeOutcome(error) === "refused") {
        const refusal = ConnectError.from(error);
        parts.events.emit("refused", {
          name: pending.name,
          write: pending,
          error: refusal,
          current: undefined,
        });
      } else cache.invalidate(identifier);
      throw error;
    }
    if (stored === undefined) {
      overlay.settle(pending.key);
      cache.invalidate(identifier);
      return reads.getVariable(identifier);
    }
    // The confirmed value first, then the pending one goes: no moment shows the old value.
    const snapshot = local.acceptWritten(stored);
    overlay.settle(pending.key);
    return snapshot;
  };

  const setMany = async (
    updates: Readonly<Record<string, VariableValue>>,
    batch: BatchOptions = {},
  ): Promise<BatchResult> => {
    const errors: Record<string, string> = {};
    const errorCodes: Record<string, Code> = {};
    const wire: Record<string, Any> = {};
    const binary: Record<string, Uint8Array> = {};
    for (const [key, value] of Object.entries(updates)) {
      try {
        const encoded = prepare(key, value);
        wire[key] = encoded.any;
        if (encoded.binary !== undefined) binary[key] = encoded.binary;
      } catch (e) {
        const error = ConnectError.from(e);
        errors[key] = error.rawMessage;
        errorCodes[key] = error.code;
      }
    }
    const failed = Object.keys(errors).length > 0;
    // An atomic batch that fails locally would fail on the server too.
    if ((batch.atomic === true && failed) || Object.keys(wire).length === 0) {
      return { success: batch.atomic !== true || !failed, errors, errorCodes, variables: {} };
    }
    const res = await sentKeyedWrite(
      () =>
        `setMany of ${Object.keys(wire)
          .map((k) => `'${k}'`)
          .join(", ")}`,
      call,
      (idempotencyKey, options) =>
        client.setVariables(
          {
            sessionId,
            updates: wire,
            binaryUpdates: binary,
            atomic: batch.atomic === true,
            metadata: batch.metadata ?? {},
            idempotencyKey,
          },
          options,
        ),
    );
    const variables: Record<string, VariableSnapshot> = {};
    for (const [key, message] of Object.entries(res.variables))
      variables[key] = accept(message, "local");
    if (Object.keys(res.variables).length === 0) {
      for (const key of Object.keys(res.newVersions)) cache.invalidate(key);
    }
    for (const key of Object.keys(res.errors)) {
      errorCodes[key] = (res.errorCodes[key] as Code | undefined) ?? Code.Unknown;
    }
    return { success: res.success, errors: { ...errors, ...res.errors }, errorCodes, variables };
  };

  const register: VariableWrites["register"] = async (name, type, initialValue, extra = {}) => {
    await patternsReady([extra]);
    const declaration = declare(name, type, initialValue, extra, binaryThreshold);
    const res = await sentKeyedWrite(
      () => `register '${name}'`,
      call,
      (idempotencyKey, options) =>
        client.registerVariable({ sessionId, ...declaration, idempotencyKey }, options),
    );
    if (res.variable === undefined) return (await reads.fetchOne(res.variableId, false)) as never;
    return accept(res.variable, "local") as VariableSnapshot<ValueOf<typeof type>>;
  };

  return {
    register,
    set,
    setMany,

    async assign(name, value) {
      if (!parts.autoRegister) {
        throw new ConnectError(
          "assign() registers unknown variables and is off: pass autoRegister: true to createSessionContext, or call register()",
          Code.FailedPrecondition,
        );
      }
      if (cache.peek(name) !== undefined) return set(name, value);
      try {
        return await set(name, value);
      } catch (e) {
        if (!(e instanceof ConnectError) || e.code !== Code.NotFound) throw e;
      }
      const type = inferType(value);
      const snapshot = await register(name, type, value as never);
      parts.events.emit("registered", { name, type, inferred: true });
      return snapshot;
    },

    batch() {
      const updates: Record<string, VariableValue> = {};
      const builder: BatchBuilder = {
        set(identifier, value) {
          updates[identifier] = value;
          return builder;
        },
        commit: (batch) => setMany(updates, batch),
      };
      return builder;
    },

    async delete(identifier) {
      const known = cache.peek(identifier)?.variable.snapshot;
      await sentKeyedWrite(
        () => `delete '${identifier}'`,
        call,
        (idempotencyKey, options) =>
          client.deleteVariable(
            { sessionId, variableIdentifier: identifier, idempotencyKey },
            options,
          ),
      );
      if (known !== undefined) local.forget(known.id, known.name, "local");
      else cache.invalidate(identifier);
    },

    async rollback(identifier, version) {
      const res = await sentKeyedWrite(
        () => `rollback of '${identifier}' to version ${version}`,
        call,
        (idempotencyKey, options) =>
          client.rollbackVariable(
            { sessionId, variableIdentifier: identifier, targetVersion: version, idempotencyKey },
            options,
          ),
      );
      if (res.variable === undefined)
        throw new ConnectError("rollback returned no variable", Code.Internal);
      return accept(res.variable, "local");
    },
  };
}

const NO_BYTES = new Uint8Array(0);
