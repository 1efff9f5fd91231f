/**
 * A client whose replica dies fails over to another one (as Envoy would send
 * it there) and resynchronizes through its usual path: two bridges on one
 * real Redis, a TCP proxy in front that switches from the dead replica to
 * the live one, and a SessionContext with its watch on.
 */
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createSessionContext } from "../../src/client/index.js";
import { createRedisStore } from "../../src/server/store/redis-store.js";
import { encodeValue } from "../../src/values/index.js";
import { type RunningBridge, startBridge } from "../support/bridge.js";
import { startRedis } from "../support/redis-server.js";
import { startTcpProxy } from "../support/tcp-proxy.js";

const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

describe("failover between replicas", () => {
  it("a client whose replica dies reconnects to another and resynchronizes, losing nothing", async () => {
    const redis = await startRedis();
    cleanup.push(() => redis.stop());
    const replica = async (): Promise<RunningBridge> => {
      const store = await createRedisStore({ url: redis.url });
      const bridge = await startBridge({ sessionStore: store });
      cleanup.push(async () => {
        await bridge.stop();
        await store.close();
      });
      return bridge;
    };
    const a = await replica();
    const b = await replica();
    const proxy = await startTcpProxy(a.port);
    cleanup.push(() => proxy.close());

    const ctx = await createSessionContext({
      transport: createGrpcTransport({ baseUrl: proxy.url }),
      watch: { initialBackoffMs: 20, maxBackoffMs: 200 },
    });
    cleanup.push(() => ctx.close());
    await ctx.register("a", "integer", 1);
    await ctx.set("a", 2);
    const resynced = new Promise<void>((resolve) => ctx.on("resynchronized", () => resolve()));

    // Replica A goes away; the proxy now leads to B. A write through B
    // happens while the client is cut off.
    await a.stop();
    proxy.failOver(b.port);
    await b.client().setVariable({
      sessionId: ctx.sessionId,
      variableIdentifier: "a",
      value: encodeValue("integer", 3).any,
    });

    await resynced;
    // The write through B reaches the cache: with the resync if that read
    // came after it, or through the watch on B (whose opening syncs again).
    await vi.waitFor(
      () => expect(ctx.peek("a")?.snapshot).toMatchObject({ value: 3, version: 2 }),
      {
        timeout: 10_000,
      },
    );
    // The watch now runs on B: a write there reaches the client's cache.
    const changed = new Promise<unknown>((resolve) =>
      ctx.on("change", (e) => {
        if (e.snapshot?.version === 3) resolve(e.snapshot.value);
      }),
    );
    await b.client().setVariable({
      sessionId: ctx.sessionId,
      variableIdentifier: "a",
      value: encodeValue("integer", 4).any,
    });
    expect(await changed).toBe(4);
    // And the client's own writes go through B.
    await ctx.set("a", 5);
    const read = await b
      .client()
      .getVariable({ sessionId: ctx.sessionId, variableIdentifier: "a" });
    expect(read.variable?.version).toBe(4);
  }, 30_000);
});
