import { Code, ConnectError } from "@connectrpc/connect";
import type { Connection } from "./connection-state.js";
import type { Emitter } from "./events.js";
import type { LocalCopy } from "./local-copy.js";
import type { OutboxWrites } from "./outbox-writes.js";
import type { PendingOverlay } from "./pending-writes.js";
import type { PersistenceAdapter, PersistenceWriter } from "./persistence.js";
import type { SessionContextEvents } from "./session-events.js";
import type { SessionRpc } from "./session-rpc.js";

/** What closing a context stops and clears. */
export interface CloseParts {
  readonly rpc: SessionRpc;
  readonly local: LocalCopy;
  readonly connection: Connection;
  readonly events: Emitter<SessionContextEvents>;
  readonly adapter: PersistenceAdapter | undefined;
  readonly persistence: PersistenceWriter | undefined;
  /** Aborts the watch stream and every call that listens to it. */
  readonly abort: () => void;
  readonly stopHeartbeat: () => void;
  /** Settles when the watch loop (or the one-off revalidation) is over. */
  readonly coherence: Promise<void>;
  /** Writes shown as pending: forgotten with the cache. */
  readonly overlay: PendingOverlay;
  /** The outbox, if the context has one: stopped on close, cleared by a cleanup. */
  readonly outbox: OutboxWrites | undefined;
}

/**
 * Makes a context's `close()`. The local side (watch, heartbeat, tabs,
 * persistence) stops once, and the cache and listeners are emptied however
 * the call ends. With `cleanup`, the server's session and the persisted
 * store are cleared, both attempted whatever the other does; a part that
 * failed is attempted again by the next `close({ cleanup: true })`, a part
 * that succeeded is not. The outbox stops replaying (its unanswered writes
 * stay stored for the next context), and a cleanup clears it too.
 */
export function createClose(parts: CloseParts): (options?: { cleanup?: boolean }) => Promise<void> {
  const { rpc, local, connection, persistence, adapter } = parts;
  let stopped: Promise<void> | undefined;
  let serverCleaned = false;
  let storeCleared = adapter === undefined;
  let outboxCleared = parts.outbox === undefined;

  const stop = async (cleanup: boolean) => {
    connection.dispatch({ type: "close" });
    parts.outbox?.stop();
    parts.abort();
    parts.stopHeartbeat();
    local.close();
    try {
      await parts.coherence;
      // A cleanup clears the store: what is pending need not be written.
      if (!cleanup) await persistence?.flush();
    } finally {
      persistence?.stop();
    }
  };

  const cleanUp = async () => {
    const results = await Promise.allSettled([
      serverCleaned
        ? undefined
        : rpc.client
            .cleanupSession({ sessionId: rpc.sessionId, force: true }, rpc.call)
            .then(() => {
              serverCleaned = true;
            }),
      storeCleared
        ? undefined
        : adapter?.clear(rpc.sessionId).then(() => {
            storeCleared = true;
          }),
      outboxCleared
        ? undefined
        : parts.outbox?.clear().then(() => {
            outboxCleared = true;
          }),
    ]);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed !== undefined) throw ConnectError.from(failed.reason, Code.Unavailable);
  };

  return async ({ cleanup = false } = {}) => {
    try {
      stopped ??= stop(cleanup);
      await stopped;
      if (cleanup) await cleanUp();
    } finally {
      local.cache.clear();
      parts.overlay.clear();
      parts.events.clear();
    }
  };
}
