import type { ConnectError } from "@connectrpc/connect";
import type { VariableType } from "../values/index.js";
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
  /** assign() registered a variable with an inferred type. */
  registered: { readonly name: string; readonly type: VariableType; readonly inferred: boolean };
}
