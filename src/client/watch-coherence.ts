import { Code, ConnectError } from "@connectrpc/connect";
import type { VariableUpdate } from "../gen/snakepit/bridge/bridge_pb.js";
import type { ConnectionAction } from "./connection-state.js";
import { sleep, type TimerProvider } from "./timers.js";

/** Reconnection backoff of the watch stream. */
export interface WatchOptions {
  /** First retry delay cap in ms (default 250). */
  readonly initialBackoffMs?: number;
  /** Largest retry delay cap in ms (default 10,000). */
  readonly maxBackoffMs?: number;
}

/** What the watch loop needs from its SessionContext. */
export interface WatchDeps {
  readonly open: (signal: AbortSignal) => AsyncIterable<VariableUpdate>;
  /** Reads the current values of everything cached, in one call; returns how many. */
  readonly resync: () => Promise<number>;
  readonly onUpdate: (update: VariableUpdate) => void;
  /** Reports where the stream stands (see connection-state.ts). */
  readonly dispatch: (action: ConnectionAction) => void;
  readonly timers: TimerProvider;
  readonly random?: () => number;
}

/**
 * Keeps the cache coherent with the server: watches the whole session with a
 * sync marker; once the marker arrives every later change is on the stream,
 * so one batch read of the cached variables closes any gap and the cache
 * goes live. On loss it falls back to TTLs, reconnects with exponential
 * backoff and full jitter (immediately when the server said the watcher fell
 * behind), and resynchronizes again. A session that ended stops the loop.
 */
export function runWatch(
  deps: WatchDeps,
  options: WatchOptions,
  signal: AbortSignal,
): Promise<void> {
  const initial = options.initialBackoffMs ?? 250;
  const max = options.maxBackoffMs ?? 10_000;
  const random = deps.random ?? Math.random;

  return (async () => {
    let attempt = 0;
    while (!signal.aborted) {
      let error: ConnectError;
      deps.dispatch({ type: "open" });
      try {
        for await (const update of deps.open(signal)) {
          if (update.updateType === "sync") {
            const variables = await deps.resync();
            deps.dispatch({ type: "synced", variables, live: true });
            attempt = 0;
          } else if (update.updateType !== "keepalive") {
            // A keepalive only keeps proxies from cutting a quiet stream.
            deps.onUpdate(update);
          }
        }
        // A clean end (e.g. a proxy's idle timeout): reconnect at once.
        error = new ConnectError("watch stream ended", Code.Unavailable);
      } catch (e) {
        if (signal.aborted) break;
        error = ConnectError.from(e);
      }
      if (error.code === Code.NotFound) {
        deps.dispatch({ type: "ended", error });
        return;
      }
      const cap = Math.min(max, initial * 2 ** attempt);
      const delayMs =
        error.code === Code.ResourceExhausted && attempt === 0 ? 0 : Math.round(random() * cap);
      attempt++;
      deps.dispatch({ type: "reconnect", attempt, delayMs, error });
      try {
        await sleep(deps.timers, delayMs, signal);
      } catch {
        // Aborted while waiting: the context is closing.
        break;
      }
    }
  })();
}
