/**
 * The Redis store on a Redis Cluster (three primaries with a replica
 * each): the whole store contract, and what the Cluster layout itself
 * promises (every script on one slot, the groups spread over the
 * primaries, counts and tools across groups).
 */
import { Cluster } from "ioredis";
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from "vitest";
import { startRedisCluster, type TestRedisCluster } from "../../../test/support/redis-cluster.js";
import { redisStoreFixture } from "../../../test/support/redis-store-fixture.js";
import { describeSessionStoreContract } from "../../../test/support/session-store-contract.js";
import { CLUSTER_GROUPS, keySpace } from "./redis/script.js";
import { createRedisStore } from "./redis-store.js";
import type { StoreEvent, VariableRecord } from "./session-store.js";

let cluster: TestRedisCluster;
let n = 0;
beforeAll(async () => {
  cluster = await startRedisCluster();
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

describeSessionStoreContract(
  "redis cluster",
  // A key prefix per test: every test starts on an empty deployment.
  () => redisStoreFixture(cluster.url, `contract${n++}:`),
  { multiNode: true },
);

describe("the Redis store's layout on a Redis Cluster", () => {
  const init = (id: string) => ({ id, metadata: {}, ttlMs: 60_000, allowedTools: [] });

  async function admin(): Promise<Cluster> {
    const c = new Cluster(
      cluster.nodes.map((node) => ({ host: "127.0.0.1", port: node.port })),
      { lazyConnect: true },
    );
    onTestFinished(() => c.disconnect());
    await c.connect();
    return c;
  }

  it("spreads sessions over every primary and counts them across groups", async () => {
    const keyPrefix = `layout${n++}:`;
    const store = await createRedisStore({ url: cluster.url, keyPrefix, sweepIntervalMs: 0 });
    onTestFinished(() => store.close());
    const ids = Array.from({ length: 200 }, (_, i) => `session-${i}`);
    for (const id of ids) {
      await store.createSession(init(id), 1000);
      await store.transact(id, (tx) => tx.setData("k", id, id.length));
    }
    expect((await store.stats()).sessions).toBe(200);
    const c = await admin();
    const perPrimary = await Promise.all(
      c.nodes("master").map(async (node) => (await node.keys(`${keyPrefix}*`)).length),
    );
    expect(perPrimary).toHaveLength(3);
    // Every primary holds some of the groups, and every group has sessions.
    for (const keys of perPrimary) expect(keys).toBeGreaterThan(0);
    const groups = new Set(
      (
        await Promise.all(c.nodes("master").map((node) => node.keys(`${keyPrefix}*:sessions`)))
      ).flat(),
    );
    expect(groups.size).toBe(CLUSTER_GROUPS);
  });

  it("holds the deployment's session limit across groups, on every instance", async () => {
    const keyPrefix = `limits${n++}:`;
    const open = () => createRedisStore({ url: cluster.url, keyPrefix, sweepIntervalMs: 0 });
    const [a, b] = await Promise.all([open(), open()]);
    onTestFinished(async () => {
      await Promise.all([a.close(), b.close()]);
    });
    // Created at once on two instances: no more than the limit get through.
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).createSession(init(`s${i}`), 7)),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(7);
    expect((await a.stats()).sessions).toBe(7);
    // Ending one gives its place back.
    const live = results.flatMap((r, i) => (r.status === "fulfilled" ? [`s${i}`] : []));
    await a.deleteSession(live[0] as string, "cleanup");
    expect((await b.createSession(init("late"), 7)).created).toBe(true);
    await expect(b.createSession(init("later"), 7)).rejects.toThrow("session limit reached");
  });
  it("checks the followed sessions once a primary's subscriber connection is back: those that moved resynchronize, the others not", async () => {
    const keyPrefix = `channels${n++}:`;
    const open = () => createRedisStore({ url: cluster.url, keyPrefix, sweepIntervalMs: 0 });
    const [a, b] = await Promise.all([open(), open()]);
    onTestFinished(async () => {
      await Promise.all([a.close(), b.close()]);
    });
    const c = await admin();
    // The primary (its port) that holds a session's channel.
    const ranges = await c.cluster("SLOTS");
    const holder = async (sessionId: string) => {
      const channel = keySpace(keyPrefix, true).of(sessionId).channel;
      const slot = Number(await c.cluster("KEYSLOT", channel));
      return ranges.find(([from, to]) => slot >= from && slot <= to)?.[2]?.[1];
    };
    // Two sessions whose channels are on different primaries.
    const moved = "moved";
    let still = "still-0";
    for (let i = 1; (await holder(still)) === (await holder(moved)); i++) still = `still-${i}`;
    const events: StoreEvent[] = [];
    b.subscribe((e) => events.push(e));
    const write = (sessionId: string, version: number) =>
      a.transact(sessionId, (tx) => {
        const variable: VariableRecord = {
          id: "var:1:x",
          name: "x",
          type: "integer",
          value: version,
          constraintsJson: "{}",
          metadata: {},
          source: 0,
          version,
          updatedAt: version,
          accessControlJson: "",
          binary: false,
          changedBy: "test",
          changeMetadata: {},
          bytes: 8,
        };
        tx.putVariable(variable);
        tx.emit({
          sessionId,
          kind: "value_changed",
          variable,
          source: "test",
          metadata: {},
          timestamp: version,
        });
      });
    for (const id of [moved, still]) {
      await a.createSession(init(id), 10);
      await b.follow(id);
      await write(id, 0);
    }
    await b.caughtUp();
    // Cut the subscribers on the primary of the moved session's channel; a
    // commit made before b subscribes again is lost to it.
    const port = await holder(moved);
    const node = c.nodes("master").find((m) => m.options.port === port);
    await node?.call("CLIENT", "KILL", "TYPE", "pubsub");
    await write(moved, 1);
    await vi.waitFor(() => expect(events.some((e) => e.type === "resync")).toBe(true), {
      timeout: 10_000,
    });
    expect(events.filter((e) => e.type === "resync")).toEqual([
      { type: "resync", reason: expect.any(String), sessionId: moved },
    ]);
    // Both followed still: their next commits are delivered.
    await write(moved, 2);
    await write(still, 2);
    await b.caughtUp();
    const last = (id: string) =>
      events
        .flatMap((e) =>
          e.type === "change" && e.change.sessionId === id ? [e.change.variable.version] : [],
        )
        .at(-1);
    expect([last(moved), last(still)]).toEqual([2, 2]);
  });
});
