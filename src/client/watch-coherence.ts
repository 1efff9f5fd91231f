import { Code, ConnectError } from "@connectrpc/connect";
import type { VariableUpdate } from "../gen/snakepit/bridge/bridge_pb.js";
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
  /** Reads the current values of everything cached, in one call. */
  readonly resync: () => Promise<void>;
  readonly onUpdate: (update: VariableUpdate) => void;
  /** The stream is healthy and caught up (true) or lost (false). */
  readonly setLive: (live: boolean) => void;
  readonly onReconnecting: (attempt: number, delayMs: number, error: ConnectError) => void;
  readonly onSessionEnded: (error: ConnectError) => void;
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
      try {
        for await (const update of deps.open(signal)) {
          if (update.updateType === "sync") {
            await deps.resync();
            deps.setLive(true);
            attempt = 0;
          } else {
            deps.onUpdate(update);
          }
        }
        // A clean end (e.g. a proxy's idle timeout): reconnect at once.
        error = new ConnectError("watch stream ended", Code.Unavailable);
      } catch (e) {
        if (signal.aborted) break;
        error = ConnectError.from(e);
      }
      deps.setLive(false);
      if (error.code === Code.NotFound) {
        deps.onSessionEnded(error);
        return;
      }
      const cap = Math.min(max, initial * 2 ** attempt);
      const delayMs =
        error.code === Code.ResourceExhausted && attempt === 0 ? 0 : Math.round(random() * cap);
      attempt++;
      deps.onReconnecting(attempt, delayMs, error);
      try {
        await sleep(deps.timers, delayMs, signal);
      } catch {
        // Aborted while waiting: the context is closing.
        break;
      }
    }
  })();
}
