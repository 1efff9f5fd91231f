import type { ServerTimers, TimerHandle } from "../../src/server/common/timers.js";

/**
 * Server timers whose time moves only when a test says so. Given to
 * `createBridgeServer({ timers })` (or a store, a pool), they let a test
 * reach an expiry, a sampling tick or a restart backoff at once, instead of
 * sleeping for it; sockets, Redis and child processes still run in real
 * time.
 */
export interface ManualTimers extends ServerTimers {
  /**
   * Moves the clock on by `ms`, firing every timer due by then in order of
   * due time. Between firings, and after the last, the event loop takes a
   * turn, so what a timer started (a store call, a write) can run on.
   */
  advance(ms: number): Promise<void>;
  /** Timers scheduled and not yet fired or cleared. */
  readonly pending: number;
}

interface Scheduled {
  readonly id: number;
  readonly fn: () => void;
  readonly ms: number;
  readonly every: boolean;
  at: number;
  active: boolean;
}

/** Creates manual timers whose clock starts at `start` (default: the real time now). */
export function createManualTimers(start = Date.now()): ManualTimers {
  let clock = start;
  let nextId = 0;
  const scheduled = new Map<number, Scheduled>();

  const schedule = (fn: () => void, ms: number, every: boolean): TimerHandle => {
    const timer: Scheduled = {
      id: nextId++,
      fn,
      ms: Math.max(every ? 1 : 0, ms),
      every,
      at: 0,
      active: true,
    };
    timer.at = clock + timer.ms;
    scheduled.set(timer.id, timer);
    const handle = {
      timer,
      unref: () => handle,
      refresh: () => {
        timer.at = clock + timer.ms;
        if (!timer.active) {
          timer.active = true;
          scheduled.set(timer.id, timer);
        }
        return handle;
      },
    };
    return handle;
  };
  const clear = (handle: TimerHandle | undefined) => {
    const timer = (handle as { timer?: Scheduled } | undefined)?.timer;
    if (timer === undefined) return;
    timer.active = false;
    scheduled.delete(timer.id);
  };
  const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

  return {
    now: () => clock,
    setTimeout: (fn, ms) => schedule(fn, ms, false),
    setInterval: (fn, ms) => schedule(fn, ms, true),
    clearTimeout: clear,
    clearInterval: clear,
    get pending() {
      return scheduled.size;
    },
    async advance(ms) {
      const target = clock + ms;
      for (;;) {
        let due: Scheduled | undefined;
        for (const timer of scheduled.values()) {
          if (timer.at <= target && (due === undefined || timer.at < due.at)) due = timer;
        }
        if (due === undefined) break;
        clock = Math.max(clock, due.at);
        if (due.every) due.at += due.ms;
        else {
          due.active = false;
          scheduled.delete(due.id);
        }
        due.fn();
        await turn();
      }
      clock = target;
      await turn();
    },
  };
}
