import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from "vitest";
import { startRedis, type TestRedis } from "../../../test/support/redis-server.js";
import { redisStoreFixture } from "../../../test/support/redis-store-fixture.js";
import { describeSessionStoreContract } from "../../../test/support/session-store-contract.js";
import { commitScript } from "./redis/scripts.js";
import { createRedisStore, type RedisStore } from "./redis-store.js";
import type { StoreEvent, VariableRecord } from "./session-store.js";

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
  // A key prefix per test: every test starts on an empty deployment.
  () => redisStoreFixture(`redis://127.0.0.1:${redis.port}`, `contract${n++}:`),
  { multiNode: true },
);

describe("the Redis store's change feed", () => {
  const url = () => `redis://127.0.0.1:${redis.port}`;
  const record = (version: number, value: string): VariableRecord => ({
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
    changedBy: "test",
    changeMetadata: { step: String(version) },
    bytes: value.length,
  });
  const write = (store: RedisStore, sessionId: string, version: number, value: string) =>
    store.transact(sessionId, (tx) => {
      const next = record(version, value);
      tx.putVariable(next);
      tx.emit({
        sessionId,
        kind: version === 0 ? "registered" : "value_changed",
        variable: next,
        source: "test",
        metadata: next.changeMetadata,
        timestamp: version,
      });
    });
  const init = (id: string) => ({ id, metadata: {}, ttlMs: 60_000, allowedTools: [] });

  /** Counts the variable reads (HMGET of a session's variables) replicas send, scripts' aside. */
  async function countVariableReads(): Promise<{ readonly count: number }> {
    const monitor = await new Redis(url()).monitor();
    onTestFinished(() => monitor.disconnect());
    const counter = { count: 0 };
    monitor.on("monitor", (_time: string, args: string[], source: string) => {
      if (source !== "lua" && args[0]?.toLowerCase() === "hmget" && args[1]?.endsWith(":v")) {
        counter.count++;
      }
    });
    return counter;
  }

  let n = 0;
  async function deployment() {
    const keyPrefix = `feedcases${n++}:`;
    const open = () => createRedisStore({ url: url(), keyPrefix, sweepIntervalMs: 0 });
    const [a, b] = await Promise.all([open(), open()]);
    const admin = new Redis(url());
    onTestFinished(async () => {
      admin.disconnect();
      await Promise.all([a.close(), b.close()]);
    });
    return { a, b, admin, keyPrefix };
  }

  it("reads values back only for the sessions it follows, and its own commits never", async () => {
    const { a, b } = await deployment();
    const onA: StoreEvent[] = [];
    const onB: StoreEvent[] = [];
    a.subscribe((e) => onA.push(e));
    b.subscribe((e) => onB.push(e));
    await Promise.all([a.follow("watched"), b.follow("watched")]);
    await a.createSession(init("watched"), 10);
    await a.createSession(init("quiet"), 10);
    const reads = await countVariableReads();
    for (let v = 0; v < 5; v++) {
      await write(a, "watched", v, `w${v}`);
      await write(a, "quiet", v, `q${v}`);
    }
    await Promise.all([a.caughtUp(), b.caughtUp()]);
    const changes = (events: StoreEvent[]) =>
      events.flatMap((e) =>
        e.type === "change" ? [`${e.change.sessionId} ${e.change.variable.value}`] : [],
      );
    // The writer delivers its own, from memory, for the session it follows.
    expect(changes(onA)).toHaveLength(5);
    // The other replica: the watched session's changes with their values
    // (a value replaced before it was read arrives as the newer one), none
    // of the other session's, and at most one read per batch of entries.
    const seen = changes(onB);
    expect(seen.every((c) => c.startsWith("watched w"))).toBe(true);
    expect(seen).toEqual([...new Set(seen)].sort());
    expect(seen.at(-1)).toBe("watched w4");
    expect(reads.count).toBeGreaterThan(0);
    expect(reads.count).toBeLessThanOrEqual(5);
    const last = onB.at(-1);
    expect(last?.type === "change" && last.change.metadata).toEqual({ step: "4" });
  });

  it("delivers another replica's rapid writes in version order, each version at most once, up to the last", async () => {
    const { a, b } = await deployment();
    const versions: number[] = [];
    b.subscribe((e) => {
      if (e.type === "change") versions.push(e.change.variable.version);
    });
    await b.follow("s");
    await a.createSession(init("s"), 10);
    await write(a, "s", 0, "v0");
    // Many writes in flight at once: the other replica often reads a
    // variable after a newer write replaced it.
    await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        a.transact("s", (tx) => {
          const current = tx.variable("x") as VariableRecord;
          const next = record(current.version + 1, `v${i}`);
          tx.putVariable(next);
          tx.emit({
            sessionId: "s",
            kind: "value_changed",
            variable: next,
            source: "test",
            metadata: {},
            timestamp: i,
          });
        }),
      ),
    );
    await b.caughtUp();
    expect(versions).toEqual([...new Set(versions)].sort((x, y) => x - y));
    expect(versions.at(-1)).toBe(200);
  });

  it("picks up a session that moves to another replica while it is written, with no gap", async () => {
    const { a, b } = await deployment();
    const versions: number[] = [];
    const resyncs: StoreEvent[] = [];
    b.subscribe((e) => {
      if (e.type === "change") versions.push(e.change.variable.version);
      if (e.type === "resync") resyncs.push(e);
    });
    await a.createSession(init("s"), 10);
    await write(a, "s", 0, "v0");
    let last = 0;
    const writing = (async () => {
      for (let v = 1; v <= 60; v++) {
        await write(a, "s", v, `v${v}`);
        last = v;
      }
    })();
    // Its watchers reconnect to b while a goes on writing.
    await b.follow("s");
    const from = last;
    const synced = await b.read("s", (view) => view.variable("x")?.version);
    await writing;
    await b.caughtUp();
    // After the version the sync read, every later one in order up to the
    // last (a value overwritten before b read it arrives as the newer one).
    const after = versions.filter((v) => v > (synced?.value ?? 0));
    expect(after).toEqual([...new Set(after)].sort((x, y) => x - y));
    expect(after.at(-1)).toBe(60);
    expect(from).toBeLessThanOrEqual(synced?.value ?? 0);
    expect(resyncs).toEqual([]);
  });

  it("checks the followed sessions once its subscriber connection is back: those that moved resynchronize, the others not", async () => {
    const { a, b, admin } = await deployment();
    const events: StoreEvent[] = [];
    b.subscribe((e) => events.push(e));
    for (const id of ["moved", "still"]) {
      await a.createSession(init(id), 10);
      await b.follow(id);
    }
    await write(a, "moved", 0, "before");
    await b.caughtUp();
    // Cut b's subscriber; a commit made before it subscribes again is lost to it.
    await admin.call("CLIENT", "KILL", "TYPE", "pubsub");
    await write(a, "moved", 1, "while away");
    await vi.waitFor(() => expect(events.some((e) => e.type === "resync")).toBe(true), {
      timeout: 5000,
    });
    const resyncs = events.filter((e) => e.type === "resync");
    expect(resyncs).toEqual([{ type: "resync", reason: expect.any(String), sessionId: "moved" }]);
    // Followed again: the next commit is delivered.
    await write(a, "moved", 2, "after");
    await b.caughtUp();
    const lastChange = events.filter((e) => e.type === "change").at(-1);
    expect(lastChange?.type === "change" && lastChange.change.variable.value).toBe("after");
  });

  it("delivers a deletion to another replica with the variable's name and no value", async () => {
    const { a, b } = await deployment();
    const onB: StoreEvent[] = [];
    b.subscribe((e) => onB.push(e));
    await b.follow("s");
    await a.createSession(init("s"), 10);
    await write(a, "s", 0, "a large value");
    await a.transact("s", (tx) => {
      const last = tx.variable("x") as VariableRecord;
      tx.deleteVariable(last.id);
      tx.emit({
        sessionId: "s",
        kind: "deleted",
        variable: last,
        source: "alice",
        metadata: {},
        timestamp: 9,
      });
    });
    await b.caughtUp();
    const deleted = onB.at(-1);
    expect(deleted?.type === "change" && deleted.change).toMatchObject({
      kind: "deleted",
      source: "alice",
      variable: { id: "var:1:x", name: "x", type: "string", value: "", version: 0 },
    });
  });
});

describe("the Redis store's scripts", () => {
  it("run again after Redis forgot them (SCRIPT FLUSH, as a restart does), and are cached again", async () => {
    const store = await createRedisStore({
      url: `redis://127.0.0.1:${redis.port}`,
      keyPrefix: `flush${n++}:`,
      sweepIntervalMs: 0,
    });
    const admin = new Redis(`redis://127.0.0.1:${redis.port}`);
    onTestFinished(async () => {
      admin.disconnect();
      await store.close();
    });
    const session = { metadata: {}, ttlMs: 60_000, allowedTools: [] };
    await store.createSession({ id: "s", ...session }, 10);
    await admin.script("FLUSH");
    expect(await admin.script("EXISTS", commitScript.sha)).toEqual([0]);

    const put = await store.transact("s", (tx) => {
      tx.setData("k", "v", 1);
      return "put";
    });
    expect(put).toEqual({ value: "put" });
    expect(await admin.script("EXISTS", commitScript.sha)).toEqual([1]);
    expect((await store.read("s", (view) => view.data("k")))?.value).toBe("v");
    expect(await store.deleteSession("s", "cleanup")).toEqual({ variables: 0 });
  });
});
