/**
 * feed-work: what each of 4 replicas (Redis store instances on one Redis)
 * reads of the changes, with writes spread over 1,000 sessions with
 * affinity: each replica follows (has watch streams on) a quarter of the
 * sessions and writes to them. One row per replica: the commits it read
 * from the session channels plus the change feed entries it read, against
 * its share of the commits written (target ≤ 1.5×), beside what reading the
 * whole feed costs (every entry the deployment appends: 4× its share).
 */
import type { VariableRecord } from "unified-session-bridge/server";
import { createRedisStore, type FeedRead, type RedisStore } from "./support/internals.ts";
import { startRedisServer } from "./support/redis-server.ts";
import type { BenchContext, BenchResult } from "./support/result.ts";
import { round } from "./support/stats.ts";

const REPLICAS = 4;
const SESSIONS = 1000;

/** Sets the session's one variable, as a SetVariable call commits it. */
function write(store: RedisStore, sessionId: string, version: number): Promise<unknown> {
  return store.transact(sessionId, (tx) => {
    const value = `value ${version}`;
    const variable: VariableRecord = {
      id: "var:1:x",
      name: "x",
      type: "string",
      value,
      constraintsJson: "{}",
      metadata: {},
      source: 0,
      version,
      updatedAt: version,
      accessControlJson: "",
      binary: false,
      changedBy: "feed-work",
      changeMetadata: {},
      bytes: value.length,
    };
    tx.putVariable(variable);
    tx.emit({
      sessionId,
      kind: version === 0 ? "registered" : "value_changed",
      variable,
      source: "feed-work",
      metadata: {},
      timestamp: version,
    });
  });
}

/** Runs the benchmark; see the module comment. */
export async function run(ctx: BenchContext): Promise<BenchResult[]> {
  const writesPerSession = Math.max(2, Math.round(10 * ctx.scale));
  const redis = await startRedisServer();
  const url = `redis://127.0.0.1:${redis.port}`;
  const stores: RedisStore[] = [];
  try {
    for (let r = 0; r < REPLICAS; r++)
      stores.push(await createRedisStore({ url, keyPrefix: "fw:" }));
    const owner = (i: number) => stores[i % REPLICAS] as RedisStore;
    const ids = Array.from({ length: SESSIONS }, (_, i) => `feed-work-${i}`);
    ctx.log(`feed-work: ${SESSIONS} sessions, ${writesPerSession} writes each`);
    await Promise.all(
      ids.map(async (id, i) => {
        await owner(i).createSession({ id, metadata: {}, ttlMs: 600_000, allowedTools: [] }, 1e9);
        await owner(i).follow(id);
      }),
    );
    const read = () => stores.map((s) => s.feedRead());
    const appended = () => stores.reduce((n, s) => n + s.feedAppended().entries, 0);
    const before = read();
    const appendedBefore = appended();
    for (let w = 0; w < writesPerSession; w++) {
      await Promise.all(ids.map((id, i) => write(owner(i), id, w)));
    }
    await Promise.all(stores.map((s) => s.caughtUp()));
    const written = SESSIONS * writesPerSession;
    const share = written / REPLICAS;
    // What every replica read before: each entry of the deployment's feed
    // (its commits included), counted as the replicas appended them.
    const wholeFeed = appended() - appendedBefore;
    const after = read();
    return stores.map((_, r) => {
      const was = before[r] as FeedRead;
      const now = after[r] as FeedRead;
      const channels = now.channels - was.channels;
      const feed = now.feed - was.feed;
      const ratio = (channels + feed) / share;
      return {
        name: `feed-work/4-replicas/1000-sessions/replica-${r + 1}`,
        value: round(ratio, 2),
        unit: "× share",
        target: "≤ 1.5× share",
        pass: ratio <= 1.5,
        ratio: round(ratio / 1.5, 2),
        display:
          `read ${channels + feed} (${channels} channel messages + ${feed} feed entries) ` +
          `of share ${share} = ${ratio.toFixed(2)}×; whole feed: ${wholeFeed} = ${(wholeFeed / share).toFixed(2)}×`,
        details: { written, share, channels, feed, wholeFeed, writesPerSession },
      };
    });
  } finally {
    await Promise.all(stores.map((s) => s.close()));
    await redis.stop();
  }
}
