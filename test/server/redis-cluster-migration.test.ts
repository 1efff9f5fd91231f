/**
 * A Redis Cluster slot migration while a session is watched: the slot that
 * holds the session's group (its keys and its group's feed) moves to
 * another primary during a stream of writes, and the watcher on another
 * replica still receives every version in order, up to the last.
 */
import { Redis } from "ioredis";
import { expect, it, onTestFinished } from "vitest";
import { keySpace } from "../../src/server/store/redis/script.js";
import { createRedisStore } from "../../src/server/store/redis-store.js";
import type { StoreEvent, VariableRecord } from "../../src/server/store/session-store.js";
import { startRedisCluster } from "../support/redis-cluster.js";
import type { TestRedis } from "../support/redis-server.js";

/** A connection to one node, closed after the test. */
async function node(redis: TestRedis): Promise<Redis> {
  const c = new Redis(redis.port, "127.0.0.1");
  onTestFinished(() => c.disconnect());
  return c;
}

it("keeps delivering a watched session's changes in order while its slot migrates to another primary", async () => {
  const cluster = await startRedisCluster();
  onTestFinished(() => cluster.stop());
  const keyPrefix = "migrate:";
  const open = () => createRedisStore({ url: cluster.url, keyPrefix, sweepIntervalMs: 0 });
  const [a, b] = await Promise.all([open(), open()]);
  onTestFinished(async () => {
    await Promise.all([a.close(), b.close()]);
  });
  const id = "watched-session";
  await a.createSession({ id, metadata: {}, ttlMs: 600_000, allowedTools: [] }, 10);
  const events: StoreEvent[] = [];
  b.subscribe((e) => events.push(e));
  await b.follow(id);

  // The slot of the session's group, its owner and another primary.
  const feedKey = keySpace(keyPrefix, true).groupOf(id).feed;
  const primaries = await cluster.primaries();
  const any = await node(primaries[0] as TestRedis);
  const slot = Number(await any.cluster("KEYSLOT", feedKey));
  const owners = await Promise.all(
    primaries.map(async (p) => {
      const c = await node(p);
      return { c, id: String(await c.cluster("MYID")) };
    }),
  );
  const slots = (await any.call("CLUSTER", "SLOTS")) as [
    number,
    number,
    [string, number, string],
  ][];
  const ownerPort = slots.find(([from, to]) => from <= slot && slot <= to)?.[2][1];
  const source = owners[primaries.findIndex((p) => p.port === ownerPort)];
  const target = owners.find((o) => o !== source);
  if (source === undefined || target === undefined) throw new Error("no owner found for the slot");
  const targetPort = primaries[owners.indexOf(target)]?.port;

  const write = (v: number) =>
    a.transact(id, (tx) => {
      const record: VariableRecord = {
        id: "var:1:x",
        name: "x",
        type: "integer",
        value: v,
        constraintsJson: "{}",
        metadata: {},
        source: 0,
        version: v,
        updatedAt: v,
        accessControlJson: "",
        binary: false,
        changedBy: "t",
        changeMetadata: {},
        bytes: 8,
      };
      tx.putVariable(record);
      tx.emit({
        sessionId: id,
        kind: "value_changed",
        variable: record,
        source: "t",
        metadata: {},
        timestamp: v,
      });
    });
  let v = 0;
  for (; v < 20; v++) await write(v);

  // Writes go on while the slot moves (a script whose keys are split
  // between the two primaries is refused with TRYAGAIN and sent again): importing on the target, migrating
  // on the source, the keys a few at a time, then the slot assigned to the
  // target everywhere.
  let moving = true;
  const writing = (async () => {
    while (moving) await write(v++);
  })();
  await target.c.cluster("SETSLOT", slot, "IMPORTING", source.id);
  await source.c.cluster("SETSLOT", slot, "MIGRATING", target.id);
  for (;;) {
    const keys = (await source.c.cluster("GETKEYSINSLOT", slot, 2)) as string[];
    if (keys.length === 0) break;
    await source.c.migrate("127.0.0.1", String(targetPort), "", 0, 5000, "KEYS", ...keys);
    await new Promise((r) => setTimeout(r, 20));
  }
  for (const o of owners) await o.c.cluster("SETSLOT", slot, "NODE", target.id);
  moving = false;
  await writing;
  for (const end = v + 20; v < end; v++) await write(v);
  expect(Number(await target.c.cluster("COUNTKEYSINSLOT", slot))).toBeGreaterThan(0);
  expect(Number(await source.c.cluster("COUNTKEYSINSLOT", slot))).toBe(0);

  await b.caughtUp();
  const versions = events.flatMap((e) => (e.type === "change" ? [e.change.variable.version] : []));
  expect(events.filter((e) => e.type === "resync")).toEqual([]);
  expect(versions).toEqual([...new Set(versions)].sort((x, y) => x - y));
  expect(versions.at(-1)).toBe(v - 1);
}, 120_000);
