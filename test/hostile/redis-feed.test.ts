/**
 * A caller writing large values on the Redis store: the deployment's
 * change feed must not keep a copy of every value written. Redis holds a
 * small multiple of what the session holds while it lives, goes back near
 * where it started once the session is cleaned up, and the feed is trimmed
 * by age as well as by length, while a watcher on another replica still
 * sees every write, in version order, with its value.
 */
import { spawnSync } from "node:child_process";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import type { VariableUpdate } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { createRedisStore, type RedisStoreOptions } from "../../src/server/store/redis-store.js";
import type { StoreEvent } from "../../src/server/store/session-store.js";
import { decodeValue, encodeValue } from "../../src/values/index.js";
import { startRedis, type TestRedis } from "../support/redis-server.js";
import { replicasPerTest } from "../support/replicas.js";
import { until } from "../support/wait.js";

const MiB = 1024 * 1024;
/** A string whose encoded value (quotes included) is just under the 1 MiB value limit. */
const big = (i: number) => encodeValue("string", `${i}:`.padEnd(MiB - 64, "x")).any;

let redis: TestRedis;
let admin: Redis;
let deployment = 0;
beforeAll(async () => {
  redis = await startRedis();
  admin = new Redis(redis.url);
});
afterAll(async () => {
  admin?.disconnect();
  await redis?.stop();
});

const replicaOf = replicasPerTest(() => redis.url);

/** A replica of one deployment (a key prefix of its own). */
const replica = (keyPrefix: string, store: Partial<RedisStoreOptions> = {}) =>
  replicaOf({ keyPrefix, store, bridge: { maxSessionBytes: 4 * MiB } });

/**
 * What Redis holds, without its connections' buffers: the query buffer of
 * the connection that sent the last 1 MiB command is only given back by
 * Redis's own timer once the connection has been idle for a while.
 */
async function usedMemory(): Promise<number> {
  const info = await admin.info("memory");
  const bytes = (name: string) => Number(new RegExp(`^${name}:(\\d+)`, "m").exec(info)?.[1]);
  return bytes("used_memory") - bytes("mem_clients_normal");
}

describe("the Redis change feed under large writes", () => {
  it("holds ids and versions, not values: Redis grows with what the session holds, and shrinks back after cleanup", async () => {
    const prefix = `feed${deployment++}:`;
    const { bridge, store } = await replica(prefix);
    const client = bridge.client("grpc");
    const before = await usedMemory();
    const appendedBefore = store.feedAppended();

    const { sessionId } = await client.initializeSession({});
    await client.registerVariable({
      sessionId,
      name: "blob",
      type: "string",
      initialValue: big(0),
    });
    for (let i = 1; i <= 300; i++) {
      await client.setVariable({ sessionId, variableIdentifier: "blob", value: big(i) });
    }
    const held = (await store.read(sessionId, (view) => view.bytes))?.value ?? 0;
    const grown = (await usedMemory()) - before;
    const appended = store.feedAppended();
    const entries = appended.entries - appendedBefore.entries;
    const bytes = appended.bytes - appendedBefore.bytes;
    const feedLength = await admin.xlen(`${prefix}feed`);
    // The same counts on the replica's /metrics.
    const metrics = await (await fetch(`${bridge.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(new RegExp(`^bridge_feed_appended_entries ${appended.entries}$`, "m"));
    expect(metrics).toMatch(new RegExp(`^bridge_feed_appended_bytes ${appended.bytes}$`, "m"));
    const read = store.feedRead();
    expect(metrics).toMatch(
      new RegExp(`^bridge_feed_read_entries\\{source="channel"\\} ${read.channels}$`, "m"),
    );
    expect(metrics).toMatch(
      new RegExp(`^bridge_feed_read_entries\\{source="feed"\\} ${read.feed}$`, "m"),
    );

    // Before, every entry carried the whole value: 377 MiB for 2-4 MiB held.
    expect(held).toBeGreaterThan(MiB);
    expect(grown, `Redis grew ${grown} bytes for ${held} held`).toBeLessThan(4 * held);
    expect(entries).toBeGreaterThanOrEqual(301);
    expect(bytes / entries, `${bytes} bytes in ${entries} feed entries`).toBeLessThan(200);
    // Commits are published on the session's channel, not kept in the feed.
    expect(feedLength).toBeLessThanOrEqual(1);

    await client.cleanupSession({ sessionId });
    // Redis gives back what its tables were sized for on its own timer.
    let after = Number.POSITIVE_INFINITY;
    await until(async () => {
      after = (await usedMemory()) - before;
      return after < MiB;
    }, "Redis to shrink back").catch(() => undefined);
    expect(after, `Redis still holds ${after} bytes more after cleanup`).toBeLessThan(MiB);
  }, 120_000);

  it("a watcher on another replica gets every write's value in version order, read from the session's keys", async () => {
    const prefix = `feed${deployment++}:`;
    const [a, b] = await Promise.all([replica(prefix), replica(prefix)]);
    const { sessionId } = await a.bridge.client().initializeSession({});
    await a.bridge
      .client()
      .registerVariable({ sessionId, name: "blob", type: "string", initialValue: big(0) });
    const abort = new AbortController();
    const stream = b.bridge
      .client("grpc")
      .watchVariables(
        { sessionId, variableIdentifiers: ["blob"], syncMarker: true },
        { signal: abort.signal },
      );
    const iterator = stream[Symbol.asyncIterator]();
    // The sync marker says the watch is open.
    expect((await iterator.next()).value?.updateType).toBe("sync");
    const writes = 20;
    for (let i = 1; i <= writes; i++) {
      await a.bridge.client().setVariable({ sessionId, variableIdentifier: "blob", value: big(i) });
    }
    const seen: VariableUpdate[] = [];
    while ((seen.at(-1)?.variable?.version ?? 0) < writes) {
      const next = await iterator.next();
      if (next.done === true) break;
      if (next.value.updateType === "value_changed") seen.push(next.value);
    }
    abort.abort();
    const versions = seen.map((u) => Number(u.variable?.version));
    // Versions never go backwards and the last write arrives; a value
    // overwritten before this replica read it may be skipped for the newer one.
    expect(versions).toEqual([...versions].sort((x, y) => x - y));
    expect(new Set(versions).size).toBe(versions.length);
    expect(versions.at(-1)).toBe(writes);
    for (const update of seen) {
      const value = decodeValue(update.variable?.value).value as string;
      expect(value.startsWith(`${update.variable?.version}:`)).toBe(true);
    }
  }, 60_000);

  it("carries no large lock configuration, optimizer id or constraints either", async () => {
    const prefix = `feed${deployment++}:`;
    const { bridge, store } = await replica(prefix);
    const client = bridge.client("grpc");
    const { sessionId } = await client.initializeSession({});
    const before = store.feedAppended();
    const huge = "x".repeat(MiB);
    for (let i = 0; i < 10; i++) {
      await client.registerVariable({
        sessionId,
        name: "pick",
        type: "choice",
        constraintsJson: JSON.stringify({ choices: [`${i}${huge.slice(0, 512 * 1024)}`, "b"] }),
        initialValue: encodeValue("choice", "b").any,
      });
      const optimizerId = `${i}${huge.slice(0, 256 * 1024)}`;
      await client.startOptimization({
        sessionId,
        variableIdentifier: "pick",
        optimizerId,
        optimizerConfig: { config: huge },
      });
      await client.stopOptimization({ sessionId, variableIdentifier: "pick", optimizerId });
      await client.deleteVariable({ sessionId, variableIdentifier: "pick" });
    }
    const after = store.feedAppended();
    const entries = after.entries - before.entries;
    const bytes = after.bytes - before.bytes;
    expect(entries).toBe(40);
    expect(bytes / entries, `${bytes} bytes in ${entries} feed entries`).toBeLessThan(5 * 1024);
  }, 60_000);

  it("is trimmed by age: old entries go once newer ones are appended", async () => {
    const prefix = `feed${deployment++}:`;
    const { bridge, store } = await replica(prefix, { feedMaxAgeMs: 500 });
    const client = bridge.client();
    // Session ends are what the feed holds (commits go on session channels).
    const endOne = async () => {
      const { sessionId } = await client.initializeSession({});
      await client.cleanupSession({ sessionId });
    };
    for (let i = 1; i <= 250; i++) await endOne();
    // Ages are on Redis's own clock (its TIME, which the trim reads): wait
    // until that clock is 700 ms past the last entry written.
    const [last] = await admin.xrevrange(`${prefix}feed`, "+", "-", "COUNT", 1);
    const lastMs = Number(last?.[0].split("-")[0]);
    await until(async () => {
      const [seconds, micros] = await admin.time();
      return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000) - lastMs > 700;
    }, "Redis's clock 700 ms past the last entry");
    await endOne();
    // Trimming is approximate (whole stream nodes of up to 100 entries).
    expect(store.feedAppended().entries).toBeGreaterThanOrEqual(251);
    expect(await admin.xlen(`${prefix}feed`)).toBeLessThanOrEqual(100);
  }, 60_000);

  it("a replica that falls behind a trim ends its watchers to resynchronize, never skipping entries silently", async () => {
    const keyPrefix = `feed${deployment++}:`;
    const writer = await createRedisStore({ url: redis.url, keyPrefix });
    const slow = await createRedisStore({ url: redis.url, keyPrefix });
    onTestFinished(async () => {
      await Promise.all([writer.close(), slow.close()]);
    });
    const events: StoreEvent[] = [];
    let stalled = false;
    slow.subscribe((event) => {
      events.push(event);
      if (stalled) return;
      stalled = true;
      // While this replica is busy (its event loop held), the feed moves
      // on and is trimmed past what it has read.
      // (Written as the scripts write: numbered entries, trimmed.)
      const feed = `${keyPrefix}feed`;
      const add = (n: number) =>
        `INCR ${keyPrefix}feedseq\nXADD ${feed} * n ${n} t e sid gone${n} why cleanup\n`;
      spawnSync("redis-cli", ["-p", String(redis.port)], {
        input: `${add(2)}${add(3)}${add(4)}XTRIM ${feed} MAXLEN 1\n`,
      });
    });
    const session = { metadata: {}, ttlMs: 60_000, allowedTools: [] };
    await writer.createSession({ id: "first", ...session }, 100);
    await writer.deleteSession("first", "cleanup");
    await slow.caughtUp();
    await until(() => events.some((e) => e.type === "resync"), "a resync event");
    expect(events[0]).toEqual({ type: "session_ended", sessionId: "first", reason: "cleanup" });
    // What the trim left is delivered after the resync, and nothing else.
    expect(events.slice(1)).toEqual([
      expect.objectContaining({ type: "resync" }),
      { type: "session_ended", sessionId: "gone4", reason: "cleanup" },
    ]);
  });
});
