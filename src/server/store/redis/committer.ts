/**
 * Transactions on the Redis store. A transaction runs its callback against
 * this replica's copy of the session and commits what it staged with the
 * commit script, which checks the copy's revision, writes, appends the
 * change to the feed and refreshes the TTL; on a conflict it runs the
 * callback again on the current state (so callbacks must be pure over
 * their view).
 *
 * Transactions of one session run one at a time in this replica, so they
 * conflict only with other replicas'. Those that queue up while one
 * commits are committed together (group commit): each runs on the state
 * the ones before it left, and one script writes them all. A lone
 * transaction is a batch of one.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { delay } from "../../common/timers.js";
import { clientBytesReached } from "../errors.js";
import { createTransaction, type SessionState, type StagingTransaction } from "../session-state.js";
import type { SessionTransaction, VariableChange } from "../session-store.js";
import type { ClusterLimits } from "./cluster-limits.js";
import { encodeFeedChanges } from "./codec.js";
import type { RedisConnection } from "./connection.js";
import type { FeedWrites } from "./feed-writes.js";
import type { KeySpace } from "./script.js";
import { type CommitReply, commitScript } from "./scripts.js";
import type { Cached, SessionCache } from "./session-cache.js";
import { cloneState, isEmpty, noWrites, payloadOf, stage, type Writes } from "./staging.js";

/** Commits after which the session changed every time end with ABORTED. */
const MAX_ROUNDS = 16;

/** Options of {@link createCommitter}. */
export interface CommitterOptions {
  readonly connection: RedisConnection;
  /** On a Redis Cluster, the limits counted apart: a commit's growth is added to its client's bytes. */
  readonly limits?: ClusterLimits | undefined;
  readonly keys: KeySpace;
  readonly cache: SessionCache;
  /** The session's current state, refreshed (1 round trip), or undefined when it is gone. */
  readonly load: (sessionId: string) => Promise<Cached | undefined>;
  readonly feedWrites: FeedWrites;
  readonly replica: string;
  readonly now: () => number;
  /** Extra real time a session's keys outlive its expiry. */
  readonly graceMs: number;
  readonly feedMaxLen: string;
  readonly feedMaxAgeMs: string;
}

/** SessionStore.transact on Redis. */
export type Transact = <T>(
  sessionId: string,
  fn: (tx: SessionTransaction) => T,
) => Promise<{ value: T } | undefined>;

/** One queued transaction. */
interface Job {
  readonly fn: (tx: SessionTransaction) => unknown;
  readonly resolve: (result: { value: unknown } | undefined) => void;
  readonly reject: (error: unknown) => void;
}

type Outcome = { readonly value: unknown } | { readonly error: unknown };

/** What a batch's callbacks did on one state. */
interface Round {
  readonly outcomes: readonly Outcome[];
  readonly writes: Writes;
  readonly changes: readonly VariableChange[];
  /** Whether a callback threw. */
  readonly refused: boolean;
  /** Makes what the batch wrote the copy's state, once the script committed it. */
  apply(current: Cached): void;
}

/** Creates the committer; see the module comment. */
export function createCommitter(options: CommitterOptions): Transact {
  const { connection, keys, cache, load, feedWrites, replica } = options;
  const pending = new Map<string, Job[]>();

  const transact: Transact = (sessionId, fn) =>
    new Promise((resolve, reject) => {
      const job: Job = { fn, resolve: resolve as Job["resolve"], reject };
      const queue = pending.get(sessionId);
      if (queue !== undefined) {
        queue.push(job);
        return;
      }
      pending.set(sessionId, [job]);
      void drain(sessionId);
    });

  const drain = async (sessionId: string) => {
    for (;;) {
      const jobs = pending.get(sessionId) ?? [];
      if (jobs.length === 0) {
        pending.delete(sessionId);
        return;
      }
      // Later arrivals queue behind this batch.
      pending.set(sessionId, []);
      await commit(sessionId, jobs).catch((error: unknown) => {
        // A bug, not an outcome: no job may wait forever for it.
        for (const job of jobs) job.reject(error);
      });
    }
  };

  /** Commits a batch of transactions of one session with one script. */
  const commit = async (sessionId: string, jobs: readonly Job[]): Promise<void> => {
    // A copy the last script found current (it asked for a reservation
    // first): the next round runs on it without loading it again.
    let confirmed: Cached | undefined;
    for (let round = 1; ; round++) {
      // First on the copy this replica has (the script checks its
      // revision, so a stale copy only costs a retry): 1 round trip when
      // nobody else wrote meanwhile, 2 otherwise.
      const cached = round === 1 ? cache.get(sessionId) : undefined;
      let current: Cached | undefined = confirmed;
      confirmed = undefined;
      try {
        current ??= cached ?? (await load(sessionId));
      } catch (e) {
        for (const job of jobs) job.reject(e);
        return;
      }
      if (current === undefined) {
        for (const job of jobs) job.resolve(undefined);
        return;
      }
      const run = runJobs(current.state, jobs);
      const nothing = isEmpty(run.writes) && run.changes.length === 0;
      if (cached !== undefined && (run.refused || nothing)) {
        // A refusal decided on a copy that may be stale is decided again
        // on the current state, and an answer that writes nothing is
        // confirmed there (loading refreshes the TTL, as a commit does).
        cache.delete(sessionId);
        continue;
      }
      if (nothing) {
        settle(jobs, run.outcomes);
        return;
      }
      const rev = Number(current.rev) + 1;
      const changes = encodeFeedChanges(run.changes);
      // On a Redis Cluster a client's bytes are counted outside the
      // session's slot: what the session grows by is reserved there first,
      // and the script grows it by no more than was reserved.
      const quota = options.limits === undefined ? undefined : current.quota;
      const growth = run.writes.bytes - current.state.bytes;
      let reserved = 0;
      if (options.limits !== undefined && quota !== undefined && growth > 0) {
        let reservation: Awaited<ReturnType<ClusterLimits["reserve"]>>;
        try {
          reservation = await options.limits.reserve(quota.client, growth, quota.maxBytes);
        } catch (e) {
          for (const job of jobs) job.reject(e);
          return;
        }
        if (!reservation.ok) {
          if (jobs.length === 1) {
            (jobs[0] as Job).reject(clientBytesReached(reservation.held, growth, quota.maxBytes));
            return;
          }
          // Each is judged on its own, as on one Redis (below).
          for (const job of jobs) await commit(sessionId, [job]);
          return;
        }
        reserved = growth;
      }
      /** Gives back a reservation the script did not use. */
      const unreserve = async () => {
        if (options.limits === undefined || quota === undefined || reserved === 0) return;
        await options.limits.grow(quota.client, -reserved).catch(() => {
          // The client's bytes stay counted higher by this until its sessions end.
        });
      };
      feedWrites.keep(sessionId, rev, run.changes);
      let reply: CommitReply;
      try {
        reply = await connection.run(commitScript, keys.of(sessionId), {
          expectedRev: current.rev,
          now: String(options.now()),
          graceMs: String(options.graceMs),
          sessionId,
          replica,
          payload: payloadOf(run.writes),
          changes,
          feedMaxLen: options.feedMaxLen,
          feedMaxAgeMs: options.feedMaxAgeMs,
          reserved: String(reserved),
        });
      } catch (e) {
        // Whether it committed is unknown: the copy may be stale, and a
        // reservation stays (counted rather than let through twice).
        cache.delete(sessionId);
        for (const job of jobs) job.reject(e);
        return;
      }
      if (reply.result !== "ok") {
        feedWrites.forget(sessionId, rev);
        await unreserve();
      }
      switch (reply.result) {
        case "reserve":
          // This copy did not know its client: reserve, then commit again
          // on it (the script found its revision current).
          current.quota = reply.quota;
          confirmed = current;
          if (round >= MAX_ROUNDS) {
            for (const job of jobs) {
              job.reject(
                new ConnectError("the session's bytes could not be counted; retry", Code.Aborted),
              );
            }
            return;
          }
          continue;
        case "ok":
          if (run.changes.length > 0)
            feedWrites.countCommit(sessionId, reply.rev, replica, changes);
          await options.limits?.grow(reply.limitsClient, reply.grew - reserved).catch(() => {
            // Committed already: a failure to count its bytes must not fail the write
            // (the client's bytes are off by this growth until its session ends).
          });
          run.apply(current);
          current.rev = reply.rev;
          current.state.record = { ...current.state.record, expiresAt: reply.expiresAt };
          settle(jobs, run.outcomes);
          return;
        case "absent":
        case "expired":
          cache.delete(sessionId);
          for (const job of jobs) job.resolve(undefined);
          return;
        case "clientbytes": {
          // Decided on the current revision (the script checks it first).
          if (jobs.length === 1) {
            (jobs[0] as Job).reject(clientBytesReached(reply.held, reply.adding, reply.max));
            return;
          }
          // Together they take the session's client past its bytes: each
          // is judged on its own, so a change that fits is not refused for
          // another's growth.
          for (const job of jobs) await commit(sessionId, [job]);
          return;
        }
        case "conflict":
          // Another replica committed first: run again on its result,
          // after a short random pause so that racing replicas spread out
          // (not after a first try on a stale copy: that is no race).
          cache.delete(sessionId);
          if (cached !== undefined) continue;
          if (round >= MAX_ROUNDS) {
            const error = new ConnectError(
              jobs.length === 1
                ? `the session changed ${round} times while this change was being made; retry`
                : `the session changed ${round} times while these changes were being made; retry`,
              Code.Aborted,
            );
            for (const job of jobs) job.reject(error);
            return;
          }
          await delay(connection.timers, Math.random() * 2 * round);
      }
    }
  };

  return transact;
}

/**
 * Runs a batch's callbacks on `state`, each on what the ones before it
 * left. A lone transaction runs on the state itself: its writes stay in
 * its overlay until applied. Several run on a copy, since each must see
 * the previous ones' writes and readers of this replica none of them
 * until the script has committed them.
 */
function runJobs(state: SessionState, jobs: readonly Job[]): Round {
  const working = jobs.length === 1 ? state : cloneState(state);
  const writes = noWrites(working);
  const changes: VariableChange[] = [];
  const outcomes: Outcome[] = [];
  let lone: StagingTransaction | undefined;
  let refused = false;
  for (const job of jobs) {
    const tx = createTransaction(working);
    let value: unknown;
    try {
      value = job.fn(tx.api);
    } catch (error) {
      refused = true;
      outcomes.push({ error });
      continue;
    }
    // (What cannot be encoded fails the whole batch: nothing is written.)
    stage(writes, tx, working, false);
    changes.push(...tx.changes);
    if (working === state) lone = tx;
    else tx.commit();
    outcomes.push({ value });
  }
  return {
    outcomes,
    writes,
    changes,
    refused,
    apply(current) {
      if (working === state) lone?.commit();
      else current.state = working;
    },
  };
}

function settle(jobs: readonly Job[], outcomes: readonly Outcome[]): void {
  jobs.forEach((job, k) => {
    const outcome = outcomes[k] as Outcome;
    if ("error" in outcome) job.reject(outcome.error);
    else job.resolve({ value: outcome.value });
  });
}
