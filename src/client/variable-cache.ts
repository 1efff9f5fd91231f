import type { TimerProvider } from "./timers.js";
import type { DecodedVariable, VariableSnapshot } from "./variable-snapshot.js";

/** One cached variable, reachable by its id and by its name. */
export interface CacheEntry {
  readonly variable: DecodedVariable;
  /** When the value was last confirmed by the server (epoch ms). */
  confirmedAt: number;
  /** Until when it is fresh without the watch stream (epoch ms). */
  expiresAt: number;
  /** Served from persistence and not yet revalidated. */
  readonly possiblyStale: boolean;
  /** Second-chance bit for eviction; set by every hit. */
  referenced: boolean;
  /** What `peek` returns for this entry, made once per entry, not per call. */
  readonly peeked: { readonly snapshot: VariableSnapshot; readonly possiblyStale: boolean };
}

/** Options of {@link createVariableCache}. */
export interface VariableCacheOptions {
  /** Default time to live of an entry (ms). */
  readonly ttlMs: number;
  /** Most entries kept; beyond it the least recently used go. */
  readonly maxEntries: number;
  readonly timers: TimerProvider;
}

/** How a put went. */
export type PutOutcome = "stored" | "unchanged" | "older";

/**
 * The client's variable cache. One entry per variable, indexed by id and by
 * name; lookups, puts and invalidation are O(1). Versions never go
 * backwards: a response or pushed update older than what is cached is
 * dropped. A response that arrives after its variable was deleted is
 * dropped too (ids are never reused, so the id tells), while the cache
 * remembers the deletion: it keeps up to 10,001 deleted ids and forgets
 * them all at the next deletion, after which a late response for any of
 * them (even the one deleted just before) could put its variable back.
 * While the watch stream is healthy the cache is
 * "live": every entry is kept current by pushed changes, so entries are
 * fresh whatever their age; otherwise each entry is fresh for its TTL.
 */
export interface VariableCache {
  /** A fresh entry, or undefined. The hot path of every read. */
  fresh(identifier: string, maxAgeMs?: number): CacheEntry | undefined;
  /** The entry whatever its freshness. */
  peek(identifier: string): CacheEntry | undefined;
  /**
   * Stores a variable unless the cache already holds a newer version.
   * `sameVersion` also accepts an equal version (pushed lock changes keep
   * the version); responses to reads leave it false.
   */
  put(
    variable: DecodedVariable,
    options?: { sameVersion?: boolean; possiblyStale?: boolean },
  ): PutOutcome;
  /** Forgets a deleted variable, and drops late responses for it (see above for how long). */
  remove(id: string): CacheEntry | undefined;
  /** Drops one entry (it will be fetched again). */
  invalidate(identifier: string): void;
  clear(): void;
  /** Per-variable TTL override by name. */
  setTtl(name: string, ttlMs: number | undefined): void;
  /**
   * Switches watch coherence on or off. Going off starts every entry's TTL
   * from now, since each was current until this moment.
   */
  setLive(live: boolean): void;
  readonly live: boolean;
  entries(): IterableIterator<CacheEntry>;
  readonly size: number;
}

/** Creates an empty cache. */
export function createVariableCache(options: VariableCacheOptions): VariableCache {
  const { timers, maxEntries } = options;
  // byId owns the entries in insertion order (the eviction clock). index
  // finds an entry by id or by name in one lookup: names never contain ':'
  // and ids always do, so the two kinds of keys cannot collide.
  const byId = new Map<string, CacheEntry>();
  const index = new Map<string, CacheEntry>();
  const ttlByName = new Map<string, number>();
  const deleted = new Set<string>();
  let live = false;

  const lookup = (identifier: string) => index.get(identifier);

  const ttlFor = (name: string) => ttlByName.get(name) ?? options.ttlMs;

  const drop = (entry: CacheEntry) => {
    const { id, name } = entry.variable.snapshot;
    byId.delete(id);
    index.delete(id);
    if (index.get(name) === entry) index.delete(name);
  };

  // CLOCK eviction: walk from the oldest insertion; a referenced entry gets
  // a second chance (bit cleared, moved to the back), an unreferenced one
  // goes. Hits only set a bit, which keeps the read path cheap.
  const evict = () => {
    while (byId.size > maxEntries) {
      const first = byId.values().next();
      if (first.done === true) return;
      const entry = first.value;
      if (entry.referenced) {
        entry.referenced = false;
        byId.delete(entry.variable.snapshot.id);
        byId.set(entry.variable.snapshot.id, entry);
      } else {
        drop(entry);
      }
    }
  };

  return {
    fresh(identifier, maxAgeMs) {
      const entry = lookup(identifier);
      if (entry === undefined) return undefined;
      if (maxAgeMs === undefined) {
        if (!live && timers.now() >= entry.expiresAt) return undefined;
      } else if (!live && timers.now() - entry.confirmedAt > maxAgeMs) {
        return undefined;
      }
      if (entry.possiblyStale) return undefined;
      entry.referenced = true;
      return entry;
    },

    peek: lookup,

    put(variable, { sameVersion = false, possiblyStale = false } = {}) {
      const { id, name, version } = variable.snapshot;
      if (deleted.has(id)) return "older";
      const existing = byId.get(id);
      if (existing !== undefined) {
        const current = existing.variable.snapshot.version;
        if (version < current || (version === current && !sameVersion && !existing.possiblyStale)) {
          // Same data confirmed again: refresh its age without replacing it.
          if (version === current && !possiblyStale) {
            existing.confirmedAt = timers.now();
            existing.expiresAt = timers.now() + ttlFor(name);
          }
          return version < current ? "older" : "unchanged";
        }
      }
      const now = timers.now();
      const entry: CacheEntry = {
        variable,
        confirmedAt: now,
        expiresAt: now + ttlFor(name),
        possiblyStale,
        referenced: existing?.referenced ?? false,
        peeked: Object.freeze({ snapshot: variable.snapshot, possiblyStale }),
      };
      // A name now held by another id means the old variable was deleted
      // and the name registered again.
      const previousByName = index.get(name);
      if (previousByName !== undefined && previousByName.variable.snapshot.id !== id) {
        drop(previousByName);
      }
      if (existing !== undefined) byId.set(id, entry);
      else {
        byId.set(id, entry);
        evict();
      }
      index.set(id, entry);
      index.set(name, entry);
      return "stored";
    },

    remove(id) {
      const entry = byId.get(id);
      if (deleted.size > 10_000) deleted.clear();
      deleted.add(id);
      if (entry !== undefined) drop(entry);
      return entry;
    },

    invalidate(identifier) {
      const entry = lookup(identifier);
      if (entry !== undefined) drop(entry);
    },

    clear() {
      byId.clear();
      index.clear();
    },

    setTtl(name, ttlMs) {
      if (ttlMs === undefined) ttlByName.delete(name);
      else ttlByName.set(name, ttlMs);
      const entry = index.get(name);
      if (entry !== undefined) entry.expiresAt = entry.confirmedAt + ttlFor(name);
    },

    setLive(next) {
      if (live && !next) {
        const now = timers.now();
        for (const entry of byId.values())
          entry.expiresAt = now + ttlFor(entry.variable.snapshot.name);
      }
      live = next;
    },

    get live() {
      return live;
    },

    entries: () => byId.values(),

    get size() {
      return byId.size;
    },
  };
}
