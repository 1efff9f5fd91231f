/**
 * feed-work: what each of 4 replicas (Redis store instances on one Redis)
 * reads of the changes, with writes spread over 1,000 sessions with
 * affinity: each replica follows (has watch streams on) a quarter of the
 * sessions and writes to them. Counted per replica: commits read from the
 * session channels plus change feed entries, against its share of the
 * commits written (target ≤ 1.5×), beside what reading the whole feed cost
 * before (every commit of the deployment: 4× its share).
 */
import { createRedisStore, type RedisStore } from "./support/internals.ts";
import { startRedisServer } from "./support/redis-server.ts";
import type { BenchContext, BenchResult } from "./support/result.ts";
import { round } from "./support/stats.ts";

const REPLICAS = 4;
const SESSIONS = 1000;

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
    const before = stores.map((s) => s.feedRead());
    for (let w = 0; w < writesPerSession; w++) {
      await Promise.all(ids.map((id, i) => owner(i).transact(id, (tx) => tx.setData("k", w, 8))));
    }
    await Promise.all(stores.map((s) => s.caughtUp()));
    const written = SESSIONS * writesPerSession;
    const share = written / REPLICAS;
    const reads = stores.map((s, r) => {
      const now = s.feedRead();
      const was = before[r] as { feed: number; channels: number };
      return now.feed - was.feed + now.channels - was.channels;
    });
    const worst = Math.max(...reads) / share;
    return [
      {
        name: "feed-work/4-replicas/1000-sessions",
        value: round(worst, 2),
        unit: "× share",
        target: "≤ 1.5× share",
        pass: worst <= 1.5,
        ratio: round(worst / 1.5, 2),
        display: `read per replica ${reads.join(", ")} of ${written} written (share ${share}); whole feed before: ${written} each (${REPLICAS}× share)`,
        details: { written, share, reads, wholeFeedBefore: written, writesPerSession },
      },
    ];
  } finally {
    await Promise.all(stores.map((s) => s.close()));
    await redis.stop();
  }
}
