import { Code, ConnectError } from "@connectrpc/connect";
import type { MemoryBudget } from "../limits/memory-budget.js";

/**
 * A gate for expensive work: at most `maxRunning` holders at once, and the
 * callers waiting for a slot served round-robin by client, so a client with
 * many calls waiting delays another client's one call by at most one turn
 * per client, not by its whole backlog.
 */
export interface FairGate {
  /**
   * Waits for a slot; resolves to its release (idempotent). Refuses at once
   * with RESOURCE_EXHAUSTED when the process is over its memory budget, or
   * when `bounded` and the client already has its most calls waiting.
   * While waiting, an abort of `signal` (the caller left, or its deadline
   * passed) removes the call and rejects with CANCELED or DEADLINE_EXCEEDED.
   */
  acquire(client: string, signal: AbortSignal, bounded: boolean): Promise<() => void>;
  /** Holders now. */
  readonly running: number;
  /** Callers waiting now, all clients together. */
  readonly waiting: number;
}

/** Options of {@link createFairGate}. */
export interface FairGateOptions {
  /** Holders at once (at least 1). */
  readonly maxRunning: number;
  /** Calls one client may have waiting. */
  readonly maxWaitingPerClient: number;
  /**
   * The process's memory budget (`--memory-budget`): while it is exceeded,
   * new calls are refused with its error; calls already running or
   * waiting go on.
   */
  readonly memory?: Pick<MemoryBudget, "check">;
}

interface Waiter {
  readonly grant: (release: () => void) => void;
}

/** Creates a gate; see {@link FairGate}. */
export function createFairGate(options: FairGateOptions): FairGate {
  const maxRunning = Math.max(1, options.maxRunning);
  // Waiting calls by client. A Map keeps insertion order: the next slot goes
  // to the first client, which then moves to the back if it has more.
  const queues = new Map<string, Waiter[]>();
  let running = 0;
  let waiting = 0;

  const slot = (): (() => void) => {
    running++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      running--;
      handOver();
    };
  };

  /** Gives free slots to waiters, one client's turn at a time. */
  const handOver = () => {
    while (running < maxRunning) {
      const next = queues.entries().next();
      if (next.done === true) return;
      const [client, queue] = next.value;
      const waiter = queue.shift() as Waiter;
      queues.delete(client);
      if (queue.length > 0) queues.set(client, queue);
      waiting--;
      waiter.grant(slot());
    }
  };

  return {
    get running() {
      return running;
    },
    get waiting() {
      return waiting;
    },

    acquire(client, signal, bounded) {
      if (signal.aborted) return Promise.reject(abortError(signal));
      try {
        options.memory?.check();
      } catch (e) {
        return Promise.reject(e);
      }
      if (running < maxRunning && waiting === 0) return Promise.resolve(slot());
      const queue = queues.get(client) ?? [];
      if (bounded && queue.length >= options.maxWaitingPerClient) {
        return Promise.reject(
          new ConnectError(
            `this client has ${queue.length} expensive tool calls waiting for one of the ${maxRunning} slots (--max-expensive-tool-calls); the limit is ${options.maxWaitingPerClient} (--max-queued-expensive-calls-per-client); wait for one to finish`,
            Code.ResourceExhausted,
          ),
        );
      }
      return new Promise((resolve, reject) => {
        const onAbort = () => {
          const at = queue.indexOf(waiter);
          if (at === -1) return;
          queue.splice(at, 1);
          waiting--;
          if (queue.length === 0 && queues.get(client) === queue) queues.delete(client);
          reject(abortError(signal));
        };
        const waiter: Waiter = {
          grant: (release) => {
            signal.removeEventListener("abort", onAbort);
            resolve(release);
          },
        };
        queue.push(waiter);
        if (!queues.has(client)) queues.set(client, queue);
        waiting++;
        signal.addEventListener("abort", onAbort, { once: true });
      });
    },
  };
}

/** Why a waiting call ended: the deadline's own error, or a cancellation. */
function abortError(signal: AbortSignal): ConnectError {
  const reason: unknown = signal.reason;
  if (reason instanceof ConnectError) return reason;
  return new ConnectError(
    "the call was cancelled while it waited for an expensive tool slot",
    Code.Canceled,
  );
}
