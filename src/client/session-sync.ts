import { Code, ConnectError } from "@connectrpc/connect";
import type { VariableUpdate } from "../gen/snakepit/bridge/bridge_pb.js";
import type { Connection } from "./connection-state.js";
import type { LocalCopy } from "./local-copy.js";
import { decodeVariableBytes, type PersistenceAdapter } from "./persistence.js";
import type { SessionRpc } from "./session-rpc.js";
import type { TimerProvider } from "./timers.js";
import { decodeVariable } from "./variable-snapshot.js";
import { runWatch, type WatchOptions } from "./watch-coherence.js";

/**
 * Fills the cache from persistence before anything reads it, marking every
 * entry possibly stale. A session the server just created (again) has
 * nothing in common with what an earlier session of that id left behind:
 * its store is discarded instead. Never throws: a storage failure turns
 * persistence off and is handed to `onFailure`.
 */
export async function hydrate(
  adapter: PersistenceAdapter,
  local: LocalCopy,
  sessionId: string,
  created: boolean,
  onFailure: (error: unknown) => void,
): Promise<void> {
  try {
    if (created) {
      await adapter.clear(sessionId);
      return;
    }
    for (const bytes of await adapter.load(sessionId)) {
      local.cache.put(decodeVariable(decodeVariableBytes(bytes)), { possiblyStale: true });
    }
  } catch (error) {
    onFailure(error);
  }
}

/** Re-reads every cached variable in one call, in the "resyncing" state; returns how many. */
export function createResync(
  rpc: SessionRpc,
  local: LocalCopy,
  connection: Connection,
  signal: AbortSignal,
): () => Promise<number> {
  return async () => {
    const ids = [...local.cache.entries()].map((e) => e.variable.snapshot.id);
    if (ids.length === 0) return 0;
    const run = (async () => {
      const res = await rpc.client.getVariables(
        { sessionId: rpc.sessionId, variableIdentifiers: ids, includeMetadata: true },
        { ...rpc.call, signal },
      );
      for (const message of Object.values(res.variables)) local.accept(message, "server");
      for (const id of res.missingVariables) local.forget(id, undefined, "server");
    })();
    connection.dispatch({ type: "resync", run });
    await run;
    return ids.length;
  };
}

/** What keeps a context's cache in step with the server. */
export interface CoherenceParts {
  readonly rpc: SessionRpc;
  readonly local: LocalCopy;
  readonly connection: Connection;
  readonly resync: () => Promise<number>;
  /** The watch stream's options, or false for none. */
  readonly watch: false | WatchOptions;
  readonly hydrated: boolean;
  readonly timers: TimerProvider;
  readonly signal: AbortSignal;
}

/**
 * Starts coherence: the watch loop (which revalidates on every sync
 * marker), or without a watch a one-off revalidation of hydrated values.
 * Resolves when the loop or the revalidation is over.
 */
export function startCoherence(parts: CoherenceParts): Promise<void> {
  const { rpc, local, connection, resync } = parts;
  if (parts.watch !== false) {
    const onUpdate = (update: VariableUpdate) => {
      if (update.updateType === "deleted") {
        local.forget(update.variableId, update.variable?.name, "server");
      } else if (update.variable !== undefined) {
        local.accept(update.variable, "server", update.updateType.startsWith("optimization_"));
      }
    };
    return runWatch(
      {
        open: (signal) =>
          rpc.client.watchVariables(
            { sessionId: rpc.sessionId, syncMarker: true },
            { ...rpc.call, signal, timeoutMs: 0 },
          ),
        resync,
        onUpdate,
        dispatch: (action) => connection.dispatch(action),
        timers: parts.timers,
      },
      parts.watch,
      parts.signal,
    );
  }
  if (!parts.hydrated) return Promise.resolve();
  return resync().then(
    (variables) => connection.dispatch({ type: "synced", variables, live: false }),
    // The hydrated values stay marked possibly stale; reads fetch them.
    () => connection.dispatch({ type: "resync-failed" }),
  );
}

/**
 * Sends a Heartbeat every `intervalMs` until `signal` aborts or the server
 * says the session is gone ("ended"). Returns the function that stops it.
 */
export function startHeartbeat(
  rpc: SessionRpc,
  connection: Connection,
  intervalMs: number,
  timers: TimerProvider,
  signal: AbortSignal,
): () => void {
  let handle: unknown;
  const beat = () => {
    handle = timers.setTimeout(async () => {
      try {
        const res = await rpc.client.heartbeat({ sessionId: rpc.sessionId }, rpc.call);
        if (!res.sessionValid) {
          connection.dispatch({
            type: "ended",
            error: new ConnectError("session expired or was cleaned up", Code.NotFound),
          });
          return;
        }
      } catch {
        // A missed heartbeat is retried on the next beat; the watch stream
        // reports connectivity problems.
      }
      if (!signal.aborted) beat();
    }, intervalMs);
  };
  if (intervalMs > 0) beat();
  return () => {
    if (handle !== undefined) timers.clearTimeout(handle);
  };
}
