/**
 * Worker liveness: every worker address that registered tools is
 * health-checked (see worker-probe.ts); after a few failed checks in a row
 * its tools are withdrawn from the registry (not listed; a call is refused
 * with UNAVAILABLE, "gone"), and restored when it answers again or
 * registers again. With a shared store each replica checks for itself:
 * it withdraws what it cannot reach, which is what its calls would find.
 *
 * Checks stay bounded whatever workers register: one loop per distinct
 * address (so at most one check in flight per address), first checks
 * spread at random over an interval, a fixed number in flight overall,
 * a fixed number of connections, every timer unref'd.
 */

import { type ServerTimers, systemTimers, type TimerHandle } from "../common/timers.js";
import type { Logger } from "../observability/logger.js";
import type { ToolRegistry } from "./tool-registry.js";
import type { WorkerAddress } from "./worker-address.js";
import { createWorkerProbe, type WorkerProbe } from "./worker-probe.js";

/**
 * Where a registered worker stands: `up` (answering, or just registered),
 * `failing` (failed its last checks, fewer than the threshold; its tools
 * are still offered), `gone` (its tools are withdrawn), `unchecked` (checks
 * are off).
 */
export type WorkerState = "up" | "failing" | "gone" | "unchecked";

/**
 * A worker address holding registered tools, as the admin listing
 * (`GET /workers`) shows it beside the workers of other kinds.
 */
export interface RegisteredWorker {
  /** A worker that started itself and registered its tools. */
  readonly kind: "registered";
  /** `host:port`, as registered. */
  readonly address: string;
  readonly state: WorkerState;
  /** Names of its tools (global and session-scoped), sorted. */
  readonly tools: readonly string[];
  /** The worker_ids its tools were registered under, sorted. */
  readonly workerIds: readonly string[];
  /** Why its last check failed, while it is `failing` or `gone`. */
  readonly lastError: string | null;
  /** Since when it is in this state (or since it was first seen), ISO 8601. */
  readonly since: string;
}

/** Health checks of registered workers; see {@link createWorkerLiveness}. */
export interface WorkerLiveness {
  /** Starts checking (addresses registered before are checked too). */
  start(): void;
  /**
   * A registration at `address` just succeeded, here or on another
   * replica: the worker is there, so its tools are restored at once and its
   * failures forgotten.
   */
  registered(address: WorkerAddress): void;
  /** Every address holding live remote tools now, by address. */
  registeredWorkers(): RegisteredWorker[];
  /** How many addresses are in each state. */
  counts(): Record<WorkerState, number>;
  /** Stops every check and timer and closes the connections. */
  close(): void;
}

/** Options of {@link createWorkerLiveness}. */
export interface WorkerLivenessOptions {
  readonly tools: ToolRegistry;
  /** Between two checks of one address; 0 turns checking off. */
  readonly intervalMs: number;
  /** How long one check may take. */
  readonly timeoutMs: number;
  /** Failed checks in a row after which the tools are withdrawn. */
  readonly failures: number;
  /** Checks in flight at once, over all addresses (default 16). */
  readonly maxConcurrentChecks?: number;
  /** Connections kept open for checks (default 64). */
  readonly maxConnections?: number;
  readonly logger: Logger;
  /** Clock of the states' `since` (default: `timers.now`). */
  readonly now?: () => number;
  /** Schedules the checks (default: Node's timers). */
  readonly timers?: ServerTimers;
}

interface Entry {
  readonly address: WorkerAddress;
  state: WorkerState;
  failures: number;
  lastError: string | undefined;
  since: number;
  timer: TimerHandle | undefined;
  removed: boolean;
}

/** Creates the checks of a registry's worker addresses. */
export function createWorkerLiveness(options: WorkerLivenessOptions): WorkerLiveness {
  const { tools, intervalMs, logger } = options;
  const timers = options.timers ?? systemTimers;
  const now = options.now ?? timers.now;
  const checking = intervalMs > 0;
  const probe: WorkerProbe = createWorkerProbe({
    timeoutMs: options.timeoutMs,
    maxConnections: options.maxConnections ?? 64,
    // Kept across checks; dropped when checks stop coming.
    idleMs: Math.max(3 * intervalMs, 10_000),
    timers,
  });
  const gate = createGate(options.maxConcurrentChecks ?? 16);
  const entries = new Map<string, Entry>();
  const stopping = new AbortController();
  let running = false;
  let syncTimer: TimerHandle | undefined;

  const names = (address: string) => {
    const group = tools.remoteByAddress().get(address);
    return [...new Set(group?.tools.map((t) => t.name))].sort();
  };

  const schedule = (entry: Entry, delayMs: number) => {
    if (!running || entry.removed) return;
    entry.timer = timers.setTimeout(() => void check(entry), delayMs);
    entry.timer.unref();
  };

  const withdraw = (entry: Entry) => {
    const { display } = entry.address;
    tools.setWithdrawn(display, true);
    entry.state = "gone";
    entry.since = now();
    const list = names(display);
    logger.warn(
      `worker ${display} is gone (${entry.failures} health checks failed in a row, the last: ${entry.lastError}); its tools are withdrawn: ${summary(list)}`,
      { event: "worker_withdrawn", address: display, tools: list.slice(0, 32) },
    );
  };

  const restore = (entry: Entry, why: string) => {
    const { display } = entry.address;
    const wasGone = entry.state === "gone";
    tools.setWithdrawn(display, false);
    if (entry.state !== "up") entry.since = now();
    entry.state = "up";
    entry.failures = 0;
    entry.lastError = undefined;
    if (!wasGone) return;
    const list = names(display);
    logger.info(`worker ${display} ${why}; its tools are restored: ${summary(list)}`, {
      event: "worker_restored",
      address: display,
      tools: list.slice(0, 32),
    });
  };

  const settle = (entry: Entry, failure: string | undefined) => {
    if (failure === undefined) {
      restore(entry, "answers again");
      return;
    }
    entry.failures++;
    entry.lastError = failure;
    if (entry.state === "up") {
      entry.state = "failing";
      entry.since = now();
    }
    if (entry.state === "failing" && entry.failures >= options.failures) withdraw(entry);
  };

  const check = async (entry: Entry) => {
    entry.timer = undefined;
    await gate.acquire();
    if (!running || entry.removed) {
      gate.release();
      return;
    }
    // Elapsed time on the monotonic clock: `now` may be a test's, or jump.
    const started = performance.now();
    let failure: string | undefined;
    try {
      failure = await probe.check(entry.address, stopping.signal);
    } finally {
      gate.release();
    }
    if (!running || entry.removed) return;
    settle(entry, failure);
    // At a steady rate per address, so checks spread at first stay spread;
    // never right after a check that took the whole interval.
    const elapsed = performance.now() - started;
    schedule(entry, Math.max(intervalMs - elapsed, intervalMs / 10));
  };

  const add = (address: WorkerAddress): Entry => {
    const entry: Entry = {
      address,
      state: "up",
      failures: 0,
      lastError: undefined,
      since: now(),
      timer: undefined,
      removed: false,
    };
    entries.set(address.display, entry);
    // The first check somewhere in the interval: many workers registering
    // at once are not all checked at once.
    schedule(entry, Math.random() * intervalMs);
    return entry;
  };

  const remove = (entry: Entry) => {
    entry.removed = true;
    timers.clearTimeout(entry.timer);
    entries.delete(entry.address.display);
    tools.setWithdrawn(entry.address.display, false);
    probe.forget(entry.address);
  };

  /** Follows the registry: addresses whose tools all ended are no longer checked. */
  const sync = () => {
    if (!checking) return;
    const groups = tools.remoteByAddress();
    for (const [display, group] of groups) if (!entries.has(display)) add(group.address);
    for (const [display, entry] of entries) if (!groups.has(display)) remove(entry);
  };

  return {
    start() {
      if (running || !checking || stopping.signal.aborted) return;
      running = true;
      sync();
      for (const entry of entries.values()) {
        if (entry.timer === undefined) schedule(entry, Math.random() * intervalMs);
      }
      syncTimer = timers.setInterval(sync, intervalMs);
      syncTimer.unref();
    },

    registered(address) {
      if (!checking || stopping.signal.aborted) return;
      const entry = entries.get(address.display);
      if (entry === undefined) add(address);
      else if (checking) restore(entry, "registered again");
    },

    registeredWorkers() {
      sync();
      const groups = tools.remoteByAddress();
      return [...groups]
        .map(([display, group]): RegisteredWorker => {
          const entry = entries.get(display);
          return {
            kind: "registered",
            address: display,
            state: entry?.state ?? (checking ? "up" : "unchecked"),
            tools: [...new Set(group.tools.map((t) => t.name))].sort(),
            workerIds: [
              ...new Set(
                group.tools.map((t) => (t.target.kind === "remote" ? t.target.workerId : "")),
              ),
            ].sort(),
            lastError: entry?.lastError ?? null,
            since: new Date(entry?.since ?? now()).toISOString(),
          };
        })
        .sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0));
    },

    counts() {
      const counts: Record<WorkerState, number> = { up: 0, failing: 0, gone: 0, unchecked: 0 };
      if (!checking) counts.unchecked = tools.remoteByAddress().size;
      for (const entry of entries.values()) counts[entry.state]++;
      return counts;
    },

    close() {
      running = false;
      stopping.abort();
      timers.clearInterval(syncTimer);
      for (const entry of [...entries.values()]) {
        entry.removed = true;
        timers.clearTimeout(entry.timer);
      }
      entries.clear();
      gate.close();
      probe.close();
    },
  };
}

/** A few tool names for a log line. */
function summary(names: readonly string[]): string {
  if (names.length === 0) return "(none left)";
  const shown = names.slice(0, 8).join(", ");
  return names.length > 8 ? `${shown} and ${names.length - 8} more` : shown;
}

/**
 * At most `max` holders at once; the others wait in order. `close()` lets
 * every waiter through (they find the liveness closed and stop).
 */
function createGate(max: number) {
  let held = 0;
  let closed = false;
  const waiting: (() => void)[] = [];
  return {
    acquire(): Promise<void> {
      if (closed || held < max) {
        held++;
        return Promise.resolve();
      }
      return new Promise((resolve) => waiting.push(resolve));
    },
    release() {
      const next = waiting.shift();
      if (next !== undefined) next();
      else held--;
    },
    close() {
      closed = true;
      for (const next of waiting.splice(0)) {
        held++;
        next();
      }
    },
  };
}
