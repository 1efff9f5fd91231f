/**
 * What this replica writes to the change feed: the changes of its own
 * commits, kept until the feed delivers their entries (its subscribers get
 * them from memory, not by reading them back from Redis), and the count of
 * the entries it appended.
 */
import type { SessionEndReason, VariableChange } from "../session-store.js";

/** What {@link createFeedWrites} returns. */
export interface FeedWrites {
  /** Keeps the changes of a commit that makes revision `rev`, until its entry arrives. */
  keep(sessionId: string, rev: number, changes: readonly VariableChange[]): void;
  /** Drops what {@link keep} kept for a commit that did not happen. */
  forget(sessionId: string, rev: number): void;
  /**
   * The changes kept for the entry of revision `rev` when this replica
   * wrote it (`own`), dropped in any case: another replica's commit of that
   * revision clears what a failed attempt of this one left behind.
   */
  take(sessionId: string, rev: string, own: boolean): readonly VariableChange[] | undefined;
  /** Counts a commit's entry (see the scripts' `append` calls for the fields). */
  countCommit(sessionId: string, rev: string, replica: string, changes: string): void;
  /** Counts a session end's entry. */
  countEnd(sessionId: string, reason: SessionEndReason): void;
  /** Counts a tool registration's entry. */
  countTools(sessionId: string, replica: string, tools: string): void;
  /** What was appended since the replica started. */
  appended(): { readonly entries: number; readonly bytes: number };
}

/**
 * A commit whose outcome was never known may leave its changes behind;
 * this bounds them.
 */
const KEPT_MAX = 4096;

/** Creates the record of this replica's feed writes. */
export function createFeedWrites(): FeedWrites {
  // By the revision the commit makes and the session.
  const kept = new Map<string, readonly VariableChange[]>();
  const keyOf = (sessionId: string, rev: string) => `${rev} ${sessionId}`;
  let entries = 0;
  let bytes = 0;
  /** Counts one entry: `fields` are its field names and values. */
  const count = (...fields: string[]) => {
    entries++;
    // The script adds the entry's number: "n" and up to 16 digits.
    bytes += 17;
    for (const f of fields) bytes += Buffer.byteLength(f);
  };
  return {
    keep(sessionId, rev, changes) {
      if (changes.length === 0) return;
      kept.set(keyOf(sessionId, String(rev)), changes);
      if (kept.size > KEPT_MAX) {
        const oldest = kept.keys().next().value;
        if (oldest !== undefined) kept.delete(oldest);
      }
    },
    forget(sessionId, rev) {
      kept.delete(keyOf(sessionId, String(rev)));
    },
    take(sessionId, rev, own) {
      const key = keyOf(sessionId, rev);
      const changes = own ? kept.get(key) : undefined;
      kept.delete(key);
      return changes;
    },
    countCommit(sessionId, rev, replica, changes) {
      count("t", "c", "sid", sessionId, "rev", rev, "r", replica, "ev", changes);
    },
    countEnd(sessionId, reason) {
      count("t", "e", "sid", sessionId, "why", reason);
    },
    countTools(sessionId, replica, tools) {
      count("t", "tools", "sid", sessionId, "r", replica, "ev", tools);
    },
    appended: () => ({ entries, bytes }),
  };
}
