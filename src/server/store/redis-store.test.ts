import { afterAll, beforeAll } from "vitest";
import { startRedis, type TestRedis } from "../../../test/support/redis-server.js";
import { describeSessionStoreContract } from "../../../test/support/session-store-contract.js";
import { createRedisStore, type RedisStore } from "./redis-store.js";

let redis: TestRedis;
let n = 0;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
});

describeSessionStoreContract(
  "redis",
  async () => {
    let t = 1_000_000;
    // A key prefix per test: every test starts on an empty deployment.
    const keyPrefix = `contract${n++}:`;
    const url = `redis://127.0.0.1:${redis.port}`;
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
  },
  { multiNode: true },
);
