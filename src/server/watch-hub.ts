import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { type VariableUpdate, VariableUpdateSchema } from "../gen/snakepit/bridge/bridge_pb.js";
import type { StoreEvent, VariableChange, VariableRecord } from "./store/session-store.js";
import { timestamp, toVariableMessage } from "./variable-message.js";

/** Options of {@link createWatchHub}. */
export interface WatchHubOptions {
  /**
   * Updates buffered per watcher. A watcher that falls further behind is
   * ended with RESOURCE_EXHAUSTED instead of slowing writers down.
   */
  readonly bufferSize: number;
  /** Streams open on one session; more are refused with RESOURCE_EXHAUSTED. */
  readonly maxPerSession?: number;
  /** Streams open in total; more are refused with RESOURCE_EXHAUSTED. */
  readonly maxTotal?: number;
  /** Clock in epoch milliseconds, for the timestamps of initial values and sync markers. */
  readonly now?: () => number;
}

/** What a watcher wants to see. */
export interface WatchFilter {
  /** Variable ids and names to watch; empty watches the whole session. */
  readonly identifiers: ReadonlySet<string>;
}

/** One open watch stream. */
export interface Watcher extends AsyncIterable<VariableUpdate> {
  /** Queues an update made outside the change feed (initial values). */
  pushInitial(record: VariableRecord): void;
  /** Queues the "sync" marker (see WatchVariablesRequest.sync_marker). */
  pushSyncMarker(): void;
}

/**
 * Fans store changes out to watch streams. Each watcher has its own bounded
 * queue: delivering a change costs an append per watcher, never a wait, so a
 * slow watcher cannot stall writers or other watchers. One message is built
 * per change and shared by every watcher.
 */
export interface WatchHub {
  /**
   * Opens a watcher; it is removed as soon as `signal` aborts or the
   * stream ends, whatever its consumer is doing.
   *
   * @throws ConnectError RESOURCE_EXHAUSTED beyond the per-session or total limit.
   */
  watch(sessionId: string, filter: WatchFilter, signal: AbortSignal): Watcher;
  /**
   * Ends every stream of a session (cleanup or expiry) with the error
   * `reason` makes; it is only called when the session has streams.
   */
  endSession(sessionId: string, reason: () => ConnectError): number;
  /** Ends every stream (server shutdown). */
  endAll(error?: ConnectError): void;
  readonly size: number;
  /** Feed for the store's events. */
  onStoreEvent(event: StoreEvent): void;
}

interface WatcherState {
  readonly filter: WatchFilter;
  readonly queue: VariableUpdate[];
  /** Highest value version delivered per variable id, to drop duplicates. */
  readonly seen: Map<string, number>;
  wake: (() => void) | undefined;
  done: boolean;
  error: ConnectError | undefined;
}

/** Creates a watch hub. */
export function createWatchHub(options: WatchHubOptions): WatchHub {
  const now = options.now ?? Date.now;
  const bySession = new Map<string, Set<WatcherState>>();
  let size = 0;

  const finish = (state: WatcherState, error?: ConnectError) => {
    if (state.done) return;
    state.done = true;
    state.error = error;
    state.wake?.();
  };

  const offer = (
    state: WatcherState,
    update: VariableUpdate,
    record: VariableRecord,
    kind: string,
    bounded = true,
  ) => {
    if (state.done) return;
    if (kind === "value_changed" || kind === "initial_value") {
      const seen = state.seen.get(record.id);
      if (seen !== undefined && record.version <= seen) return;
      state.seen.set(record.id, record.version);
    }
    if (bounded && state.queue.length >= options.bufferSize) {
      state.queue.length = 0;
      finish(
        state,
        new ConnectError(
          `watcher fell more than ${options.bufferSize} updates behind; resynchronize with GetVariables and watch again`,
          Code.ResourceExhausted,
        ),
      );
      return;
    }
    state.queue.push(update);
    state.wake?.();
  };

  const matches = (filter: WatchFilter, record: VariableRecord) =>
    filter.identifiers.size === 0 ||
    filter.identifiers.has(record.id) ||
    filter.identifiers.has(record.name);

  const deliver = (change: VariableChange) => {
    const watchers = bySession.get(change.sessionId);
    if (watchers === undefined) return;
    let update: VariableUpdate | undefined;
    for (const state of watchers) {
      if (!matches(state.filter, change.variable)) continue;
      update ??= toUpdate(change);
      offer(state, update, change.variable, change.kind);
    }
  };

  return {
    get size() {
      return size;
    },

    watch(sessionId, filter, signal) {
      const open = bySession.get(sessionId)?.size ?? 0;
      if (options.maxPerSession !== undefined && open >= options.maxPerSession) {
        throw new ConnectError(
          `the session has ${open} watch streams open; the limit is ${options.maxPerSession} (--max-watchers-per-session); close one or share a stream`,
          Code.ResourceExhausted,
        );
      }
      if (options.maxTotal !== undefined && size >= options.maxTotal) {
        throw new ConnectError(
          `the server has ${size} watch streams open; the limit is ${options.maxTotal} (--max-watchers); try again later`,
          Code.ResourceExhausted,
        );
      }
      const state: WatcherState = {
        filter,
        queue: [],
        seen: new Map(),
        wake: undefined,
        done: false,
        error: undefined,
      };
      let set = bySession.get(sessionId);
      if (set === undefined) {
        set = new Set();
        bySession.set(sessionId, set);
      }
      set.add(state);
      size++;
      const detach = () => {
        const current = bySession.get(sessionId);
        if (current?.delete(state)) {
          size--;
          if (current.size === 0) bySession.delete(sessionId);
        }
      };
      // The stream's end (a reset, the client gone) removes the watcher at
      // once: the generator below may be suspended in a write that never
      // completes, so its finally block cannot be relied on to run.
      const onAbort = () => {
        finish(state);
        state.queue.length = 0;
        detach();
      };
      signal.addEventListener("abort", onAbort, { once: true });
      if (signal.aborted) onAbort();

      async function* stream(): AsyncGenerator<VariableUpdate> {
        try {
          for (;;) {
            const next = state.queue.shift();
            if (next !== undefined) {
              yield next;
              continue;
            }
            if (state.done) break;
            await new Promise<void>((resolve) => {
              state.wake = resolve;
            });
            state.wake = undefined;
          }
          if (state.error !== undefined) throw state.error;
        } finally {
          signal.removeEventListener("abort", onAbort);
          detach();
        }
      }

      const iterable = stream();
      return {
        [Symbol.asyncIterator]: () => iterable,
        pushInitial(record) {
          offer(
            state,
            create(VariableUpdateSchema, {
              variableId: record.id,
              variable: toVariableMessage(record),
              updateSource: "server",
              timestamp: timestamp(now()),
              updateType: "initial_value",
            }),
            record,
            "initial_value",
            // Initial values are bounded by the session's variable limit,
            // not by how fast the watcher reads.
            false,
          );
        },
        pushSyncMarker() {
          state.queue.push(
            create(VariableUpdateSchema, {
              updateSource: "server",
              timestamp: timestamp(now()),
              updateType: "sync",
            }),
          );
          state.wake?.();
        },
      };
    },

    endSession(sessionId, reason) {
      const watchers = bySession.get(sessionId);
      if (watchers === undefined) return 0;
      const error = reason();
      for (const state of watchers) finish(state, error);
      return watchers.size;
    },

    endAll(error) {
      for (const watchers of bySession.values()) {
        for (const state of watchers) finish(state, error);
      }
    },

    onStoreEvent(event) {
      if (event.type === "change") deliver(event.change);
    },
  };
}

function toUpdate(change: VariableChange): VariableUpdate {
  return create(VariableUpdateSchema, {
    variableId: change.variable.id,
    variable: toVariableMessage(change.variable),
    updateSource: change.source,
    updateMetadata: { ...change.metadata },
    timestamp: timestamp(change.timestamp),
    updateType: change.kind,
  });
}
