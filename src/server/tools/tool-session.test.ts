import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { startRedis, type TestRedis } from "../../../test/support/redis-server.js";
import { encodeValue, type JsonValue } from "../../values/index.js";
import { defaultLimits, type Limits } from "../limits/limits.js";
import { createVariableOps } from "../session/variable-ops.js";
import { createMemoryStore } from "../store/memory-store.js";
import { createRedisStore } from "../store/redis-store.js";
import type { SessionStore, SessionTransaction, SessionView } from "../store/session-store.js";
import { createToolSession } from "./tool-session.js";

/**
 * A tool's update functions run inside a store transaction, which may run
 * them more than once (SessionStore.transact): what an update stores and
 * resolves to must be what its last run computed.
 */

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
});

/** The session "s" as a tool sees it, on `store` (without auto-creation). */
async function toolSessionOn(
  store: SessionStore,
  limits: Limits,
  quota?: { client: string; max: number; maxBytes: number },
) {
  const ops = createVariableOps(limits);
  await store.createSession(
    { id: "s", metadata: {}, ttlMs: 60_000, allowedTools: [], ...(quota ? { quota } : {}) },
    10,
    (tx) => {
      ops.register(tx, {
        name: "n",
        type: "integer",
        value: encodeValue("integer", 0).any,
        binary: new Uint8Array(0),
        constraintsJson: "",
        metadata: {},
      });
    },
  );
  const inSession = async <T>(result: Promise<{ value: T } | undefined>) => {
    const found = await result;
    if (found === undefined) throw new ConnectError("no session s", Code.NotFound);
    return found.value;
  };
  return createToolSession(
    {
      ops,
      read: <T>(id: string, fn: (view: SessionView) => T) => inSession(store.read(id, fn)),
      transact: <T>(id: string, fn: (tx: SessionTransaction) => T) =>
        inSession(store.transact(id, fn)),
      settings: {
        limits,
        sessionTtlMs: 60_000,
        autoCreateSessions: false,
        clientSessionIds: false,
        remoteToolTimeoutMs: 30_000,
      },
    },
    "s",
  );
}

describe("a tool's updates run again by the store", () => {
  it("store and resolve to what the last run computed, from the state it saw", async () => {
    // Two updates queued behind another on one Redis replica are tried
    // together first, the second on top of the first's 3 kB entry. That is
    // over the client's 2 kB, so the store drops the try and runs each
    // alone: the first is refused, the second runs again without it.
    const store = await createRedisStore({
      url: redis.url,
      keyPrefix: "tool-retry:",
      sweepIntervalMs: 0,
    });
    onTestFinished(() => store.close());
    const session = await toolSessionOn(store, defaultLimits, {
      client: "c1",
      max: 10,
      maxBytes: 2000,
    });
    const seen: JsonValue[] = [];
    const append = (entry: string) => (current: JsonValue | undefined) => {
      const log = (current ?? []) as string[];
      if (entry === "reply") seen.push(log.length);
      return [...log, entry];
    };

    const first = session.updateVariable("n", (c) => Number(c.value) + 1);
    const big = session.updateData("log", append("x".repeat(3000))).catch((e: unknown) => e);
    const reply = session.updateData("log", append("reply"));

    expect(await first).toMatchObject({ value: 1, version: 1 });
    expect((await big) as ConnectError).toMatchObject({ code: Code.ResourceExhausted });
    // Its first run saw the big entry, its last did not.
    expect(seen).toEqual([1, 0]);
    expect(await reply).toEqual(["reply"]);
    expect(await session.getData("log")).toEqual(["reply"]);
  });

  it("apply a variable update once however many times it runs", async () => {
    const store = createMemoryStore({ sweepIntervalMs: 0, rehearse: true });
    onTestFinished(() => store.close());
    const session = await toolSessionOn(store, defaultLimits);
    let runs = 0;
    const updated = await session.updateVariable("n", (c) => {
      runs++;
      return Number(c.value) + 10;
    });
    expect(runs).toBe(2);
    expect(updated).toMatchObject({ value: 10, version: 1 });
    expect(await session.getVariable("n")).toMatchObject({ value: 10, version: 1 });
  });
});
