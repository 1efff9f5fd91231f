/**
 * The store contract's fixture for the Redis store, on one Redis or a Redis
 * Cluster: a store on a key prefix of its own (an empty deployment), with a
 * clock the test moves, and siblings on the same deployment and clock.
 */
import { createRedisStore, type RedisStore } from "../../src/server/store/redis-store.js";
import type { StoreFixture } from "./session-store-contract.js";

/** Opens the fixture's first store on `url` under `keyPrefix`. */
export async function redisStoreFixture(url: string, keyPrefix: string): Promise<StoreFixture> {
  let t = 1_000_000;
  const open = () => createRedisStore({ url, keyPrefix, now: () => t, sweepIntervalMs: 20 });
  const store = await open();
  const siblings: RedisStore[] = [];
  return {
    store,
    advance(ms) {
      t += ms;
    },
    async settle() {
      await Promise.all([store, ...siblings].map((s) => s.caughtUp()));
    },
    async sibling() {
      const s = await open();
      siblings.push(s);
      return s;
    },
  };
}
