import type { ServerTimers } from "../common/timers.js";
import type { Limits } from "../limits/limits.js";
import type { MemoryBudget } from "../limits/memory-budget.js";
import type { VariableOps } from "../session/variable-ops.js";
import { sessionIdRequired, sessionNotFound } from "../store/errors.js";
import { isClientSessionId, MAX_SESSION_ID_LENGTH } from "../store/ids.js";
import type { SessionStore, SessionTransaction, SessionView } from "../store/session-store.js";
import type { AuditTrail } from "../tools/audit-trail.js";
import type { ToolRegistry } from "../tools/tool-registry.js";
import type { WatchHub } from "../watch/watch-hub.js";

/** Settings the service reads at run time. */
export interface CoreSettings {
  readonly limits: Limits;
  readonly sessionTtlMs: number;
  /** Create unknown sessions on first use instead of answering NOT_FOUND. */
  readonly autoCreateSessions: boolean;
  /** Public callers may create sessions under ids they choose. */
  readonly clientSessionIds: boolean;
  /** How long a forwarded tool call may take. */
  readonly remoteToolTimeoutMs: number;
}

/**
 * Everything the RPC handlers and server-side tools share: the store, the
 * variable semantics, watchers, tools and the audit trail.
 */
export interface BridgeCore {
  readonly store: SessionStore;
  readonly ops: VariableOps;
  readonly hub: WatchHub;
  readonly tools: ToolRegistry;
  readonly audit: AuditTrail;
  readonly settings: CoreSettings;
  readonly now: () => number;
  /** The server's timers: deadlines and pauses of the handlers and tools. */
  readonly timers: ServerTimers;
  /**
   * The process's memory budget: while it is exceeded, new sessions and
   * transactions that grow a session are refused (see {@link transact}).
   * Without it there is no such check.
   */
  readonly memory?: MemoryBudget;
  /**
   * Reads a session (refreshing its TTL), or fails with NOT_FOUND. This and
   * the two below are the only ways into a session: they agree on which ids
   * can name one, and on auto-creation.
   */
  read<T>(sessionId: string, fn: (view: SessionView) => T): Promise<T>;
  /**
   * Changes a session atomically (refreshing its TTL), or fails with NOT_FOUND.
   * While the process is above its memory budget, a change that would make
   * the session hold more bytes is refused with RESOURCE_EXHAUSTED; changes
   * that keep or shrink it (deletes, locks, smaller values) go through.
   */
  transact<T>(sessionId: string, fn: (tx: SessionTransaction) => T): Promise<T>;
  /**
   * Reads a session if it exists (refreshing its TTL); undefined when it does
   * not. Never creates one: for calls that ask whether a session is there.
   */
  find<T>(sessionId: string, fn: (view: SessionView) => T): Promise<{ value: T } | undefined>;
}

/** Wires a core from its parts. */
export function createBridgeCore(
  parts: Omit<BridgeCore, "read" | "transact" | "find">,
): BridgeCore {
  const ensure = async (sessionId: string): Promise<void> => {
    if (sessionId === "") throw sessionIdRequired();
    if (!parts.settings.autoCreateSessions) {
      throw sessionNotFound(sessionId);
    }
    // Only ids a client could have been given by InitializeSession.
    if (!isClientSessionId(sessionId)) throw sessionNotFound(sessionId);
    parts.memory?.check();
    await parts.store.createSession(
      {
        id: sessionId,
        metadata: { auto_created: "true" },
        ttlMs: parts.settings.sessionTtlMs,
        allowedTools: [],
      },
      parts.settings.limits.maxSessions,
    );
  };

  /** Runs a store access; on an unknown session, auto-creates it or fails. */
  const inSession = async <T>(
    sessionId: string,
    access: () => Promise<{ value: T } | undefined>,
  ): Promise<T> => {
    let result = canNameSession(sessionId) ? await access() : undefined;
    if (result === undefined) {
      await ensure(sessionId);
      result = await access();
      if (result === undefined) throw sessionNotFound(sessionId);
    }
    return result.value;
  };

  const { memory } = parts;
  /**
   * `fn`, refused after the fact when it grew the session while the process
   * is above its memory budget: the store then drops what it staged. Only
   * the sum of the session's bytes is compared, so the check costs nothing
   * per write.
   */
  const withinBudget =
    memory === undefined || memory.limit === 0
      ? <T>(fn: (tx: SessionTransaction) => T) => fn
      : <T>(fn: (tx: SessionTransaction) => T) =>
          (tx: SessionTransaction): T => {
            const before = tx.bytes;
            const value = fn(tx);
            if (tx.bytes > before) memory.check();
            return value;
          };

  return {
    ...parts,
    read: (sessionId, fn) => inSession(sessionId, () => parts.store.read(sessionId, fn)),
    transact: (sessionId, fn) =>
      inSession(sessionId, () => parts.store.transact(sessionId, withinBudget(fn))),
    find: async (sessionId, fn) =>
      canNameSession(sessionId) ? parts.store.read(sessionId, fn) : undefined,
  };
}

/** An id no session can have (empty, or longer than any id) never reaches the store. */
function canNameSession(sessionId: string): boolean {
  return sessionId !== "" && sessionId.length <= MAX_SESSION_ID_LENGTH;
}
