/**
 * A pending timer as the server holds it; Node's `Timeout` is one. A
 * replacement's handles implement the two Node methods the server uses.
 */
export interface TimerHandle {
  /**
   * Lets the process exit while the timer is pending (a sweep or a
   * keepalive must never keep a stopped server's process alive).
   */
  unref(): unknown;
  /**
   * Restarts the timer from now with its first delay. Per-write stall
   * timers re-arm with this on every piece of a reply, where clearing and
   * scheduling anew would cost an allocation each time.
   */
  refresh(): unknown;
}

/**
 * The timers and clock every server part schedules with: expiry sweeps,
 * memory sampling, keepalives, drain deadlines, restart backoff, Redis
 * reconnects. Given once, at construction (`createBridgeServer({ timers })`,
 * the stores' and the worker pool's options), and passed down.
 * BAD: calling setTimeout or Date.now directly / GOOD: going through this
 * provider, because a test must be able to drive the time the server waits
 * for (an expiry, a sampling interval, a backoff) instead of sleeping for it
 * and hoping the machine kept up.
 *
 * The client's `TimerProvider` (src/client/timers.ts) is the browser-safe
 * counterpart; this one adds intervals and `unref()`, which are Node's.
 */
export interface ServerTimers {
  /** Wall clock, in epoch milliseconds. */
  now(): number;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle | undefined): void;
  setInterval(fn: () => void, ms: number): TimerHandle;
  clearInterval(handle: TimerHandle | undefined): void;
}

type NodeTimeout = ReturnType<typeof setTimeout>;

/** Node's own timers and `Date.now`: the default everywhere. */
export const systemTimers: ServerTimers = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeTimeout | undefined),
  setInterval: (fn, ms) => setInterval(fn, ms),
  clearInterval: (handle) => clearInterval(handle as NodeTimeout | undefined),
};

/**
 * Resolves after `ms` on `timers`, or at once when `signal` aborts (a wait
 * between retries is cut short by a shutdown, never an error of its own).
 * With `unref`, the wait does not keep the process alive.
 */
export function delay(
  timers: ServerTimers,
  ms: number,
  options: { readonly signal?: AbortSignal | undefined; readonly unref?: boolean } = {},
): Promise<void> {
  const { signal } = options;
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve();
      return;
    }
    const done = () => {
      timers.clearTimeout(handle);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const handle = timers.setTimeout(done, ms);
    if (options.unref === true) handle.unref();
    signal?.addEventListener("abort", done, { once: true });
  });
}
