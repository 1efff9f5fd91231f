/**
 * The session channels a replica follows: each commit script publishes the
 * commit (its revision, the replica that made it and its changes, without
 * values) on the session's channel with sharded pub/sub (SPUBLISH), and a
 * replica subscribes (SSUBSCRIBE) to the channels of the sessions it has
 * watch streams on, so it reads the changes of the sessions it serves, not
 * the deployment's.
 *
 * Pub/sub keeps nothing for a subscriber that was away, so nothing is
 * missed in silence: revisions are consecutive (every commit is published),
 * and a revision that jumps makes that session's watchers resynchronize.
 * Following a session subscribes first and then reads its revision, from
 * which on its commits are delivered; after the subscriber connection
 * dropped and came back, every followed session's revision is read again
 * (one round trip) and the sessions that moved meanwhile resynchronize.
 *
 * A session end comes on the feed, which every replica reads, and may
 * arrive before the session's last commits: it carries the session's last
 * revision, and waits for it to be delivered.
 */
import { delay } from "../../common/timers.js";
import type { Logger } from "../../observability/logger.js";
import type { RedisConnection } from "./connection.js";
import type { FeedDelivery, FeedEntry } from "./feed-delivery.js";
import type { KeySpace } from "./script.js";

/** How often, and how far apart, the check after a reconnect is tried (5 s in all). */
const CHECK_ATTEMPTS = 20;
const CHECK_RETRY_MS = 250;

/** Options of {@link startSessionChannels}. */
export interface SessionChannelsOptions {
  readonly connection: RedisConnection;
  readonly keys: KeySpace;
  readonly delivery: FeedDelivery;
  readonly logger?: Logger | undefined;
}

/** What {@link startSessionChannels} returns. */
export interface SessionChannels {
  /** See SessionStore.follow. */
  follow(sessionId: string): Promise<() => void>;
  /**
   * Whether a session end from the feed waits for its session's last
   * commits; if so, it is delivered once they are (or the session is found
   * gone, or no longer followed).
   */
  holdEnd(entry: FeedEntry): boolean;
  /** Resolves once every commit of a followed session made before the call is delivered. */
  caughtUp(): Promise<void>;
  /** The messages received since the replica started. */
  received(): number;
  /** Waits for what is being delivered. */
  stop(): Promise<void>;
}

/** A session this replica follows. */
interface Followed {
  readonly sessionId: string;
  readonly channel: string;
  holders: number;
  /** The last revision delivered; undefined until following began. */
  delivered: number | undefined;
  /** Messages that came before following began, in order. */
  early: Message[];
  /** A session end the feed brought before the commit of revision `rev`. */
  heldEnd: { readonly entry: FeedEntry; readonly rev: number } | undefined;
  /** Following began (follow() waits for it). */
  ready: Promise<void> | undefined;
}

/** One commit as its channel carries it. */
interface Message {
  readonly sessionId: string;
  readonly rev: number;
  readonly replica: string;
  readonly changes: string;
}

/** Work for the delivery loop, done in order. */
type Job =
  | { readonly type: "message"; readonly message: Message }
  | { readonly type: "run"; readonly run: () => void };

/** Subscribes to the channels of followed sessions and delivers their commits. */
export function startSessionChannels(options: SessionChannelsOptions): SessionChannels {
  const { connection, keys, delivery, logger } = options;
  const subscriber = connection.subscriber;
  const followed = new Map<string, Followed>();
  const byChannel = new Map<string, Followed>();
  let received = 0;

  // One loop delivers messages and applies checks in the order they came.
  const jobs: Job[] = [];
  // Set and cleared inside the loop itself, synchronously: a loop that
  // ended but whose promise had not settled yet must not swallow a job.
  let draining = false;
  let running: Promise<void> = Promise.resolve();
  const enqueue = (job: Job) => {
    jobs.push(job);
    if (draining) return;
    draining = true;
    running = drain();
  };
  const drain = async () => {
    try {
      while (jobs.length > 0) {
        const job = jobs.shift() as Job;
        if (job.type === "run") {
          job.run();
          continue;
        }
        // Consecutive messages are delivered as one batch: one read of the
        // values other replicas wrote.
        const batch: Message[] = [job.message];
        while (jobs[0]?.type === "message") batch.push((jobs.shift() as typeof job).message);
        await deliverMessages(batch);
      }
    } finally {
      draining = false;
    }
  };

  /** Whether a message is delivered: its session followed, its revision the next. */
  const accept = (f: Followed, m: Message) => {
    if (f.delivered === undefined) {
      f.early.push(m);
      return false;
    }
    // Before following began (the sync read has it), or delivered already.
    if (m.rev <= f.delivered) return false;
    if (m.rev > f.delivered + 1) {
      delivery.resyncSession(
        m.sessionId,
        `this replica missed ${m.rev - f.delivered - 1} changes of the session`,
      );
    }
    f.delivered = m.rev;
    return true;
  };

  const deliverMessages = async (messages: readonly Message[]) => {
    const accepted: Message[] = [];
    for (const m of messages) {
      const f = followed.get(m.sessionId);
      if (f !== undefined && accept(f, m)) accepted.push(m);
    }
    if (accepted.length === 0) return;
    const batch = accepted.map((m): [string, string[]] => [
      "",
      ["t", "c", "sid", m.sessionId, "rev", String(m.rev), "r", m.replica, "ev", m.changes],
    ]);
    try {
      const { entries, records } = await delivery.prepare(batch);
      for (const entry of entries) delivery.deliver(entry, records);
    } catch (error) {
      // The values could not be read: their watchers start again.
      logger?.warn("reading changed variables failed", { error: String(error) });
      for (const sessionId of new Set(accepted.map((m) => m.sessionId))) {
        delivery.resyncSession(sessionId, "this replica could not read the session's changes");
      }
    }
    for (const sessionId of new Set(accepted.map((m) => m.sessionId))) {
      const f = followed.get(sessionId);
      if (f?.heldEnd !== undefined && (f.delivered ?? 0) >= f.heldEnd.rev) releaseEnd(f);
    }
  };

  /** Delivers a held session end; the session's next revisions begin again at 1. */
  const releaseEnd = (f: Followed) => {
    const held = f.heldEnd;
    if (held === undefined) return;
    f.heldEnd = undefined;
    f.delivered = 0;
    delivery.deliver(held.entry, new Map());
  };

  const onMessage = (channel: string, text: string) => {
    received++;
    const f = byChannel.get(channel);
    if (f === undefined) return;
    const a = text.indexOf("\n");
    const b = text.indexOf("\n", a + 1);
    if (a < 0 || b < 0) {
      logger?.error("unreadable session channel message", { channel });
      return;
    }
    enqueue({
      type: "message",
      message: {
        sessionId: f.sessionId,
        rev: Number(text.slice(0, a)),
        replica: text.slice(a + 1, b),
        changes: text.slice(b + 1),
      },
    });
  };
  subscriber.on("smessage", onMessage);

  /** Subscribes (again) to channels; the reply also comes after every message sent before. */
  const subscribe = async (channels: readonly string[]) => {
    if (channels.length === 0) return;
    if (connection.clustered) {
      // (One SSUBSCRIBE names channels of one slot.)
      await Promise.all(channels.map((c) => subscriber.ssubscribe(c)));
    } else {
      await subscriber.ssubscribe(...channels);
    }
  };

  /** The sessions' revisions now (0: absent), in one round trip. */
  const readRevisions = async (sessionIds: readonly string[]): Promise<number[]> => {
    const hget = (id: string) => connection.commands.hget(keys.of(id).session, "rev");
    if (connection.clustered) {
      const revs = await connection.call(() => Promise.all(sessionIds.map(hget)));
      return revs.map((r) => Number(r ?? 0));
    }
    const pipeline = connection.commands.pipeline();
    for (const id of sessionIds) pipeline.hget(keys.of(id).session, "rev");
    const replies = (await connection.call(() => pipeline.exec())) ?? [];
    return sessionIds.map((_, i) => {
      const [error, rev] = replies[i] ?? [new Error("no reply")];
      if (error) throw connection.unavailable(error);
      return Number(rev ?? 0);
    });
  };

  /** Runs `run` in the delivery loop, after what came before; resolves once it ran. */
  const inOrder = (run: () => void) =>
    new Promise<void>((resolve, reject) =>
      enqueue({
        type: "run",
        run: () => {
          try {
            run();
            resolve();
          } catch (e) {
            reject(e);
          }
        },
      }),
    );

  /** Begins following: subscribed, then from the revision read after that on. */
  const begin = async (f: Followed) => {
    await connection.call(() => subscribe([f.channel]));
    const [rev = 0] = await readRevisions([f.sessionId]);
    await inOrder(() => {
      f.delivered = rev;
      const early = f.early;
      f.early = [];
      jobs.unshift(...early.map((message): Job => ({ type: "message", message })));
    });
  };

  /**
   * Back after the subscriber connection dropped: subscribed again, the
   * followed sessions' revisions read, then (a barrier: its reply comes
   * after every message published before the read) subscribed once more;
   * a session whose revision is not the one delivered resynchronizes.
   */
  const checkAll = async () => {
    const all = [...followed.values()].filter((f) => f.delivered !== undefined);
    const channels = all.map((f) => f.channel);
    await subscribe(channels);
    const revs = await readRevisions(all.map((f) => f.sessionId));
    await subscribe(channels);
    await inOrder(() => {
      all.forEach((f, i) => {
        const rev = revs[i] ?? 0;
        if (followed.get(f.sessionId) !== f || f.delivered === undefined) return;
        if (rev === 0) {
          // Gone: its end comes on the feed, or was held for commits lost.
          if (f.heldEnd !== undefined) releaseEnd(f);
          else f.delivered = 0;
          return;
        }
        if (rev !== f.delivered) {
          delivery.resyncSession(
            f.sessionId,
            "the session changed while this replica was away from Redis",
          );
          f.delivered = rev;
        }
      });
    });
  };
  let away = false;
  // Back again while checking: the check runs once more, since what it
  // read may predate the second absence.
  let again = false;
  let checking: Promise<void> | undefined;
  const onDown = () => {
    away = true;
  };
  const onBack = () => {
    if (!away || connection.closing) return;
    away = false;
    if (checking !== undefined) {
      again = true;
      return;
    }
    checking = (async () => {
      do {
        again = false;
        // The subscriber may be back before the connection that reads the
        // revisions is: the check is tried again for a while before every
        // watcher is told to start again. (Meanwhile a message whose
        // revision jumps still resynchronizes its session.)
        for (let attempt = 1; ; attempt++) {
          try {
            await checkAll();
            break;
          } catch (error) {
            if (attempt < CHECK_ATTEMPTS && !connection.closing) {
              await delay(connection.timers, CHECK_RETRY_MS);
              continue;
            }
            // Unchecked: every watcher starts again rather than risk a gap.
            logger?.warn("checking followed sessions after a reconnect failed", {
              error: String(error),
            });
            delivery.resync(
              "this replica could not check its sessions after reconnecting to Redis",
            );
            break;
          }
        }
      } while (again && !connection.closing);
    })().finally(() => {
      checking = undefined;
    });
  };
  if (connection.clustered) {
    // ioredis subscribes its per-primary subscribers again itself.
    subscriber.on("-node", onDown);
    subscriber.on("-subscriber", onDown);
    subscriber.on("subscribersReady", onBack);
  } else {
    subscriber.on("close", onDown);
    subscriber.on("ready", onBack);
  }

  const unfollow = (f: Followed) => {
    if (--f.holders > 0) return;
    followed.delete(f.sessionId);
    byChannel.delete(f.channel);
    releaseEnd(f);
    if (connection.closing) return;
    subscriber.sunsubscribe(f.channel).catch((error: unknown) => {
      // Its messages are dropped meanwhile; the reconnect forgets it.
      logger?.debug("unsubscribing from a session channel failed", { error: String(error) });
    });
  };

  return {
    async follow(sessionId) {
      let f = followed.get(sessionId);
      if (f === undefined) {
        const channel = keys.of(sessionId).channel;
        f = {
          sessionId,
          channel,
          holders: 0,
          delivered: undefined,
          early: [],
          heldEnd: undefined,
          ready: undefined,
        };
        followed.set(sessionId, f);
        byChannel.set(channel, f);
      }
      const mine = f;
      mine.holders++;
      mine.ready ??= begin(mine);
      try {
        await mine.ready;
      } catch (e) {
        // The next follow tries again.
        mine.ready = undefined;
        unfollow(mine);
        throw e;
      }
      let held = true;
      return () => {
        if (held) unfollow(mine);
        held = false;
      };
    },

    holdEnd(entry) {
      const f = followed.get(entry.f.sid ?? "");
      if (f === undefined || f.delivered === undefined) return false;
      const rev = Number(entry.f.rev ?? 0);
      if (f.delivered >= rev) {
        f.delivered = 0;
        return false;
      }
      f.heldEnd = { entry, rev };
      return true;
    },

    async caughtUp() {
      const all = [...followed.values()].filter((f) => f.delivered !== undefined);
      if (all.length === 0) return;
      await readRevisions(all.map((f) => f.sessionId));
      await connection.call(() => subscribe(all.map((f) => f.channel)));
      await inOrder(() => undefined);
    },

    received: () => received,

    async stop() {
      subscriber.off("smessage", onMessage);
      jobs.length = 0;
      await Promise.all([running, checking]);
    },
  };
}
