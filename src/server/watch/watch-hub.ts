import { Code, ConnectError } from "@connectrpc/connect";
import type { VariableUpdate } from "../../gen/snakepit/bridge/bridge_pb.js";
import { type ServerTimers, systemTimers, type TimerHandle } from "../common/timers.js";
import type { StoreEvent, VariableChange, VariableRecord } from "../store/session-store.js";
import {
  changeUpdate,
  type EncodedUpdate,
  initialUpdate,
  keepaliveUpdate,
  syncUpdate,
} from "./watch-update.js";

/** Options of {@link createWatchHub}. */
export interface WatchHubOptions {
  /**
   * Updates a stream that cannot keep up may have waiting, after keeping
   * only the latest one per variable; beyond, it is ended with
   * RESOURCE_EXHAUSTED instead of slowing writers down.
   */
  readonly bufferSize: number;
  /** Streams open on one session; more are refused with RESOURCE_EXHAUSTED. */
  readonly maxPerSession?: number;
  /** Streams open in total; more are refused with RESOURCE_EXHAUSTED. */
  readonly maxTotal?: number;
  /**
   * Streams one client (as the caller resolver groups them) may have open,
   * across all sessions; more are refused with RESOURCE_EXHAUSTED, so one
   * client cannot take every stream the server holds.
   */
  readonly maxPerClient?: number;
  /**
   * An idle stream carries a keepalive update at least this often (0: never),
   * so that proxies' idle timeouts do not end a quiet watch.
   */
  readonly keepaliveMs?: number;
  /** Clock for the updates' timestamps (default: `timers.now`). */
  readonly now?: () => number;
  /** Runs the keepalive sweep (default: Node's timers). */
  readonly timers?: ServerTimers;
  /**
   * Follows a session's changes while it has streams (SessionStore.follow):
   * called when a session gains its first stream, and the function it
   * resolves to once it has lost its last (default: nothing to follow).
   */
  readonly follow?: (sessionId: string) => Promise<() => void>;
}

/** What a watcher wants to see. */
export interface WatchFilter {
  /** Variable ids and names to watch; empty watches the whole session. */
  readonly identifiers: ReadonlySet<string>;
}

/**
 * Where a directly written stream's frames go (see watch-endpoint.ts).
 * The hub writes only while `write` says the transport takes more, and
 * resumes when the stream calls {@link Watcher.resume}.
 */
export interface FrameSink {
  /** Wants gRPC-Web's text-mode frames ({@link EncodedUpdate.textFrame}). */
  readonly text?: boolean;
  /** Writes encoded frames; false once the transport holds more than it should. */
  write(frames: Uint8Array): boolean;
  /** Ends the stream with OK (`undefined`) or the error. */
  end(error: ConnectError | undefined): void;
}

/**
 * One open watch stream. Without a sink it is read as an async iterable of
 * messages (connect-node's streams); with one, the hub writes its frames.
 */
export interface Watcher extends AsyncIterable<VariableUpdate> {
  /** Queues a variable's current value (before any change of it). */
  pushInitial(record: VariableRecord): void;
  /** Queues the "sync" marker (see WatchVariablesRequest.sync_marker). */
  pushSyncMarker(): void;
  /** The sink's transport drained: write what waited. */
  resume(): void;
  /** Ends the stream: what waits is sent first, then the status. */
  end(error?: ConnectError): void;
}

/**
 * Fans store changes out to watch streams. Each change is encoded once and
 * the same bytes are written to every stream that gets it. A stream whose
 * transport does not drain keeps only the latest update per variable until
 * it does (conflation); one that still falls too far behind is ended, so a
 * slow reader never stalls writers or other readers. A fan-out to many
 * streams is delivered in slices, yielding to other work in between.
 */
export interface WatchHub {
  /**
   * Opens a watcher; it is removed as soon as `signal` aborts or the
   * stream ends, whatever its consumer is doing.
   *
   * `client` names the public client opening it, counted against the
   * per-client limit; workers (and embedders) pass none.
   *
   * @throws ConnectError RESOURCE_EXHAUSTED beyond the per-session, per-client or total limit.
   */
  watch(
    sessionId: string,
    filter: WatchFilter,
    signal: AbortSignal,
    sink?: FrameSink,
    client?: string,
  ): Watcher;
  /**
   * Ends every stream of a session (cleanup or expiry) with the error
   * `reason` makes; it is only called when the session has streams.
   */
  endSession(sessionId: string, reason: () => ConnectError): number;
  /** Ends every stream (server shutdown, or resynchronization). */
  endAll(error?: ConnectError): void;
  /** Whether a session has open streams (the store reads changes only for those). */
  watches(sessionId: string): boolean;
  /**
   * Follows a session's changes until the function it resolves to is
   * called, and as long as it has streams: a stream opened before that
   * call gets every change committed once this resolved. Call it before
   * reading a new stream's initial values.
   */
  follow(sessionId: string): Promise<() => void>;
  readonly size: number;
  /** Feed for the store's events, from this replica or others. */
  onStoreEvent(event: StoreEvent): void;
}

interface WatcherState {
  readonly sessionId: string;
  /** The public client it counts against, if any. */
  readonly client: string | undefined;
  readonly filter: WatchFilter;
  readonly sink: FrameSink | undefined;
  /** Updates not yet handed on, at most one per key, oldest first. */
  readonly pending: Map<string, EncodedUpdate>;
  /** The sink's transport is full. */
  blocked: boolean;
  /** Highest value version sent per variable id, once initial values were queued. */
  seen: Map<string, number> | undefined;
  /** Something was sent since the keepalive sweep last looked. */
  active: boolean;
  bucket: number;
  wake: (() => void) | undefined;
  done: boolean;
  error: ConnectError | undefined;
}

/** Streams one slice of a fan-out reaches before yielding to other work. */
const SLICE = 1024;
/** Keepalive buckets: each sweep tick looks at one, spreading the writes. */
const BUCKETS = 8;

/** Creates a watch hub. */
export function createWatchHub(options: WatchHubOptions): WatchHub {
  const timers = options.timers ?? systemTimers;
  const now = options.now ?? timers.now;
  const bySession = new Map<string, Set<WatcherState>>();
  /** Open streams per public client; clients with none hold no entry. */
  const byClient = new Map<string, number>();
  const buckets = Array.from({ length: BUCKETS }, () => new Set<WatcherState>());
  let size = 0;
  let nextBucket = 0;

  // What the store follows for this hub: a session's streams and callers
  // of follow() each hold it; the last to let go stops following it.
  const following = new Map<string, { holders: number; ready: Promise<() => void> }>();
  const hold = (sessionId: string) => {
    let f = following.get(sessionId);
    if (f === undefined) {
      f = { holders: 0, ready: options.follow?.(sessionId) ?? Promise.resolve(() => undefined) };
      following.set(sessionId, f);
    }
    f.holders++;
    return f;
  };
  const letGo = (sessionId: string) => {
    const f = following.get(sessionId);
    if (f === undefined || --f.holders > 0) return;
    following.delete(sessionId);
    f.ready.then(
      (stop) => stop(),
      () => undefined, // It never began: nothing to stop (its caller was told).
    );
  };

  const overflow = () =>
    new ConnectError(
      `watcher fell more than ${options.bufferSize} updates behind (after keeping only the latest per variable); resynchronize with GetVariables and watch again`,
      Code.ResourceExhausted,
    );

  /** Hands waiting updates to the sink while it takes them. */
  const flush = (state: WatcherState) => {
    const sink = state.sink;
    if (sink === undefined || state.pending.size === 0) return;
    const frames: Uint8Array[] = [];
    for (const update of state.pending.values()) {
      frames.push(sink.text === true ? update.textFrame : update.frame);
    }
    state.pending.clear();
    state.active = true;
    state.blocked = !sink.write(frames.length === 1 ? (frames[0] as Uint8Array) : concat(frames));
  };

  const finish = (state: WatcherState, error?: ConnectError) => {
    if (state.done) return;
    state.done = true;
    state.error = error;
    detach(state);
    if (state.sink !== undefined) {
      flush(state);
      state.sink.end(error);
    } else {
      state.wake?.();
    }
  };

  const offer = (state: WatcherState, update: EncodedUpdate, bounded = true) => {
    if (state.done) return;
    if (update.version !== undefined && state.seen !== undefined) {
      const seen = state.seen.get(update.key);
      if (seen !== undefined && update.version <= seen) return;
      state.seen.set(update.key, update.version);
    }
    if (state.sink !== undefined && !state.blocked && state.pending.size === 0) {
      state.active = true;
      state.blocked = !state.sink.write(state.sink.text === true ? update.textFrame : update.frame);
      return;
    }
    // Conflation: a newer update of the same variable replaces the waiting
    // one and goes last, where its commit order puts it.
    state.pending.delete(update.key);
    if (bounded && state.pending.size >= options.bufferSize) {
      state.pending.clear();
      finish(state, overflow());
      return;
    }
    state.pending.set(update.key, update);
    state.wake?.();
  };

  const matches = (filter: WatchFilter, record: VariableRecord) =>
    filter.identifiers.size === 0 ||
    filter.identifiers.has(record.id) ||
    filter.identifiers.has(record.name);

  // Fan-outs waiting for their turn, oldest first: a session's changes
  // reach each stream in commit order even when one is delivered in slices.
  interface FanOut {
    readonly update: EncodedUpdate;
    readonly record: VariableRecord;
    readonly targets: WatcherState[];
    next: number;
  }
  const queue: FanOut[] = [];
  const runQueue = () => {
    let budget = SLICE;
    while (budget > 0) {
      const job = queue[0];
      if (job === undefined) return;
      while (budget > 0 && job.next < job.targets.length) {
        const state = job.targets[job.next++] as WatcherState;
        if (matches(state.filter, job.record)) offer(state, job.update);
        budget--;
      }
      if (job.next === job.targets.length) queue.shift();
    }
    // setImmediate, not a timer: this yields to I/O between slices and
    // waits for no time, so there is nothing a test would drive.
    if (queue.length > 0) setImmediate(runQueue);
  };

  const deliver = (change: VariableChange) => {
    const watchers = bySession.get(change.sessionId);
    if (watchers === undefined) return;
    const update = changeUpdate(change);
    if (queue.length === 0 && watchers.size <= SLICE) {
      for (const state of watchers) {
        if (matches(state.filter, change.variable)) offer(state, update);
      }
      return;
    }
    queue.push({ update, record: change.variable, targets: [...watchers], next: 0 });
    if (queue.length === 1) setImmediate(runQueue);
  };

  // One timer for every stream: each tick sweeps one bucket, so every
  // stream is looked at twice per interval and one that sent nothing since
  // the last look gets a keepalive (at most keepaliveMs apart).
  const keepaliveMs = options.keepaliveMs ?? 0;
  let sweeper: TimerHandle | undefined;
  let sweepAt = 0;
  const sweep = () => {
    const bucket = buckets[sweepAt] as Set<WatcherState>;
    sweepAt = (sweepAt + 1) % BUCKETS;
    let update: EncodedUpdate | undefined;
    for (const state of bucket) {
      if (state.active || state.blocked || state.pending.size > 0) {
        state.active = false;
        continue;
      }
      update ??= keepaliveUpdate(now());
      offer(state, update, false);
      state.active = false;
    }
  };

  const detach = (state: WatcherState) => {
    const { sessionId } = state;
    const current = bySession.get(sessionId);
    if (current?.delete(state)) {
      size--;
      if (state.client !== undefined) {
        const left = (byClient.get(state.client) ?? 1) - 1;
        if (left > 0) byClient.set(state.client, left);
        else byClient.delete(state.client);
      }
      buckets[state.bucket]?.delete(state);
      if (current.size === 0) bySession.delete(sessionId);
      letGo(sessionId);
      if (size === 0 && sweeper !== undefined) {
        timers.clearInterval(sweeper);
        sweeper = undefined;
      }
    }
  };

  const checkLimits = (sessionId: string, client: string | undefined) => {
    const open = bySession.get(sessionId)?.size ?? 0;
    const mine = client === undefined ? 0 : (byClient.get(client) ?? 0);
    if (options.maxPerClient !== undefined && mine >= options.maxPerClient) {
      throw new ConnectError(
        `this client has ${mine} watch streams open; the limit is ${options.maxPerClient} per client (--max-watchers-per-client); close one or share a stream`,
        Code.ResourceExhausted,
      );
    }
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
  };

  return {
    get size() {
      return size;
    },

    watch(sessionId, filter, signal, sink, client) {
      const counted = client === undefined || client === "" ? undefined : client;
      checkLimits(sessionId, counted);
      const state: WatcherState = {
        sessionId,
        client: counted,
        filter,
        sink,
        pending: new Map(),
        blocked: false,
        seen: undefined,
        active: true,
        bucket: nextBucket,
        wake: undefined,
        done: false,
        error: undefined,
      };
      nextBucket = (nextBucket + 1) % BUCKETS;
      let set = bySession.get(sessionId);
      if (set === undefined) {
        set = new Set();
        bySession.set(sessionId, set);
      }
      set.add(state);
      hold(sessionId);
      buckets[state.bucket]?.add(state);
      size++;
      if (counted !== undefined) byClient.set(counted, (byClient.get(counted) ?? 0) + 1);
      if (keepaliveMs > 0 && sweeper === undefined) {
        sweeper = timers.setInterval(sweep, Math.max(1, keepaliveMs / (2 * BUCKETS)));
        sweeper.unref();
      }
      // The stream's end (a reset, the client gone) removes the watcher at
      // once: a consumer may be suspended in a write that never completes.
      const onAbort = () => {
        state.done = true;
        state.pending.clear();
        detach(state);
        state.wake?.();
      };
      signal.addEventListener("abort", onAbort, { once: true });
      if (signal.aborted) onAbort();

      async function* stream(): AsyncGenerator<VariableUpdate> {
        try {
          for (;;) {
            const next = state.pending.values().next();
            if (next.done !== true) {
              state.pending.delete(next.value.key);
              state.active = true;
              yield next.value.message;
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
          detach(state);
        }
      }

      return {
        [Symbol.asyncIterator]: () => stream(),
        pushInitial(record) {
          state.seen ??= new Map();
          // Initial values are bounded by the session's variable limit,
          // not by how fast the watcher reads.
          offer(state, initialUpdate(record, now()), false);
        },
        pushSyncMarker() {
          offer(state, syncUpdate(now()), false);
        },
        resume() {
          state.blocked = false;
          if (!state.done) flush(state);
        },
        end(error) {
          finish(state, error);
        },
      };
    },

    endSession(sessionId, reason) {
      const watchers = bySession.get(sessionId);
      if (watchers === undefined) return 0;
      const error = reason();
      const ended = watchers.size;
      for (const state of [...watchers]) finish(state, error);
      return ended;
    },

    endAll(error) {
      for (const watchers of [...bySession.values()]) {
        for (const state of [...watchers]) finish(state, error);
      }
    },

    watches(sessionId) {
      return bySession.has(sessionId);
    },

    async follow(sessionId) {
      const f = hold(sessionId);
      try {
        await f.ready;
      } catch (e) {
        letGo(sessionId);
        throw e;
      }
      let held = true;
      return () => {
        if (held) letGo(sessionId);
        held = false;
      };
    },

    onStoreEvent(event) {
      if (event.type === "change") deliver(event.change);
    },
  };
}

function concat(frames: Uint8Array[]): Uint8Array {
  let length = 0;
  for (const f of frames) length += f.length;
  const out = Buffer.allocUnsafe(length);
  let at = 0;
  for (const f of frames) {
    out.set(f, at);
    at += f.length;
  }
  return out;
}
