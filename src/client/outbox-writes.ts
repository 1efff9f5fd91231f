/**
 * Writes through the outbox (see outbox.ts): `enqueue` validates a write
 * with the server's rules, stores it, shows it as pending and hands it to
 * the replay, which sends the session's stored writes in order, one at a
 * time, while holding the store's exclusive turn, so exactly one tab (or
 * context) sends them. Each stored write ends applied or refused; one
 * whose outcome is unknown (the bridge unreachable) stays stored and the
 * replay tries again when the watch stream is back, or after a backoff
 * (1 s doubling to 30 s).
 */
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { type Any, AnySchema } from "@bufbuild/protobuf/wkt";
import { type CallOptions, Code, ConnectError } from "@connectrpc/connect";
import type { Variable } from "../gen/snakepit/bridge/bridge_pb.js";
import { decodeValue, type VariableValue, validateValue } from "../values/index.js";
import type { Connection } from "./connection-state.js";
import type { Emitter } from "./events.js";
import type { LocalCopy } from "./local-copy.js";
import { type OutboxRecord, type OutboxStore, outboxOrder } from "./outbox.js";
import type { PendingOverlay, PendingWrite } from "./pending-writes.js";
import { decodeVariableBytes, encodeVariable } from "./persistence.js";
import type { WriteOptions } from "./schema.js";
import type { SessionContextEvents } from "./session-events.js";
import type { SessionRpc } from "./session-rpc.js";
import type { TimerProvider } from "./timers.js";
import type { VariableReads } from "./variable-reads.js";
import { decodeVariable, type VariableSnapshot } from "./variable-snapshot.js";
import { type PreparedWrite, prepareWrite, setVariableRequest } from "./write-encoding.js";
import {
  newIdempotencyKey,
  OutcomeUnknownError,
  sentKeyedWrite,
  writeOutcome,
} from "./write-outcome.js";

/** A write handed to the outbox, with its two promises. */
export interface OutboxWrite {
  /** The write's idempotency key (also in {@link SessionContext.pendingWrites}). */
  readonly key: string;
  /**
   * Resolves once the write is stored in the outbox (it will reach the
   * server, across reloads); rejects when it could not be stored: invalid
   * (`InvalidArgument`), the outbox full (`ResourceExhausted`), storage
   * failing, or a variable this context has never read written while
   * offline (`FailedPrecondition`).
   */
  readonly stored: Promise<void>;
  /**
   * Resolves with the stored snapshot once the server applied the write;
   * rejects with the server's refusal (`Aborted` for a conflict: the
   * "refused" event carries the current value), or, when the context
   * closes first, with an unknown outcome (the write stays stored).
   */
  readonly committed: Promise<VariableSnapshot>;
}

/** The outbox of a context. */
export interface OutboxWrites {
  enqueue(identifier: string, value: VariableValue, options?: WriteOptions): OutboxWrite;
  /**
   * Shows the stored writes as pending and starts replaying them (on the
   * next task: the application subscribes to events first); with
   * `discard`, forgets them instead (the session is new).
   */
  start(options: { discard: boolean }): Promise<void>;
  /** Stops replaying; writes not answered stay stored. */
  stop(): void;
  /** Forgets the session's stored writes (the session ends). */
  clear(): Promise<void>;
}

/** What the outbox works with. */
export interface OutboxParts {
  readonly rpc: SessionRpc;
  readonly local: LocalCopy;
  readonly overlay: PendingOverlay;
  readonly store: OutboxStore;
  readonly reads: VariableReads;
  readonly connection: Connection;
  readonly events: Emitter<SessionContextEvents>;
  readonly binaryThreshold: number;
  readonly timers: TimerProvider;
  /** Aborts when the context closes. */
  readonly signal: AbortSignal;
  /** Whether the context opened without reaching the bridge. */
  readonly openedOffline: boolean;
}

const MAX_RETRY_MS = 30_000;

/** Creates a context's outbox writes. */
export function createOutboxWrites(parts: OutboxParts): OutboxWrites {
  const { rpc, local, overlay, store, reads, connection, events, timers } = parts;
  const { sessionId } = rpc;
  const waiters = new Map<
    string,
    { resolve: (snapshot: VariableSnapshot) => void; reject: (error: unknown) => void }
  >();
  let stopped = false;
  let running: Promise<void> | undefined;
  let again = false;
  let retryTimer: unknown;
  let retries = 0;
  let everLive = false;
  // Names this context in what it tells the others, so it ignores its own.
  const self = newIdempotencyKey();
  // Keys answered lately (bounded), so a late "queued" does not show them again.
  const settledKeys = new Set<string>();
  const remember = (key: string) => {
    settledKeys.add(key);
    if (settledKeys.size > 1000) {
      const oldest = settledKeys.values().next().value;
      if (oldest !== undefined) settledKeys.delete(oldest);
    }
  };

  /**
   * Offline: the watch stream is not live after it was (or after the
   * context opened without the bridge). Opening normally is not offline:
   * the stream is still connecting then.
   */
  const offline = () => {
    const { status } = connection.state;
    if (status === "live") everLive = true;
    if (status === "live" || status === "unwatched") return false;
    return everLive || parts.openedOffline;
  };

  const pendingOf = (record: OutboxRecord): PendingWrite => {
    const decoded = decodeValue(fromBinary(AnySchema, record.value), record.binary);
    return {
      key: record.key,
      name: record.name,
      value: validateValue(decoded.type, decoded.value),
      expectedVersion: record.expectedVersion,
      createdAt: record.createdAt,
      queued: true,
    };
  };

  // --- settling: the replaying context's own answers, or another tab's ---

  const applied = (key: string, message: Variable | undefined, origin: "local" | "tab") => {
    remember(key);
    const snapshot = message === undefined ? undefined : local.acceptWritten(message, origin);
    const write = overlay.settle(key);
    const waiter = waiters.get(key);
    waiters.delete(key);
    if (waiter === undefined) return;
    if (snapshot !== undefined) waiter.resolve(snapshot);
    else if (write !== undefined) {
      // The reply left the variable out (a repeat answered after its
      // version left the history): read it.
      reads.getVariable(write.name, { bypassCache: true }).then(waiter.resolve, waiter.reject);
    }
  };

  const refused = (key: string, error: ConnectError, current: VariableSnapshot | undefined) => {
    remember(key);
    const write = overlay.settle(key);
    const waiter = waiters.get(key);
    waiters.delete(key);
    if (write !== undefined) events.emit("refused", { name: write.name, write, error, current });
    waiter?.reject(error);
  };

  const stopListening = store.listen(sessionId, (message) => {
    if (stopped || message.from === self) return;
    if (message.kind === "queued") {
      // Tabs hear each other on separate channels: a write's "settled" from
      // the replaying tab can arrive before its "queued" from the writer.
      const { key } = message.record;
      if (overlay.get(key) === undefined && !settledKeys.has(key)) {
        overlay.add(pendingOf(message.record));
      }
      return;
    }
    remember(message.key);
    if (message.refusal === undefined) {
      applied(
        message.key,
        message.variable === undefined ? undefined : decodeVariableBytes(message.variable),
        "tab",
      );
    } else {
      const current =
        message.current === undefined
          ? undefined
          : decodeVariable(decodeVariableBytes(message.current)).snapshot;
      refused(
        message.key,
        new ConnectError(message.refusal.message, message.refusal.code),
        current,
      );
    }
  });

  // --- the replay ---

  const call = (): CallOptions => ({ ...rpc.call, signal: parts.signal });

  const send = (record: OutboxRecord, expectedVersion: number | undefined) =>
    sentKeyedWrite(
      () => `set '${record.name}'`,
      call(),
      (idempotencyKey, options) =>
        rpc.client.setVariable(
          setVariableRequest({
            sessionId,
            identifier: record.name,
            any: fromBinary(AnySchema, record.value),
            binary: record.binary,
            metadata: record.metadata,
            expectedVersion,
            idempotencyKey,
          }),
          options,
        ),
      timers,
      record.key,
    );

  /** The variable as the server holds it, after a refusal that depends on it. */
  const currentAfter = async (error: ConnectError, name: string) => {
    if (error.code !== Code.Aborted && error.code !== Code.FailedPrecondition) return undefined;
    try {
      return await reads.getVariable(name, { bypassCache: true });
    } catch {
      return undefined;
    }
  };

  /** Every record that (through others) was made on top of `key`. */
  const dependentsOf = (key: string, records: readonly OutboxRecord[]) => {
    const chain = new Set([key]);
    const found: OutboxRecord[] = [];
    for (const r of records) {
      if (r.basedOn !== undefined && chain.has(r.basedOn)) {
        chain.add(r.key);
        found.push(r);
      }
    }
    return found;
  };

  /**
   * Sends the stored writes in order until none is left ("done") or one's
   * outcome is unknown ("retry"). Runs in the store's exclusive turn.
   */
  const drainOnce = async (): Promise<"done" | "retry"> => {
    // The version each write of this turn made, for the writes based on it.
    const made = new Map<string, number>();
    for (;;) {
      const records = await store.load(sessionId);
      if (records.length === 0) return "done";
      const gone = new Set<string>();
      for (const record of records) {
        if (stopped) return "retry";
        if (gone.has(record.key)) continue;
        const expected =
          record.basedOn === undefined ? record.expectedVersion : made.get(record.basedOn);
        if (record.basedOn !== undefined && expected === undefined) {
          // Its basis left the outbox in an earlier turn without rewriting it: not sendable.
          const error = new ConnectError(
            `set '${record.name}' was not sent: the earlier write of '${record.name}' it was made on is gone`,
            Code.Aborted,
          );
          store.publish(sessionId, {
            from: self,
            kind: "settled",
            key: record.key,
            refusal: refusalOf(error),
          });
          refused(record.key, error, undefined);
          await store.update(sessionId, [record.key], []);
          continue;
        }
        let reply: Awaited<ReturnType<typeof send>>;
        try {
          reply = await send(record, expected);
        } catch (reason) {
          const error = ConnectError.from(reason);
          if (writeOutcome(error) === "unknown") return "retry";
          const current = await currentAfter(error, record.name);
          const dependents = dependentsOf(record.key, records);
          const currentBytes =
            current === undefined ? undefined : currentMessage(local, current.name);
          // Tabs hear of it before the records go: a tab that finds a key
          // gone from the store has already been told how it ended.
          store.publish(sessionId, {
            from: self,
            kind: "settled",
            key: record.key,
            refusal: refusalOf(error),
            current: currentBytes,
          });
          refused(record.key, error, current);
          for (const dependent of dependents) {
            const cascaded = new ConnectError(
              `set '${dependent.name}' was not sent: it was made on an earlier write of '${record.name}' the bridge refused (${error.rawMessage})`,
              Code.Aborted,
            );
            store.publish(sessionId, {
              from: self,
              kind: "settled",
              key: dependent.key,
              refusal: refusalOf(cascaded),
              current: currentBytes,
            });
            refused(dependent.key, cascaded, current);
            gone.add(dependent.key);
          }
          await store.update(sessionId, [record.key, ...dependents.map((d) => d.key)], []);
          continue;
        }
        made.set(record.key, reply.newVersion);
        store.publish(sessionId, {
          from: self,
          kind: "settled",
          key: record.key,
          variable: reply.variable === undefined ? undefined : encodeVariable(reply.variable),
        });
        applied(record.key, reply.variable, "local");
        // The writes made on this one now know the version to expect.
        const rebased = records
          .filter((r) => r.basedOn === record.key && !gone.has(r.key))
          .map((r) => ({ ...r, basedOn: undefined, expectedVersion: reply.newVersion }));
        await store.update(sessionId, [record.key], rebased);
      }
    }
  };

  const scheduleRetry = () => {
    if (stopped || retryTimer !== undefined) return;
    const delay = Math.min(MAX_RETRY_MS, 1000 * 2 ** retries);
    retries++;
    retryTimer = timers.setTimeout(() => {
      retryTimer = undefined;
      kick();
    }, delay);
  };

  const loop = async () => {
    do {
      again = false;
      let outcome: "done" | "retry";
      try {
        outcome = await store.exclusive(sessionId, drainOnce);
      } catch (error) {
        // Storage failed under the replay: the records stay; try later.
        events.emit("persistence-degraded", { error });
        outcome = "retry";
      }
      if (outcome === "retry") {
        scheduleRetry();
        return;
      }
      retries = 0;
    } while (again && !stopped);
  };

  function kick(): void {
    if (stopped) return;
    if (retryTimer !== undefined) {
      timers.clearTimeout(retryTimer);
      retryTimer = undefined;
    }
    if (running !== undefined) {
      again = true;
      return;
    }
    running = loop().finally(() => {
      running = undefined;
    });
  }

  // The bridge is back: replay at once instead of waiting for the backoff.
  const stopOnLive = events.on("resynchronized", () => {
    everLive = true;
    kick();
  });

  // --- making writes ---

  const enqueue = (
    identifier: string,
    value: VariableValue,
    options: WriteOptions = {},
  ): OutboxWrite => {
    const key = newIdempotencyKey();
    let resolve: (snapshot: VariableSnapshot) => void = () => {};
    let reject: (error: unknown) => void = () => {};
    const committed = new Promise<VariableSnapshot>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    // Handled here so an application that awaits only one of the two
    // promises gets no unhandled rejection for the other.
    committed.catch(() => undefined);
    let stored: Promise<void>;
    try {
      const record = recordOf(key, identifier, value, options);
      overlay.add(pendingOf(record.record));
      waiters.set(key, { resolve, reject });
      stored = store.add(sessionId, record.record).then(
        () => {
          store.publish(sessionId, { from: self, kind: "queued", record: record.record });
          kick();
        },
        (error: unknown) => {
          overlay.settle(key);
          waiters.delete(key);
          reject(error);
          throw error;
        },
      );
    } catch (error) {
      reject(error);
      stored = Promise.reject(error);
    }
    stored.catch(() => undefined);
    return { key, stored, committed };
  };

  const recordOf = (
    key: string,
    identifier: string,
    value: VariableValue,
    options: WriteOptions,
  ): { record: OutboxRecord; prepared: PreparedWrite } => {
    if (stopped) {
      throw new ConnectError("the session context is closed", Code.FailedPrecondition);
    }
    const known = local.cache.peek(identifier)?.variable.snapshot;
    const away = offline();
    if (known === undefined && away) {
      throw new ConnectError(
        `'${identifier}' cannot be written offline: this context has not read it, so it cannot check the value; read or bind it while connected first`,
        Code.FailedPrecondition,
      );
    }
    const prepared = prepareWrite(local.cache, identifier, value, parts.binaryThreshold);
    const name = known?.name ?? identifier;
    let expectedVersion = options.expectedVersion;
    let basedOn: string | undefined;
    if (expectedVersion === undefined && away && known !== undefined) {
      // Made offline: it must not overwrite what others wrote meanwhile.
      // On top of a stored write of the same variable, it expects the
      // version that one makes; else the version this context holds.
      const before = overlay.latest(name);
      if (before?.queued === true) basedOn = before.key;
      else expectedVersion = known.version;
    }
    const metadata: Record<string, string> = { ...options.metadata };
    if (options.optimizerId !== undefined) metadata.optimizer_id = options.optimizerId;
    const valueBytes = toBinary(AnySchema, prepared.any as Any);
    const createdAt = timers.now();
    const metadataBytes = Object.entries(metadata).reduce(
      (n, [k, v]) => n + k.length + v.length,
      0,
    );
    return {
      prepared,
      record: {
        key,
        name,
        value: valueBytes,
        binary: prepared.binary,
        metadata,
        expectedVersion,
        basedOn,
        createdAt,
        order: outboxOrder(createdAt, key),
        size: valueBytes.length + (prepared.binary?.length ?? 0) + metadataBytes + name.length + 64,
      },
    };
  };

  return {
    enqueue,

    async start({ discard }) {
      let records: OutboxRecord[] = [];
      try {
        records = await store.load(sessionId);
        if (discard && records.length > 0) {
          await store.update(
            sessionId,
            records.map((r) => r.key),
            [],
          );
          records = [];
        }
      } catch (error) {
        timers.setTimeout(() => events.emit("persistence-degraded", { error }), 0);
      }
      for (const record of records) {
        if (overlay.get(record.key) === undefined) overlay.add(pendingOf(record));
      }
      if (records.length > 0) timers.setTimeout(kick, 0);
    },

    stop() {
      if (stopped) return;
      stopped = true;
      stopListening();
      stopOnLive();
      if (retryTimer !== undefined) timers.clearTimeout(retryTimer);
      const closed = new ConnectError("the session context closed", Code.Canceled);
      for (const [key, waiter] of waiters) {
        const write = overlay.get(key);
        waiter.reject(
          new OutcomeUnknownError(
            `set '${write?.name ?? key}': the context closed before the bridge answered; the write stays in the outbox and is sent when the session is opened again`,
            Code.Canceled,
            closed,
          ),
        );
      }
      waiters.clear();
    },

    clear: () => store.clear(sessionId),
  };
}

function refusalOf(error: ConnectError): { code: number; message: string } {
  return { code: error.code, message: error.rawMessage };
}

/** The cached wire message of `name`, for telling other tabs. */
function currentMessage(local: LocalCopy, name: string): Uint8Array | undefined {
  const entry = local.cache.peek(name);
  return entry === undefined ? undefined : encodeVariable(entry.variable.message);
}
