/**
 * The change feed's reader: one loop per replica reads the feed (a Redis
 * Stream; one loop per stream on a Redis Cluster, where each group of
 * sessions has its own) and delivers its entries (feed-delivery.ts) to
 * this replica's subscribers in order. The feed carries what every replica
 * needs, session ends and tool registrations, and is rarely written;
 * commits go on their session's channel (session-channels.ts), which only
 * the replicas that follow the session read.
 *
 * Entries are numbered one by one. A number that jumps means a trim took
 * entries this replica had not read, one that goes back a feed Redis lost
 * and began again, and an entry deleted after the last one read (looked
 * for on reconnecting) the same: subscribers are then told to
 * resynchronize.
 */
import { delay } from "../../common/timers.js";
import type { Logger } from "../../observability/logger.js";
import type { RedisClient, RedisConnection } from "./connection.js";
import type { FeedDelivery, FeedEntry } from "./feed-delivery.js";
import type { KeySpace } from "./script.js";

/**
 * Where the reader is:
 * - "following": reading on from the last entry it delivered;
 * - "reconnected": its connection dropped (ioredis may have sent the
 *   blocking read again); before reading on it checks that the feed lost
 *   no entry after the last one it read;
 * - "failed": a read failed; it tries again every 200 ms, checking as
 *   above first. The connection's status is "degraded" meanwhile.
 */
export type FeedReaderState = "following" | "reconnected" | "failed";

/** Options of {@link startFeedReader}. */
export interface FeedReaderOptions {
  readonly connection: RedisConnection;
  readonly keys: KeySpace;
  readonly delivery: FeedDelivery;
  /**
   * Whether a session end waits for the session's last commits, which
   * come on its channel (session-channels.ts): it is then delivered by
   * whoever holds it.
   */
  readonly holdEnd: (entry: FeedEntry) => boolean;
  readonly shownUrl: string;
  readonly logger?: Logger | undefined;
}

/** The running reader. */
export interface FeedReader {
  readonly state: FeedReaderState;
  /** The entries read since it started. */
  read(): number;
  /** Resolves once every entry appended before the call is delivered. */
  caughtUp(): Promise<void>;
  /**
   * Stops delivering and waits for the loops to end (the connection's
   * status says "closing" and its feed connections are dropped first);
   * callers waiting in caughtUp() are released.
   */
  stop(): Promise<void>;
}

/** Where the loop of one feed stream is. */
interface Cursor {
  readonly feed: string;
  /** The connection its blocking reads hold. */
  readonly client: RedisClient;
  /** The id of the last entry read. */
  lastId: string;
  /** The number (field `n`) of the last entry delivered; 0 for none known yet. */
  lastNumber: number;
  /** The id of the last entry delivered. */
  delivered: string;
  state: FeedReaderState;
}

/**
 * Reads where the feed ends now, then starts the loop there. On a Redis
 * Cluster the feed is one stream per group of sessions (script.ts), each
 * read by a loop of its own on a connection of its own, in its own order (a
 * session's changes are all in its group's stream).
 */
export async function startFeedReader(options: FeedReaderOptions): Promise<FeedReader> {
  const { connection, logger, delivery } = options;
  let read = 0;

  const cursors: Cursor[] = await connection.call(() =>
    Promise.all(
      options.keys.groups.map(async ({ feed, feedSeq }, g): Promise<Cursor> => {
        const tail = await connection.commands
          .multi()
          .xrevrange(feed, "+", "-", "COUNT", 1)
          .get(feedSeq)
          .exec();
        const lastId = (tail?.[0]?.[1] as [string, string[]][] | undefined)?.[0]?.[0] ?? "0-0";
        const client = connection.feeds[g] as RedisClient;
        const lastNumber = Number(tail?.[1]?.[1] ?? 0);
        return { feed, client, lastId, lastNumber, delivered: lastId, state: "following" };
      }),
    ),
  );
  /** Callers of caughtUp(), each with the id it waits for per stream (undefined: none). */
  const waiters: { ids: (string | undefined)[]; resolve: () => void }[] = [];
  const reached = (ids: readonly (string | undefined)[]) =>
    ids.every((id, g) => id === undefined || compareIds((cursors[g] as Cursor).delivered, id) >= 0);
  const settleWaiters = () => {
    for (let i = waiters.length - 1; i >= 0; i--) {
      const w = waiters[i] as (typeof waiters)[number];
      if (reached(w.ids)) {
        waiters.splice(i, 1);
        w.resolve();
      }
    }
  };

  /** Subscribers were told to resynchronize: no stream's next number is a gap any more. */
  const resync = (reason: string) => {
    delivery.resync(reason);
    for (const c of cursors) c.lastNumber = 0;
  };

  /** Delivers a batch of one stream's entries in feed order, after reading what they need. */
  const deliverBatch = async (cursor: Cursor, batch: readonly [string, string[]][]) => {
    read += batch.length;
    const { entries, records } = await delivery.prepare(batch);
    for (const entry of entries) {
      // (0 is no number known yet.)
      const n = entry.f.n === undefined ? undefined : Number(entry.f.n);
      const last = cursor.lastNumber;
      if (n !== undefined && n !== last + 1 && last !== 0) {
        resync(
          n > last
            ? `the change feed was trimmed past ${n - last - 1} entries this replica had not read (feed length or age limit)`
            : "the change feed began again (Redis lost it)",
        );
      }
      if (n !== undefined) cursor.lastNumber = n;
      if (entry.f.t !== "e" || !options.holdEnd(entry)) delivery.deliver(entry, records);
      cursor.delivered = entry.id;
    }
  };

  /** The reader's state: the worst of its loops'. */
  const overall = (): FeedReaderState =>
    cursors.some((c) => c.state === "failed")
      ? "failed"
      : cursors.some((c) => c.state === "reconnected")
        ? "reconnected"
        : "following";
  const setState = (cursor: Cursor, next: FeedReaderState) => {
    if (cursor.state === next) return;
    cursor.state = next;
    connection.update();
  };
  connection.follow(() => overall() !== "failed");

  /**
   * Back after a disconnect: resume from the last id, unless the feed
   * dropped entries after it (then subscribers must resync). (Until this
   * answers, the loop reads nothing: a read that succeeded first would
   * skip a gap silently.) Entries numbered past the next one say the same
   * once they arrive; this sees a deleted entry or a lost feed at once.
   */
  const checkForGap = async ({ client, feed, lastId }: Cursor) => {
    let maxDeleted: string;
    try {
      const info = (await client.call("XINFO", "STREAM", feed)) as unknown[];
      maxDeleted = String(field(info, "max-deleted-entry-id") ?? "0-0");
    } catch (error) {
      // No feed at all: a Redis that lost it lost what came after lastId.
      if (!String(error).includes("no such key")) throw error;
      maxDeleted = lastId === "0-0" ? "0-0" : "+";
    }
    if (maxDeleted === "+" || compareIds(maxDeleted, lastId) > 0) {
      resync("the change feed lost entries while this replica was away from Redis");
    }
  };

  const readLoop = async (cursor: Cursor) => {
    // Every disconnect is checked for a gap once the loop is back, even
    // when ioredis answered the blocking read by sending it again.
    cursor.client.on("close", () => {
      if (cursor.state === "following") setState(cursor, "reconnected");
    });
    while (!connection.closing) {
      try {
        if (cursor.state !== "following") {
          await checkForGap(cursor);
          setState(cursor, "following");
        }
        const reply = await cursor.client.xread(
          "COUNT",
          512,
          "BLOCK",
          5000,
          "STREAMS",
          cursor.feed,
          cursor.lastId,
        );
        const batch = (reply?.[0]?.[1] ?? []) as [string, string[]][];
        if (batch.length > 0) {
          await deliverBatch(cursor, batch);
          cursor.lastId = (batch.at(-1) as [string, string[]])[0];
        }
        settleWaiters();
      } catch (error) {
        if (connection.closing) break;
        if (cursor.state === "following") {
          logger?.warn("change feed interrupted; reconnecting", {
            store: options.shownUrl,
            error: error instanceof Error ? error.message : String(error),
          });
        }
        setState(cursor, "failed");
        await delay(connection.timers, 200);
      }
    }
  };
  const reading = Promise.all(cursors.map(readLoop));

  return {
    get state() {
      return overall();
    },
    read: () => read,
    async caughtUp() {
      const tails = await connection.call(() =>
        Promise.all(
          cursors.map((c) => connection.commands.xrevrange(c.feed, "+", "-", "COUNT", 1)),
        ),
      );
      const ids = tails.map((t) => t[0]?.[0]);
      if (reached(ids)) return;
      await new Promise<void>((resolve) => waiters.push({ ids, resolve }));
    },
    async stop() {
      delivery.clear();
      await reading;
      for (const w of waiters.splice(0)) w.resolve();
    },
  };
}

/** Stream ids compared as (ms, seq). */
function compareIds(a: string, b: string): number {
  const [am = 0, as = 0] = a.split("-").map(Number);
  const [bm = 0, bs = 0] = b.split("-").map(Number);
  return am !== bm ? am - bm : as - bs;
}

/** The value of `name` in a flat [name, value, …] reply. */
function field(reply: unknown[], name: string): unknown {
  for (let i = 0; i + 1 < reply.length; i += 2) if (reply[i] === name) return reply[i + 1];
  return undefined;
}
