/**
 * The outbox: where a context with `outbox` keeps its writes until the
 * server answers them. A write is stored first (its first promise), shown
 * at once as pending, and sent in order by one replayer per session (its
 * second promise settles with the server's answer); a write whose outcome
 * is unknown stays stored and is sent again under the same idempotency key,
 * so it applies once however often the connection fails, the page reloads
 * or the tab closes in between.
 *
 * This file holds the store's contract, the in-memory store for Node and
 * Workers, and the bounds every store enforces; `outbox-writes.ts` the
 * replay; `persist/idb-outbox.ts` the IndexedDB store for browsers.
 * @module
 */
import { Code, ConnectError } from "@connectrpc/connect";

/** One stored write: a SetVariable waiting for the server. */
export interface OutboxRecord {
  /** The write's idempotency key, sent with every attempt. */
  readonly key: string;
  /** The variable (as the application named it). */
  readonly name: string;
  /** The value as the wire carries it: a binary `google.protobuf.Any`. */
  readonly value: Uint8Array;
  /** The portable binary form of a large tensor or embedding, if used. */
  readonly binary: Uint8Array | undefined;
  readonly metadata: Readonly<Record<string, string>>;
  /** Compare-and-swap: the version the server must hold; undefined for a plain write. */
  readonly expectedVersion: number | undefined;
  /**
   * The earlier stored write of the same variable this one was made on top
   * of, while offline: it is sent expecting the version that write makes,
   * and refused without being sent if that write is refused.
   */
  readonly basedOn: string | undefined;
  /** When it was made (epoch ms). */
  readonly createdAt: number;
  /** Sorts the records in the order they were made. */
  readonly order: string;
  /** What it counts against `maxBytes`. */
  readonly size: number;
}

/**
 * What the contexts (tabs) of a session tell each other about its outbox:
 * a write was stored (show it pending), or the replaying context got the
 * server's answer to one: the variable it made (binary `Variable`; absent
 * when the reply left it out), or the refusal with the variable as the
 * server holds it (`current`, when it was read). `from` names the context
 * that sent it, which ignores its own.
 */
export type OutboxMessage =
  | { readonly kind: "queued"; readonly from: string; readonly record: OutboxRecord }
  | {
      readonly kind: "settled";
      readonly from: string;
      readonly key: string;
      readonly variable?: Uint8Array | undefined;
      readonly refusal?: { readonly code: number; readonly message: string } | undefined;
      readonly current?: Uint8Array | undefined;
    };

/** How much an outbox holds per session. */
export interface OutboxLimits {
  /** Most writes stored (default 1000). */
  readonly maxWrites: number;
  /** Most bytes stored, values and metadata (default 4 MiB). */
  readonly maxBytes: number;
}

/** Default {@link OutboxLimits}. */
export const DEFAULT_OUTBOX_LIMITS: OutboxLimits = { maxWrites: 1000, maxBytes: 4 * 1024 * 1024 };

/**
 * Where an outbox keeps its records, per session. Every method may be
 * called by several contexts (tabs) of one session at once: `add` checks
 * the bounds and stores in one step, `update` removes and rewrites in one
 * step, `exclusive` lets one replayer at a time run, and `publish` reaches
 * the other contexts' `listen` (a context may hear its own messages too).
 */
export interface OutboxStore {
  readonly limits: OutboxLimits;
  /** The session's records, oldest first. */
  load(sessionId: string): Promise<OutboxRecord[]>;
  /**
   * Stores a record, or fails with `ResourceExhausted` (nothing stored)
   * when it would pass `limits`.
   */
  add(sessionId: string, record: OutboxRecord): Promise<void>;
  /** Removes `remove` (by key) and stores `put` (replacing by key), in one step. */
  update(sessionId: string, remove: readonly string[], put: readonly OutboxRecord[]): Promise<void>;
  /** Runs `fn` while no other replayer of the session runs. */
  exclusive<T>(sessionId: string, fn: () => Promise<T>): Promise<T>;
  /** Forgets the session's records. */
  clear(sessionId: string): Promise<void>;
  /** Tells the session's other contexts. */
  publish(sessionId: string, message: OutboxMessage): void;
  /** Hears what contexts of the session publish; returns the unsubscribe function. */
  listen(sessionId: string, listener: (message: OutboxMessage) => void): () => void;
}

/** Whether a value received from elsewhere (another tab) is an {@link OutboxMessage}. */
export function isOutboxMessage(data: unknown): data is OutboxMessage {
  const message = data as Record<string, unknown> | null;
  if (typeof message?.from !== "string") return false;
  if (message.kind === "settled") return typeof message.key === "string";
  if (message?.kind !== "queued") return false;
  const record = message.record as Partial<OutboxRecord> | undefined;
  return (
    typeof record?.key === "string" &&
    typeof record.name === "string" &&
    typeof record.order === "string" &&
    record.value instanceof Uint8Array
  );
}

/** Options of {@link memoryOutbox}. */
export type OutboxOptions = Partial<OutboxLimits>;

/** The limits an options object asks for, checked. */
export function outboxLimits(options: OutboxOptions = {}): OutboxLimits {
  const limits = { ...DEFAULT_OUTBOX_LIMITS, ...options };
  for (const [name, value] of Object.entries(limits)) {
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new ConnectError(
        `outbox ${name} must be a positive integer, got ${String(value)}`,
        Code.InvalidArgument,
      );
    }
  }
  return limits;
}

/**
 * Fails with `ResourceExhausted` when `record` does not fit beside
 * `records` (the stores call it inside their one step).
 */
export function checkRoom(
  records: Iterable<OutboxRecord>,
  record: OutboxRecord,
  limits: OutboxLimits,
): void {
  let writes = 1;
  let bytes = record.size;
  for (const r of records) {
    writes++;
    bytes += r.size;
  }
  if (writes <= limits.maxWrites && bytes <= limits.maxBytes) return;
  throw new ConnectError(
    `the outbox is full (${writes - 1} writes, ${bytes - record.size} bytes stored; limits ${limits.maxWrites} writes, ${limits.maxBytes} bytes): the write of '${record.name}' was not stored; wait until the stored writes reach the bridge, or raise maxWrites / maxBytes`,
    Code.ResourceExhausted,
  );
}

let made = 0;

/**
 * An order string that sorts as the records were made: the time, then a
 * counter of this page (or process), then the key; fixed width, so string
 * order (IndexedDB's key order) is the same.
 */
export function outboxOrder(createdAt: number, key: string): string {
  made = (made + 1) % 36 ** 6;
  return `${createdAt.toString(36).padStart(9, "0")}.${made.toString(36).padStart(6, "0")}.${key}`;
}

/**
 * An outbox in this process's memory: for Node and Workers, where writes
 * need not outlive the process. Contexts of one session in the process
 * share it (one replays at a time); writes survive a context's close and
 * are replayed by the next context opened on the session.
 *
 * @example
 * ```ts
 * const ctx = await createSessionContext({ transport, outbox: memoryOutbox() });
 * const write = ctx.enqueue("temperature", 0.9);
 * await write.stored;     // kept until the server answers, whatever the connection does
 * await write.committed;  // the server applied it (or refused it: the promise rejects)
 * ```
 */
export function memoryOutbox(options: OutboxOptions = {}): OutboxStore {
  const limits = outboxLimits(options);
  const sessions = new Map<string, Map<string, OutboxRecord>>();
  const turns = new Map<string, Promise<unknown>>();
  const listeners = new Map<string, Set<(message: OutboxMessage) => void>>();
  const of = (sessionId: string) => {
    let records = sessions.get(sessionId);
    if (records === undefined) {
      records = new Map();
      sessions.set(sessionId, records);
    }
    return records;
  };
  const sorted = (records: Map<string, OutboxRecord>) =>
    [...records.values()].sort((a, b) => (a.order < b.order ? -1 : a.order > b.order ? 1 : 0));

  return {
    limits,
    load: async (sessionId) => sorted(of(sessionId)),
    async add(sessionId, record) {
      const records = of(sessionId);
      checkRoom(records.values(), record, limits);
      records.set(record.key, record);
    },
    async update(sessionId, remove, put) {
      const records = of(sessionId);
      for (const key of remove) records.delete(key);
      for (const record of put) records.set(record.key, record);
      if (records.size === 0) sessions.delete(sessionId);
    },
    exclusive(sessionId, fn) {
      const before = turns.get(sessionId) ?? Promise.resolve();
      const run = before.then(fn, fn);
      const settled = run.then(
        () => undefined,
        () => undefined,
      );
      turns.set(sessionId, settled);
      void settled.then(() => {
        if (turns.get(sessionId) === settled) turns.delete(sessionId);
      });
      return run;
    },
    async clear(sessionId) {
      sessions.delete(sessionId);
    },
    publish(sessionId, message) {
      // Delivered on a later task, as another tab would hear it.
      const heard = [...(listeners.get(sessionId) ?? [])];
      if (heard.length === 0) return;
      setTimeout(() => {
        for (const listener of heard) listener(message);
      }, 0);
    },
    listen(sessionId, listener) {
      let set = listeners.get(sessionId);
      if (set === undefined) {
        set = new Set();
        listeners.set(sessionId, set);
      }
      set.add(listener);
      return () => {
        set.delete(listener);
        if (set.size === 0) listeners.delete(sessionId);
      };
    },
  };
}
