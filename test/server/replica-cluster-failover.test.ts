/**
 * A Redis Cluster primary killed (SIGKILL) while writes go on: the cluster
 * promotes its replica, the stores follow it by themselves, and with
 * `durability: "replicated"` every write they acknowledged is read back
 * afterwards. (The promoted primary has no replica of its own until the
 * killed node comes back as one: until then its writes are refused, as
 * none can be confirmed.)
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { expect, it, onTestFinished, vi } from "vitest";
import { createRedisStore, type RedisStore } from "../../src/server/store/redis-store.js";
import { startRedisCluster } from "../support/redis-cluster.js";

const init = (id: string) => ({ id, metadata: {}, ttlMs: 600_000, allowedTools: [] });

it("loses no acknowledged write when a primary is killed during a write burst, under replicated durability", async () => {
  const cluster = await startRedisCluster();
  onTestFinished(() => cluster.stop());
  const open = () =>
    createRedisStore({
      url: cluster.url,
      keyPrefix: "failover:",
      durability: "replicated",
      sweepIntervalMs: 0,
    });
  const [a, b] = await Promise.all([open(), open()]);
  onTestFinished(async () => {
    await Promise.all([a.close(), b.close()]);
  });
  const sessions = Array.from({ length: 48 }, (_, i) => `burst-${i}`);
  for (const id of sessions) await a.createSession(init(id), 1000);

  // Each session counts up on its own; the last value a write was
  // acknowledged for is what must be read back.
  const acknowledged = new Map<string, number>(sessions.map((id) => [id, 0]));
  const refused = new Set<Code>();
  const gone: string[] = [];
  let stop = false;
  const writer = async (store: RedisStore, id: string) => {
    for (let n = 1; !stop; ) {
      try {
        const done = await store.transact(id, (tx) => tx.setData("n", n, 8));
        if (done === undefined) gone.push(id);
        else acknowledged.set(id, n);
        n++;
      } catch (error) {
        // During the failover: refused (never acknowledged), tried again with a new value.
        refused.add(ConnectError.from(error).code);
        n++;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  };
  const writing = Promise.all(sessions.map((id, i) => writer(i % 2 ? a : b, id)));
  await vi.waitFor(() => expect(Math.min(...acknowledged.values())).toBeGreaterThan(5), {
    timeout: 10_000,
  });
  const victim = (await cluster.primaries())[0];
  await victim?.kill();
  // The cluster promotes the victim's replica (the killed node answers
  // nothing, so three primaries means one was promoted); the stores follow
  // it. The victim comes back as the replica of the one promoted.
  await vi.waitFor(async () => expect(await cluster.primaries()).toHaveLength(3), {
    timeout: 30_000,
    interval: 200,
  });
  await cluster.healthy();
  await victim?.restart();
  await cluster.replicated();
  const afterKill = new Map(acknowledged);
  await vi.waitFor(
    () => {
      for (const id of sessions) {
        expect(acknowledged.get(id)).toBeGreaterThan(afterKill.get(id) ?? 0);
      }
    },
    { timeout: 30_000, interval: 100 },
  );
  stop = true;
  await writing;
  // No session was lost; some writes were refused while the primary was gone, as UNAVAILABLE.
  expect(gone).toEqual([]);
  expect([...refused]).toEqual([Code.Unavailable]);
  await vi.waitFor(() => expect(a.healthy && b.healthy).toBe(true), { timeout: 10_000 });

  // A store that starts now reads every acknowledged write.
  const reader = await open();
  onTestFinished(() => reader.close());
  for (const id of sessions) {
    const n = (await reader.read(id, (view) => view.data("n")))?.value;
    expect(n).toBeGreaterThanOrEqual(acknowledged.get(id) ?? 0);
  }
}, 120_000);
