import { getHeapStatistics } from "node:v8";
import { Code, ConnectError } from "@connectrpc/connect";
import { formatBytes } from "../common/message-text.js";
import { type ServerTimers, systemTimers } from "../common/timers.js";

/**
 * The process-wide memory budget (`--memory-budget`): while the memory the
 * server's own data occupies is above it, calls that would make the server
 * hold more are refused, so a flood of growth is turned away with a clear
 * error well before V8 runs out of heap and the process dies for everyone.
 *
 * What is measured is the JavaScript heap in use plus external memory
 * (buffers and array buffers), not the resident set: that is where sessions,
 * values, replies and buffers live, and it falls as soon as the garbage
 * collector frees what ended sessions held. The resident set also counts
 * pages the allocator keeps after they were freed, so a budget on it would
 * keep refusing growth long after the data is gone.
 */
export interface MemoryBudget {
  /** The budget in bytes; 0 when the check is off. */
  readonly limit: number;
  /** Bytes in use at the last sample. */
  readonly used: number;
  /** Whether the last sample was above the budget. */
  readonly over: boolean;
  /** Throws RESOURCE_EXHAUSTED while the process is above its budget. */
  check(): void;
  /** Stops sampling. */
  close(): void;
}

/** Options of {@link createMemoryBudget}. */
export interface MemoryBudgetOptions {
  /** Bytes; 0 turns the check off. */
  readonly limit: number;
  /** How often memory is sampled (default 250 ms). */
  readonly intervalMs?: number;
  /** What is measured; replaceable so tests can choose the figure. */
  readonly sample?: () => number;
  /** Schedules the sampling (default: Node's timers). */
  readonly timers?: ServerTimers;
}

/** Heap in use plus external memory (array buffers are part of external). */
export function memoryInUse(): number {
  const { heapUsed, external } = process.memoryUsage();
  return heapUsed + external;
}

/**
 * The budget `--memory-budget` names: `auto` is three quarters of V8's heap
 * limit, leaving the last quarter for the garbage collector to work in and
 * for calls already admitted to finish.
 */
export function resolveMemoryBudget(setting: number | "auto"): number {
  if (setting !== "auto") return setting;
  return Math.floor(getHeapStatistics().heap_size_limit * 0.75);
}

/** RESOURCE_EXHAUSTED for growth while the process is above its budget. */
export function memoryBudgetReached(used: number, limit: number): ConnectError {
  return new ConnectError(
    `the server is at its memory budget (--memory-budget: ${formatBytes(used)} in use, the budget is ${formatBytes(limit)}); try again later`,
    Code.ResourceExhausted,
  );
}

/**
 * Samples memory on an unref'd timer (never per call: reading the heap's
 * figures costs microseconds, and a call only needs the last verdict).
 */
export function createMemoryBudget(options: MemoryBudgetOptions): MemoryBudget {
  const { limit } = options;
  const sample = options.sample ?? memoryInUse;
  const timers = options.timers ?? systemTimers;
  let used = sample();
  const timer =
    limit > 0
      ? timers.setInterval(() => {
          used = sample();
        }, options.intervalMs ?? 250)
      : undefined;
  // The sampler must never keep a process alive on its own.
  timer?.unref();
  const over = () => limit > 0 && used > limit;
  return {
    limit,
    get used() {
      return limit > 0 ? used : sample();
    },
    get over() {
      return over();
    },
    check() {
      if (over()) throw memoryBudgetReached(used, limit);
    },
    close() {
      timers.clearInterval(timer);
    },
  };
}
