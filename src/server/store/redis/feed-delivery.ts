/**
 * What the change feed's entries and the session channels' messages
 * (session-channels.ts) become for this replica's subscribers. A commit
 * says which variables changed to which version, never their values: this
 * replica's own commits are delivered from memory (feed-writes.ts),
 * another's are read from the session's keys (one round trip per batch). A value overwritten before this replica read it is delivered as
 * the newer version: versions never go backwards.
 */
import type { Logger } from "../../observability/logger.js";
import type { SharedTool } from "../../tools/shared-tools.js";
import type { StoreEvent, VariableChange, VariableRecord } from "../session-store.js";
import { decodeFeedChanges, decodeRecord, deletedRecord, type FeedChange } from "./codec.js";
import type { RedisConnection } from "./connection.js";
import type { FeedWrites } from "./feed-writes.js";
import type { KeySpace } from "./script.js";
import type { SessionCache } from "./session-cache.js";

/** Options of {@link createFeedDelivery}. */
export interface FeedDeliveryOptions {
  readonly connection: RedisConnection;
  readonly keys: KeySpace;
  readonly cache: SessionCache;
  readonly feedWrites: FeedWrites;
  /** This replica's id, as its entries carry it. */
  readonly replica: string;
  /** Receives the tools other replicas register. */
  readonly onTools: (tools: readonly SharedTool[]) => void;
  readonly logger?: Logger | undefined;
}

/** One feed entry, with what delivering it takes. */
export interface FeedEntry {
  readonly id: string;
  /** Its fields: `n` its number, `t` its type ("c" commit, "e" session end, "tools"), …. */
  readonly f: Readonly<Record<string, string>>;
  /** This replica's own commit, as it made it. */
  own?: readonly VariableChange[] | undefined;
  /** Another replica's commit, as the feed says it (no values). */
  changes?: readonly FeedChange[];
}

/** A batch of entries ready to deliver one by one. */
export interface PreparedBatch {
  readonly entries: readonly FeedEntry[];
  /** The records other replicas' entries name, by session and variable id. */
  readonly records: ReadonlyMap<string, VariableRecord>;
}

/** What {@link createFeedDelivery} returns. */
export interface FeedDelivery {
  subscribe(listener: (event: StoreEvent) => void): () => void;
  /** Reads what a batch of entries (as XREAD returns them) needs: one round trip at most. */
  prepare(batch: readonly [string, string[]][]): Promise<PreparedBatch>;
  /** Delivers one entry of a prepared batch. */
  deliver(entry: FeedEntry, records: ReadonlyMap<string, VariableRecord>): void;
  /** Changes may have been missed: the copies go and every subscriber must resynchronize. */
  resync(reason: string): void;
  /** Changes of one session may have been missed: its watchers must resynchronize. */
  resyncSession(sessionId: string, reason: string): void;
  /** Drops every subscriber. */
  clear(): void;
}

/** Creates the delivery of a replica's feed entries. */
export function createFeedDelivery(options: FeedDeliveryOptions): FeedDelivery {
  const { connection, keys, cache, feedWrites, replica, logger } = options;

  const listeners = new Set<(event: StoreEvent) => void>();
  const publish = (event: StoreEvent) => {
    for (const listener of listeners) listener(event);
  };

  // Value versions delivered ahead of their own feed entry (another
  // replica's write, read back after a newer write replaced it), by session
  // and variable: entries up to that version are not delivered again, so
  // versions never go backwards. A mark goes when its own entry arrives.
  const ahead = new Map<string, number>();
  const publishChange = (change: VariableChange, entryVersion: number) => {
    const { kind, variable } = change;
    if (kind === "value_changed" || kind === "registered") {
      const key = `${change.sessionId}\n${variable.id}`;
      const mark = ahead.get(key);
      if (mark !== undefined) {
        if (entryVersion >= mark) ahead.delete(key);
        if (variable.version <= mark) return;
      }
      if (variable.version > entryVersion) ahead.set(key, variable.version);
    }
    publish({ type: "change", change });
  };

  /**
   * Reads the current records of variables other replicas' entries name:
   * one round trip for a whole batch of entries.
   */
  const readRecords = async (need: ReadonlyMap<string, ReadonlySet<string>>) => {
    const out = new Map<string, VariableRecord>();
    if (need.size === 0) return out;
    const asked: [string, string[]][] = [];
    for (const [sessionId, ids] of need) asked.push([sessionId, [...ids]]);
    const read = (): Promise<[Error | null, unknown][] | null> => {
      if (connection.clustered) {
        // A Cluster pipeline must stay on one primary: these are sent at
        // once, each to its own.
        return Promise.all(
          asked.map(([sessionId, ids]) =>
            connection.commands.hmget(keys.of(sessionId).vars, ...ids).then(
              (texts): [Error | null, unknown] => [null, texts],
              (error: Error): [Error | null, unknown] => [error, null],
            ),
          ),
        );
      }
      const pipeline = connection.commands.pipeline();
      for (const [sessionId, ids] of asked) pipeline.hmget(keys.of(sessionId).vars, ...ids);
      return pipeline.exec();
    };
    const replies = (await connection.call(read)) ?? [];
    asked.forEach(([sessionId, ids], k) => {
      const [error, texts] = replies[k] ?? [new Error("no reply")];
      if (error) throw connection.unavailable(error);
      (texts as (string | null)[]).forEach((text, i) => {
        if (text === null) return;
        // A record this code cannot read must not stop the feed for all
        // (read again and again): its change is left out, and said so.
        try {
          out.set(`${sessionId}\n${ids[i]}`, decodeRecord(text));
        } catch (error) {
          logger?.error("unreadable variable record", { variable: ids[i], error });
        }
      });
    });
    return out;
  };

  return {
    subscribe(listener) {
      listeners.add(listener);
      return () => {
        listeners.delete(listener);
      };
    },

    async prepare(batch) {
      const entries: FeedEntry[] = [];
      const need = new Map<string, Set<string>>();
      for (const [id, fields] of batch) {
        const f: Record<string, string> = {};
        for (let i = 0; i + 1 < fields.length; i += 2)
          f[fields[i] as string] = fields[i + 1] as string;
        const entry: FeedEntry = { id, f };
        entries.push(entry);
        if (f.t !== "c") continue;
        const sessionId = f.sid ?? "";
        entry.own = feedWrites.take(sessionId, f.rev ?? "", f.r === replica);
        if (entry.own !== undefined) continue;
        try {
          entry.changes = decodeFeedChanges(f.ev ?? "[]");
        } catch (error) {
          logger?.error("unreadable change feed entry", { id, error });
        }
        for (const change of entry.changes ?? []) {
          if (change.deleted !== undefined) continue;
          let ids = need.get(sessionId);
          if (ids === undefined) {
            ids = new Set();
            need.set(sessionId, ids);
          }
          ids.add(change.id);
        }
      }
      return { entries, records: await readRecords(need) };
    },

    deliver({ id, f, own, changes }, records) {
      const sessionId = f.sid ?? "";
      if (f.t === "e") {
        cache.delete(sessionId);
        for (const key of ahead.keys()) if (key.startsWith(`${sessionId}\n`)) ahead.delete(key);
        publish({
          type: "session_ended",
          sessionId,
          reason: f.why === "cleanup" ? "cleanup" : "expired",
        });
      } else if (f.t === "tools") {
        // This replica applied its own registrations when it made them.
        if (f.r === replica) return;
        try {
          const tools = (JSON.parse(f.ev ?? "[]") as { doc: string }[]).map(
            (t) => JSON.parse(t.doc) as SharedTool,
          );
          options.onTools(tools);
        } catch (error) {
          logger?.error("unreadable tool registration in the feed", { id, error });
        }
      } else if (f.t === "c") {
        // Another replica's commit makes this copy stale; this replica's own
        // commits were applied to it already.
        // (This replica's own entry may arrive before its commit's reply.)
        const cached = cache.get(sessionId);
        if (f.r !== replica && cached !== undefined && Number(cached.rev) < Number(f.rev)) {
          cache.delete(sessionId);
        }
        for (const change of own ?? []) publishChange(change, change.variable.version);
        for (const change of changes ?? []) {
          const variable =
            change.deleted !== undefined
              ? deletedRecord(change.deleted)
              : records.get(`${sessionId}\n${change.id}`);
          // Gone since (a later entry deletes it or ends the session), or a
          // variable of a session made again since: later entries say so.
          if (variable === undefined || variable.version < change.version) continue;
          publishChange(
            {
              sessionId,
              kind: change.kind,
              variable,
              source: change.source ?? variable.optimization?.optimizerId ?? variable.changedBy,
              metadata:
                change.metadata ??
                (change.kind === "registered"
                  ? variable.metadata
                  : change.kind === "value_changed"
                    ? variable.changeMetadata
                    : {}),
              timestamp: change.timestamp,
            },
            change.version,
          );
        }
      }
    },

    resync(reason) {
      cache.clear();
      ahead.clear();
      publish({ type: "resync", reason });
    },

    resyncSession(sessionId, reason) {
      cache.delete(sessionId);
      for (const key of ahead.keys()) if (key.startsWith(`${sessionId}\n`)) ahead.delete(key);
      publish({ type: "resync", reason, sessionId });
    },

    clear() {
      listeners.clear();
    },
  };
}
