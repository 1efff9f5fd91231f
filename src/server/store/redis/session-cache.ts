/**
 * The copies of sessions a replica keeps, tagged with the session's
 * revision in Redis, least recently used dropped first.
 */
import type { SessionState } from "../session-state.js";
import type { OutsideQuota } from "./scripts.js";

/** A session's state as of revision `rev`. */
export interface Cached {
  state: SessionState;
  rev: string;
  /** Its client whose bytes are counted outside the scripts (Redis Cluster). */
  quota?: OutsideQuota | undefined;
}

/** The copies; see the module comment. */
export interface SessionCache {
  get(sessionId: string): Cached | undefined;
  /** Keeps `cached` as the most recently used copy. */
  remember(sessionId: string, cached: Cached): void;
  delete(sessionId: string): void;
  clear(): void;
}

/** A cache of at most `size` sessions. */
export function createSessionCache(size: number): SessionCache {
  const cache = new Map<string, Cached>();
  return {
    get: (sessionId) => cache.get(sessionId),
    remember(sessionId, cached) {
      cache.delete(sessionId);
      cache.set(sessionId, cached);
      if (cache.size > size) {
        const oldest = cache.keys().next().value;
        if (oldest !== undefined) cache.delete(oldest);
      }
    },
    delete(sessionId) {
      cache.delete(sessionId);
    },
    clear() {
      cache.clear();
    },
  };
}
