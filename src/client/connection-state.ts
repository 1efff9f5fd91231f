import type { ConnectError } from "@connectrpc/connect";
import type { Emitter } from "./events.js";
import type { SessionContextEvents } from "./session-events.js";
import type { VariableCache } from "./variable-cache.js";

/**
 * Where a SessionContext stands with the server: one value, changed only by
 * {@link transition}. While "live" the watch stream keeps every cached
 * value current; in every other state cached values expire by their TTL.
 */
export type ConnectionState =
  /** The watch stream is opening; it is not caught up yet. */
  | { readonly status: "connecting" }
  /** Cached variables are being re-read in one batch call (`run`). */
  | { readonly status: "resyncing"; readonly run: Promise<void> }
  /** The watch stream is caught up and carries every change. */
  | { readonly status: "live" }
  /** The watch stream was lost; the next attempt starts after `delayMs`. */
  | {
      readonly status: "reconnecting";
      readonly attempt: number;
      readonly delayMs: number;
      readonly error: ConnectError;
    }
  /** No watch stream (`watch: false`): TTLs only. */
  | { readonly status: "unwatched" }
  /** The session expired or was cleaned up on the server. Final but for "closed". */
  | { readonly status: "ended"; readonly error: ConnectError }
  /** close() was called. Final. */
  | { readonly status: "closed" };

/** What can happen to the connection. */
export type ConnectionAction =
  /** The watch stream (re)opens. */
  | { readonly type: "open" }
  /** A batch re-read of the cached variables started. */
  | { readonly type: "resync"; readonly run: Promise<void> }
  /**
   * The re-read finished (`variables` were read); `live`: the watch stream
   * carries every later change, false for a one-off revalidation.
   */
  | { readonly type: "synced"; readonly variables: number; readonly live: boolean }
  /** A one-off revalidation (no watch stream) failed. */
  | { readonly type: "resync-failed" }
  /** The watch stream failed; the next attempt waits `delayMs`. */
  | {
      readonly type: "reconnect";
      readonly attempt: number;
      readonly delayMs: number;
      readonly error: ConnectError;
    }
  | { readonly type: "ended"; readonly error: ConnectError }
  | { readonly type: "close" };

/** The next state. Pure: effects are {@link createConnection}'s. */
export function transition(state: ConnectionState, action: ConnectionAction): ConnectionState {
  if (state.status === "closed") return state;
  if (state.status === "ended" && action.type !== "close") return state;
  switch (action.type) {
    case "open":
      return { status: "connecting" };
    case "resync":
      return { status: "resyncing", run: action.run };
    case "synced":
      return action.live ? { status: "live" } : { status: "unwatched" };
    case "resync-failed":
      return { status: "unwatched" };
    case "reconnect":
      return {
        status: "reconnecting",
        attempt: action.attempt,
        delayMs: action.delayMs,
        error: action.error,
      };
    case "ended":
      return { status: "ended", error: action.error };
    case "close":
      return { status: "closed" };
  }
}

/** A context's connection state and the one way to change it. */
export interface Connection {
  readonly state: ConnectionState;
  /** Applies an action: the next state, then its effects on the cache and listeners. */
  dispatch(action: ConnectionAction): void;
  /** Resolves on the first "synced" (at once when nothing needed revalidating). */
  readonly revalidated: Promise<void>;
}

/** What a connection's effects reach. */
export interface ConnectionParts {
  readonly cache: VariableCache;
  readonly events: Emitter<SessionContextEvents>;
  /** Whether a watch stream runs (initial state "connecting", else "unwatched"). */
  readonly watched: boolean;
  /** Whether hydrated values wait for a revalidation. */
  readonly hydrated: boolean;
}

/**
 * Creates the state machine. Effects follow the state: the cache is live
 * exactly while the state is "live", and each event is emitted by the one
 * transition it describes ("stale" on leaving live, "resynchronized" on
 * reaching it or on a finished revalidation, "session-ended" once).
 */
export function createConnection(parts: ConnectionParts): Connection {
  const { cache, events } = parts;
  let state: ConnectionState = { status: parts.watched ? "connecting" : "unwatched" };
  let resolveRevalidated: () => void = () => {};
  const revalidated = new Promise<void>((resolve) => {
    resolveRevalidated = resolve;
  });
  if (!parts.hydrated) resolveRevalidated();

  return {
    get state() {
      return state;
    },
    revalidated,
    dispatch(action) {
      const previous = state;
      const next = transition(previous, action);
      if (next === previous) return;
      state = next;
      const wasLive = previous.status === "live";
      const isLive = next.status === "live";
      if (wasLive !== isLive) cache.setLive(isLive);
      if (action.type === "synced") resolveRevalidated();
      if (next.status === "closed") return;
      if (wasLive && !isLive) events.emit("stale", {});
      if (action.type === "resync-failed") events.emit("stale", {});
      if (action.type === "synced" && (isLive ? !wasLive : true)) {
        events.emit("resynchronized", { variables: action.variables });
      }
      if (next.status === "reconnecting") {
        events.emit("reconnecting", {
          attempt: next.attempt,
          delayMs: next.delayMs,
          error: next.error,
        });
      }
      if (next.status === "ended") events.emit("session-ended", { error: next.error });
    },
  };
}
