import type { JsonValue, VariableType, VariableValue } from "../../values/index.js";
import type { SharedAuditTrail, SharedToolDirectory } from "../tools/shared-tools.js";

/**
 * A variable as the store keeps it. Records are immutable: a write replaces
 * the record with a new one, so a record handed out can be shared (and its
 * encoded form cached) without copying.
 */
export interface VariableRecord {
  readonly id: string;
  readonly name: string;
  readonly type: VariableType;
  /** The normalized value. */
  readonly value: VariableValue;
  /** Canonical constraints JSON ("{}" when none). */
  readonly constraintsJson: string;
  readonly metadata: Readonly<Record<string, string>>;
  /** Variable.Source on the wire: 0 = ELIXIR (server side), 1 = PYTHON. */
  readonly source: 0 | 1;
  readonly version: number;
  /** Epoch milliseconds of the last successful write. */
  readonly updatedAt: number;
  readonly accessControlJson: string;
  readonly optimization?: OptimizationLock;
  /** Whether the value travels in the portable binary form. */
  readonly binary: boolean;
  /** Who made the current version (its history entry's `changed_by`). */
  readonly changedBy: string;
  /** Metadata of the write that made the current version. */
  readonly changeMetadata: Readonly<Record<string, string>>;
  /**
   * Bytes this version counts for in the session budget, as the variable
   * semantics computed them (encoded value plus metadata). The store only
   * adds these up.
   */
  readonly bytes: number;
}

/** An optimization lock held on one variable. */
export interface OptimizationLock {
  readonly optimizerId: string;
  readonly optimizationId: string;
  readonly startedAt: number;
}

/**
 * One retained past value of a variable, as a store keeps it. Named apart
 * from the client's `HistoryEntry` (what `history()` returns): a store's
 * record also carries the bytes it counts for.
 */
export interface HistoryRecord {
  readonly version: number;
  readonly value: VariableValue;
  readonly timestamp: number;
  readonly changedBy: string;
  readonly metadata: Readonly<Record<string, string>>;
  /** Bytes this entry counts for in the session budget (value plus metadata). */
  readonly bytes: number;
}

/** A directed edge "from depends on to", between variable ids. */
export interface DependencyEdge {
  readonly from: string;
  readonly to: string;
  readonly type: string;
}

/** A session as the store keeps it (without its variables). */
export interface SessionRecord {
  readonly id: string;
  readonly metadata: Readonly<Record<string, string>>;
  readonly createdAt: number;
  /** Sliding TTL in milliseconds, refreshed by every touch. */
  readonly ttlMs: number;
  readonly expiresAt: number;
  /** Tool allowlist; empty means every exposed tool. */
  readonly allowedTools: readonly string[];
  /** Next number used to mint a variable id; never reused within a session. */
  readonly nextVariableSeq: number;
}

/** What a new session starts with. */
export interface SessionInit {
  readonly id: string;
  readonly metadata: Readonly<Record<string, string>>;
  readonly ttlMs: number;
  readonly allowedTools: readonly string[];
  /**
   * The client creating it, counted until the session ends: creation is
   * refused with RESOURCE_EXHAUSTED when the client holds `max` sessions.
   * With `maxBytes`, the bytes of the client's sessions (SessionView.bytes)
   * are counted together too: a new session of a client at that limit,
   * and any transaction of one of its sessions that would take them past
   * it, are refused with RESOURCE_EXHAUSTED (changes that shrink a session
   * always go through).
   */
  readonly quota?: { readonly client: string; readonly max: number; readonly maxBytes?: number };
}

/**
 * Read access to one session's state, consistent for the duration of a
 * {@link SessionStore.read} or {@link SessionStore.transact} callback.
 */
export interface SessionView {
  readonly session: SessionRecord;
  /** Looks a variable up by id or by name. */
  variable(identifier: string): VariableRecord | undefined;
  variables(): Iterable<VariableRecord>;
  readonly variableCount: number;
  /**
   * Retained past versions of a variable, oldest first. The current version
   * is the record itself and is not repeated here.
   */
  history(variableId: string): readonly HistoryRecord[];
  dependencies(): readonly DependencyEdge[];
  /** Free-form session data for server-side tools (e.g. a conversation). */
  data(key: string): JsonValue | undefined;
  /** The size a data entry was stored with; 0 when absent. */
  dataBytes(key: string): number;
  dataKeys(): Iterable<string>;
  /**
   * Bytes the session holds: the `bytes` of every variable and history
   * entry plus the size of every data entry. Kept as writes happen, so
   * reading it costs nothing; inside a transaction it includes the staged
   * writes.
   */
  readonly bytes: number;
}

/**
 * Write access inside {@link SessionStore.transact}. Changes become visible
 * together when the run of the callback that commits returns; when it
 * throws, none of them happen, and a run the store discards (to run the
 * callback again) leaves none behind.
 */
export interface SessionTransaction extends SessionView {
  /** Inserts or replaces a variable (by id); the name index follows. */
  putVariable(record: VariableRecord): void;
  /** Removes a variable with its history and dependency edges. */
  deleteVariable(id: string): void;
  /** Appends a history entry (the newest). */
  appendHistory(variableId: string, entry: HistoryRecord): void;
  /** Drops the `count` oldest history entries of a variable. */
  dropHistory(variableId: string, count: number): void;
  addDependency(edge: DependencyEdge): void;
  /**
   * Sets (or, with undefined, removes) a data entry. `bytes` is what it
   * counts for in the session budget, as the caller measured it.
   */
  setData(key: string, value: JsonValue | undefined, bytes: number): void;
  /** Reserves the next variable sequence number. */
  nextVariableSeq(): number;
  /** Publishes a change to watchers once the transaction commits. */
  emit(change: VariableChange): void;
}

/** A change of one variable, delivered to watchers in commit order. */
export interface VariableChange {
  readonly sessionId: string;
  readonly kind:
    | "value_changed"
    | "deleted"
    | "optimization_started"
    | "optimization_stopped"
    | "registered";
  readonly variable: VariableRecord;
  readonly source: string;
  readonly metadata: Readonly<Record<string, string>>;
  readonly timestamp: number;
}

/** Why a session went away. */
export type SessionEndReason = "cleanup" | "expired";

/** Events a store publishes; for multi-node stores they cross nodes. */
export type StoreEvent =
  | { readonly type: "change"; readonly change: VariableChange }
  | {
      readonly type: "session_ended";
      readonly sessionId: string;
      readonly reason: SessionEndReason;
    }
  /**
   * Changes may have been missed (a multi-node store's feed lost entries
   * while the node was away): the watchers of `sessionId`, or every
   * watcher when it is absent, must resynchronize.
   */
  | { readonly type: "resync"; readonly reason: string; readonly sessionId?: string };

/**
 * Backend-neutral, async session storage. The bridge service holds all
 * semantics (validation, versions, locks, history bounds, budgets); a store
 * provides atomic access to one session's state, its byte accounting,
 * sliding expiry and a change feed. The in-memory store
 * is the embedded default; other backends run the same contract suite.
 *
 * Transactions are optimistic on a shared backend: a callback given to
 * {@link SessionStore.transact} (or as a creation setup) may run more than
 * once, and only its last run counts. See {@link SessionStore.transact} for
 * what that asks of a callback.
 */
export interface SessionStore {
  /**
   * Creates the session unless it exists. Returns the stored record and
   * whether this call created it. Refuses with RESOURCE_EXHAUSTED when
   * `maxSessions` are live. `setup` stages what the new session starts
   * with; like a {@link transact} callback it may run more than once (the
   * session can end between an "exists" answer and a second try), and the
   * same rules hold for it.
   */
  createSession(
    init: SessionInit,
    maxSessions: number,
    setup?: (tx: SessionTransaction) => void,
  ): Promise<{ session: SessionRecord; created: boolean }>;
  /**
   * Runs `fn` once with a consistent view of the session and refreshes its
   * sliding TTL. Resolves to undefined when the session does not exist or
   * has expired. Unlike a {@link transact} callback, `fn` is never run
   * again: it may count what it returns (a reply's size, say) as it goes.
   */
  read<T>(sessionId: string, fn: (view: SessionView) => T): Promise<{ value: T } | undefined>;
  /**
   * Runs `fn` atomically against the session and refreshes its TTL: all of
   * its writes apply together, or none when it throws. Resolves to
   * undefined when the session does not exist or has expired.
   *
   * `fn` may run more than once. A store that shares the session with other
   * nodes (Redis) runs it against its copy of the session and commits only
   * if nobody committed in between; otherwise it throws that run's writes
   * away and runs `fn` again on the current state, until a run commits or
   * the session has changed under it too often (Redis: 16 times in a row),
   * which fails with ABORTED. A refusal `fn` threw on a copy that may be
   * stale is decided again the same way. Only the last run counts: only its
   * writes and {@link SessionTransaction.emit}ted changes happen, and the
   * promise settles with what it returned or threw, or with the store's own
   * refusal of its writes (a client over its byte limit, say). So `fn`
   * must be pure over `tx`:
   *
   * - every read and write of the session goes through `tx`;
   * - it has no effect outside `tx` (no I/O, no counters, no events, no
   *   assignments to outer variables), since every run would have it;
   * - nothing it computes leaves a run except as its return value or thrown
   *   error: what an earlier run left in an outer variable is not what the
   *   last run decided, and the last run may not even have set it.
   *
   * Side effects belong after the promise settles, acting on what it
   * settled with. The memory store's `rehearse` option runs every callback
   * twice, so tests on it catch a callback that breaks these rules.
   *
   * @example
   * ```ts
   * // GOOD: the outcome travels in the return value, decided by the run
   * // that committed.
   * const result = await store.transact(id, (tx) => {
   *   const n = tx.variable("n");
   *   if (n === undefined) return { ok: false as const };
   *   tx.putVariable({ ...n, version: n.version + 1, value: Number(n.value) + 1 });
   *   return { ok: true as const };
   * });
   * if (result?.value.ok) metrics.increments++;
   * // BAD: `metrics.increments++` inside the callback counts every run, and
   * // a `let found` set inside and read after may be a discarded run's.
   * ```
   */
  transact<T>(
    sessionId: string,
    fn: (tx: SessionTransaction) => T,
  ): Promise<{ value: T } | undefined>;
  /** Removes a session. Resolves to what it held, or undefined if absent. */
  deleteSession(
    sessionId: string,
    reason: SessionEndReason,
  ): Promise<{ variables: number } | undefined>;
  /** Live sessions and variables, for metrics and limits. */
  stats(): Promise<{ sessions: number; variables: number }>;
  /**
   * Subscribes to changes and session ends. Returns the unsubscribe
   * function. Every session end is delivered; changes are delivered at
   * least for the sessions this node follows ({@link follow}): a
   * multi-node store leaves the others out.
   */
  subscribe(listener: (event: StoreEvent) => void): () => void;
  /**
   * Follows a session's changes on this node (a watch stream is open on
   * it). Resolves once every change committed from then on will reach the
   * subscribers, in commit order, to the function that stops following it;
   * calls nest, each ended by its own function. A change this node misses
   * while following ends in a `resync` event naming the session, never in
   * silence.
   */
  follow(sessionId: string): Promise<() => void>;
  /** Stops timers and releases connections. */
  close(): Promise<void>;
  /**
   * For multi-node stores: the remote tools of every node (single-node
   * stores leave it out, and the process's registry is the only one).
   */
  readonly sharedTools?: SharedToolDirectory;
  /** For multi-node stores: the audit trail of every node. */
  readonly sharedAudit?: SharedAuditTrail;
}
