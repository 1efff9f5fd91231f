import { afterEach } from "vitest";
import type { BridgeServerOptions } from "../../src/server/index.js";
import {
  createRedisStore,
  type RedisStore,
  type RedisStoreOptions,
} from "../../src/server/store/redis-store.js";
import { type RunningBridge, startBridge } from "./bridge.js";

/** A bridge replica: a real bridge on its own Redis store. */
export interface Replica {
  readonly bridge: RunningBridge;
  readonly store: RedisStore;
}

/** What {@link replicasPerTest} starts a replica with. */
export interface ReplicaOptions {
  /** The deployment's key prefix: replicas sharing one share their sessions. */
  readonly keyPrefix: string;
  readonly store?: Partial<RedisStoreOptions>;
  readonly bridge?: BridgeServerOptions;
}

/**
 * For suites that run bridge replicas on one Redis (`redisUrl()` is read
 * when a replica starts): returns a starter whose replicas, bridge and
 * store, are all stopped after each test.
 */
export function replicasPerTest(
  redisUrl: () => string,
): (options: ReplicaOptions) => Promise<Replica> {
  const running: Replica[] = [];
  afterEach(async () => {
    for (const { bridge, store } of running.splice(0)) {
      await bridge.stop();
      await store.close();
    }
  });
  return async ({ keyPrefix, store: storeOptions = {}, bridge: bridgeOptions = {} }) => {
    const store = await createRedisStore({ url: redisUrl(), keyPrefix, ...storeOptions });
    const bridge = await startBridge({ sessionStore: store, ...bridgeOptions });
    const replica = { bridge, store };
    running.push(replica);
    return replica;
  };
}
