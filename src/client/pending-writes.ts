/**
 * Optimistic values: a write shows in the local copy the moment it is made,
 * marked pending, until the server answers it. The cache itself keeps only
 * what the server confirmed; this overlay sits beside it, so a reader picks
 * one or the other (`peek(name)` confirmed, `peek(name, { pending: true })`
 * with the newest pending value), and a refused write simply leaves the
 * overlay: the confirmed value was never touched.
 */
import type { VariableValue } from "../values/index.js";
import type { VariableCache } from "./variable-cache.js";
import type { VariableSnapshot } from "./variable-snapshot.js";

/** A write made and not answered yet. */
export interface PendingWrite {
  /** Its idempotency key: unique per write, and what it is settled by. */
  readonly key: string;
  /** The variable's name (or the identifier it was written by, when not known locally). */
  readonly name: string;
  /** The value written, as validated locally. */
  readonly value: VariableValue;
  /**
   * The version it must find on the server (compare-and-swap); undefined
   * for a plain write, or for an outbox write that waits for the one before
   * it (`basedOn`) to learn its version.
   */
  readonly expectedVersion: number | undefined;
  /** When it was made (epoch ms). */
  readonly createdAt: number;
  /** Kept in the context's outbox: it outlives the page and is replayed. */
  readonly queued: boolean;
}

/** The pending writes of a context, by variable. */
export interface PendingOverlay {
  /** Adds a write; emits "pending". */
  add(write: PendingWrite): void;
  /** Removes an answered write and returns it; emits "pending". */
  settle(key: string): PendingWrite | undefined;
  /** The write of this key, if still pending. */
  get(key: string): PendingWrite | undefined;
  /**
   * The confirmed snapshot of `identifier` with its newest pending value,
   * marked `pending: true`; undefined when nothing is pending for it or the
   * cache does not hold it.
   */
  snapshot(identifier: string): VariableSnapshot | undefined;
  /** The newest pending write of a variable. */
  latest(name: string): PendingWrite | undefined;
  /** Every pending write, oldest first. */
  list(): PendingWrite[];
  /** Forgets every pending write without events (the context closed). */
  clear(): void;
  readonly size: number;
}

/** How the overlay tells what changed (a context's "pending" event). */
export interface PendingAnnouncer {
  /** Whether anyone listens: nothing is built for an event nobody hears. */
  listening(): boolean;
  announce(event: {
    readonly name: string;
    readonly writes: number;
    readonly snapshot: VariableSnapshot | undefined;
  }): void;
}

/** Creates an empty overlay over `cache`. */
export function createPendingOverlay(
  cache: VariableCache,
  events: PendingAnnouncer,
): PendingOverlay {
  const byKey = new Map<string, PendingWrite>();
  // Per name, oldest first: the newest is what an optimistic reader sees.
  const byName = new Map<string, PendingWrite[]>();
  // Per name, the optimistic snapshot made for the current newest write
  // and the confirmed snapshot it was made from: the same frozen object
  // while neither changes.
  const shown = new Map<
    string,
    { write: PendingWrite; base: VariableSnapshot; view: VariableSnapshot }
  >();

  const nameOf = (identifier: string) =>
    byName.has(identifier)
      ? identifier
      : (cache.peek(identifier)?.variable.snapshot.name ?? identifier);

  const snapshot = (identifier: string): VariableSnapshot | undefined => {
    const name = nameOf(identifier);
    const writes = byName.get(name);
    const write = writes?.[writes.length - 1];
    const base = cache.peek(name)?.variable.snapshot;
    if (write === undefined || base === undefined) return undefined;
    const made = shown.get(name);
    if (made !== undefined && made.write === write && made.base === base) return made.view;
    const view: VariableSnapshot = Object.freeze({ ...base, value: write.value, pending: true });
    shown.set(name, { write, base, view });
    return view;
  };

  const announce = (name: string) => {
    if (!events.listening()) return;
    events.announce({ name, writes: byName.get(name)?.length ?? 0, snapshot: snapshot(name) });
  };

  return {
    add(write) {
      byKey.set(write.key, write);
      const writes = byName.get(write.name);
      if (writes === undefined) byName.set(write.name, [write]);
      else writes.push(write);
      announce(write.name);
    },

    settle(key) {
      const write = byKey.get(key);
      if (write === undefined) return undefined;
      byKey.delete(key);
      const writes = byName.get(write.name) ?? [];
      const at = writes.indexOf(write);
      if (at >= 0) writes.splice(at, 1);
      if (writes.length === 0) {
        byName.delete(write.name);
        shown.delete(write.name);
      }
      announce(write.name);
      return write;
    },

    get: (key) => byKey.get(key),
    snapshot,
    latest(name) {
      const writes = byName.get(name);
      return writes?.[writes.length - 1];
    },
    list: () => [...byKey.values()],
    clear() {
      byKey.clear();
      byName.clear();
      shown.clear();
    },
    get size() {
      return byKey.size;
    },
  };
}
