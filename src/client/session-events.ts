import type { ConnectError } from "@connectrpc/connect";
import type { VariableType } from "../values/index.js";
import type { PendingWrite } from "./pending-writes.js";
import type { VariableSnapshot } from "./variable-snapshot.js";

/** Events a SessionContext emits. Subscribe with `ctx.on(type, listener)`. */
export interface SessionContextEvents extends Record<string, unknown> {
  /**
   * A variable changed: written here ("local"), pushed by the server's
   * watch stream ("server"), or shared by another tab ("tab"). `snapshot`
   * is undefined when the variable was deleted.
   */
  change: {
    readonly name: string;
    readonly snapshot: VariableSnapshot | undefined;
    readonly origin: "local" | "server" | "tab";
  };
  /** The watch stream was lost: cached values now expire by their TTL. */
  stale: Record<string, never>;
  /** The watch stream is about to reconnect. */
  reconnecting: {
    readonly attempt: number;
    readonly delayMs: number;
    readonly error: ConnectError;
  };
  /** The cache was revalidated in one batch call and is live again. */
  resynchronized: { readonly variables: number };
  /** Persistence failed; the cache continues in memory only. */
  "persistence-degraded": { readonly error: unknown };
  /** The session expired or was cleaned up on the server. */
  "session-ended": { readonly error: ConnectError };
  /**
   * The pending writes of a variable changed: one was made, or one was
   * answered (applied or refused). `snapshot` is the optimistic snapshot
   * with the newest pending value (`pending: true`), or undefined once
   * none is pending (the confirmed value then stands; its own "change"
   * event reports a new version).
   */
  pending: {
    readonly name: string;
    readonly writes: number;
    readonly snapshot: VariableSnapshot | undefined;
  };
  /**
   * The server refused a write this context made (or its outbox replayed):
   * its pending value is gone. `current` is the variable as the server holds
   * it, read after a conflict (`Aborted`) or a lock (`FailedPrecondition`)
   * so the application can merge; undefined when it could not be read.
   */
  refused: {
    readonly name: string;
    readonly write: PendingWrite;
    readonly error: ConnectError;
    readonly current: VariableSnapshot | undefined;
  };
  /** assign() registered a variable with an inferred type. */
  registered: { readonly name: string; readonly type: VariableType; readonly inferred: boolean };
}
