/**
 * The change feed's reader: one loop per replica reads the feed (a Redis
 * Stream) and delivers its entries (feed-delivery.ts) to this replica's
 * subscribers in commit order, its own commits included.
 *
 * Entries are numbered one by one. A number that jumps means a trim took
 * entries this replica had not read, one that goes back a feed Redis lost
 * and began again, and an entry deleted after the last one read (looked
 * for on reconnecting) the same: subscribers are then told to
 * resynchronize.
 */
import { delay } from "../../timers.js";
import type { StoreEvent, SubscribeOptions } from "../session-store.js";
import { createFeedDelivery, type FeedDeliveryOptions } from "./feed-delivery.js";

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
export interface FeedReaderOptions extends FeedDeliveryOptions {
  readonly shownUrl: string;
}

/** The running reader. */
export interface FeedReader {
  readonly state: FeedReaderState;
  subscribe(listener: (event: StoreEvent) => void, options?: SubscribeOptions): () => void;
  /** Resolves once every entry appended before the call is delivered. */
  caughtUp(): Promise<void>;
  /**
   * Stops delivering and waits for the loop to end (the connection's
   * status says "closing" and its feed connection is dropped first);
   * callers waiting in caughtUp() are released.
   */
  stop(): Promise<void>;
}

/** Reads where the feed ends now, then starts the loop there. */
export async function startFeedReader(options: FeedReaderOptions): Promise<FeedReader> {
  const { connection, logger } = options;
  const { feed: feedKey, feedSeq } = options.keys.deployment;
  const delivery = createFeedDelivery(options);

  // Where the loop is: the id of the last entry read, the number (field
  // `n`) of the last one delivered, and the id of the last delivered.
  const tail = await connection.call(() =>
    connection.commands.multi().xrevrange(feedKey, "+", "-", "COUNT", 1).get(feedSeq).exec(),
  );
  let lastId = (tail?.[0]?.[1] as [string, string[]][] | undefined)?.[0]?.[0] ?? "0-0";
  let lastNumber = Number(tail?.[1]?.[1] ?? 0);
  let delivered = lastId;
  const waiters: { id: string; resolve: () => void }[] = [];
  const settleWaiters = () => {
    for (let i = waiters.length - 1; i >= 0; i--) {
      const w = waiters[i] as (typeof waiters)[number];
      if (compareIds(delivered, w.id) >= 0) {
        waiters.splice(i, 1);
        w.resolve();
      }
    }
  };

  /** Delivers a batch of entries in feed order, after reading what they need. */
  const deliverBatch = async (batch: readonly [string, string[]][]) => {
    const { entries, records } = await delivery.prepare(batch);
    for (const entry of entries) {
      // (Entries without a number come from replicas of an older version;
      // 0 is no number known yet.)
      const n = entry.f.n === undefined ? undefined : Number(entry.f.n);
      if (n !== undefined && n !== lastNumber + 1 && lastNumber !== 0) {
        delivery.resync(
          n > lastNumber
            ? `the change feed was trimmed past ${n - lastNumber - 1} entries this replica had not read (feed length or age limit)`
            : "the change feed began again (Redis lost it)",
        );
      }
      if (n !== undefined) lastNumber = n;
      delivery.deliver(entry, records);
      delivered = entry.id;
    }
  };

  let state: FeedReaderState = "following";
  const setState = (next: FeedReaderState) => {
    if (state === next) return;
    state = next;
    connection.update();
  };
  connection.follow(() => state !== "failed");

  /**
   * Back after a disconnect: resume from the last id, unless the feed
   * dropped entries after it (then subscribers must resync). (Until this
   * answers, the reader reads nothing: a read that succeeded first would
   * skip a gap silently.) Entries numbered past the next one say the same
   * once they arrive; this sees a deleted entry or a lost feed at once.
   */
  const checkForGap = async () => {
    let maxDeleted: string;
    try {
      const info = (await connection.feed.call("XINFO", "STREAM", feedKey)) as unknown[];
      maxDeleted = String(field(info, "max-deleted-entry-id") ?? "0-0");
    } catch (error) {
      // No feed at all: a Redis that lost it lost what came after lastId.
      if (!String(error).includes("no such key")) throw error;
      maxDeleted = lastId === "0-0" ? "0-0" : "+";
    }
    if (maxDeleted === "+" || compareIds(maxDeleted, lastId) > 0) {
      delivery.resync("the change feed lost entries while this replica was away from Redis");
      // Resynchronized already: the numbers' jump is not another gap.
      lastNumber = 0;
    }
  };

  const readLoop = async () => {
    // Every disconnect is checked for a gap once the reader is back, even
    // when ioredis answered the blocking read by sending it again.
    connection.feed.on("close", () => {
      if (state === "following") setState("reconnected");
    });
    while (!connection.closing) {
      try {
        if (state !== "following") {
          await checkForGap();
          setState("following");
        }
        const reply = await connection.feed.xread(
          "COUNT",
          512,
          "BLOCK",
          5000,
          "STREAMS",
          feedKey,
          lastId,
        );
        const batch = (reply?.[0]?.[1] ?? []) as [string, string[]][];
        if (batch.length > 0) {
          await deliverBatch(batch);
          lastId = (batch.at(-1) as [string, string[]])[0];
        }
        settleWaiters();
      } catch (error) {
        if (connection.closing) break;
        if (state === "following") {
          logger?.warn("change feed interrupted; reconnecting", {
            store: options.shownUrl,
            error: error instanceof Error ? error.message : String(error),
          });
        }
        setState("failed");
        await delay(connection.timers, 200);
      }
    }
  };
  const reading = readLoop();

  return {
    get state() {
      return state;
    },
    subscribe: (listener, subscribeOptions) => delivery.subscribe(listener, subscribeOptions),
    async caughtUp() {
      const tailNow = await connection.call(() =>
        connection.commands.xrevrange(feedKey, "+", "-", "COUNT", 1),
      );
      const target = tailNow[0]?.[0];
      if (target === undefined || compareIds(delivered, target) >= 0) return;
      await new Promise<void>((resolve) => waiters.push({ id: target, resolve }));
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
