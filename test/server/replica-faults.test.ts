/**
 * Faults injected into a bridge on the Redis store, with a real
 * redis-server the test stops, freezes and restarts: calls fail fast with
 * UNAVAILABLE while Redis is away, health says so, and the replica recovers
 * by itself when Redis returns, its watch streams included.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import type { VariableUpdate } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { createLogger } from "../../src/server/observability/logger.js";
import { createRedisStore, type RedisStore } from "../../src/server/store/redis-store.js";
import { decodeValue, encodeValue } from "../../src/values/index.js";
import { type RunningBridge, startBridge } from "../support/bridge.js";
import { startRedis, type TestRedis } from "../support/redis-server.js";
import { startTcpProxy } from "../support/tcp-proxy.js";
import { until, waitFor } from "../support/wait.js";

const int = (n: number) => encodeValue("integer", n).any;

const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function bridgeOn(redis: TestRedis): Promise<{ bridge: RunningBridge; store: RedisStore }> {
  const store = await createRedisStore({ url: redis.url, commandTimeoutMs: 1000 });
  const bridge = await startBridge({ sessionStore: store });
  cleanup.push(async () => {
    await bridge.stop();
    await store.close();
  });
  return { bridge, store };
}

async function health(bridge: RunningBridge): Promise<number> {
  return (await fetch(`${bridge.adminUrl}/healthz`)).status;
}

/** Retries `probe` until it resolves, for at most 10 s. */
function eventually<T>(probe: () => Promise<T>): Promise<T> {
  return waitFor(probe, { intervalMs: 100 });
}

describe("a bridge on the Redis store, when Redis fails", () => {
  it("fails calls with UNAVAILABLE while Redis is down, reports not ready, and recovers by itself with its data and watches", async () => {
    const redis = await startRedis({ appendonly: true });
    cleanup.push(() => redis.stop());
    const { bridge } = await bridgeOn(redis);
    const c = bridge.client("grpc");
    const { sessionId } = await c.initializeSession({});
    await c.registerVariable({ sessionId, name: "n", type: "integer", initialValue: int(1) });
    const abort = new AbortController();
    cleanup.push(async () => abort.abort());
    const watch = c
      .watchVariables(
        { sessionId, variableIdentifiers: ["n"], syncMarker: true },
        { signal: abort.signal },
      )
      [Symbol.asyncIterator]();
    expect((await watch.next()).value?.updateType).toBe("sync");
    expect(await health(bridge)).toBe(200);

    await redis.kill();
    const started = performance.now();
    const failed = await c
      .getVariable({ sessionId, variableIdentifier: "n" })
      .catch((e: unknown) => ConnectError.from(e));
    expect(failed).toBeInstanceOf(ConnectError);
    expect((failed as ConnectError).code).toBe(Code.Unavailable);
    expect((failed as ConnectError).rawMessage).toContain("session store");
    expect(performance.now() - started).toBeLessThan(2000);
    await eventually(async () => expect(await health(bridge)).toBe(503));

    await redis.restart();
    // Back without a restart of the bridge: the value persisted, writes work.
    const value = await eventually(() => c.getVariable({ sessionId, variableIdentifier: "n" }));
    expect(decodeValue(value.variable?.value).value).toBe(1);
    await eventually(async () => expect(await health(bridge)).toBe(200));
    await c.setVariable({ sessionId, variableIdentifier: "n", value: int(2) });
    // The watch opened before the outage goes on, from where it was.
    const update = (await watch.next()).value as VariableUpdate;
    expect([update.updateType, update.variable?.version]).toEqual(["value_changed", 1]);
  }, 30_000);

  it("logs the loss and the return of Redis once each, in words, never ioredis's internals", async () => {
    const redis = await startRedis();
    cleanup.push(() => redis.stop());
    const lines: { level: string; msg: string; reason?: string; error?: string }[] = [];
    const logger = createLogger({
      level: "debug",
      sink: { write: (line) => lines.push(JSON.parse(line)) },
    });
    const store = await createRedisStore({ url: redis.url, commandTimeoutMs: 1000, logger });
    const bridge = await startBridge({ sessionStore: store });
    cleanup.push(async () => {
      await bridge.stop();
      await store.close();
    });
    const c = bridge.client();
    const { sessionId } = await c.initializeSession({});

    await redis.kill();
    // Calls while it is away: each fails; together they write one sampled line.
    for (let i = 0; i < 20; i++) {
      await c.getVariable({ sessionId, variableIdentifier: "n" }).catch(() => undefined);
    }
    const lost = () => lines.filter((l) => l.msg.startsWith("Redis connection lost"));
    await eventually(async () => expect(lost()).toHaveLength(1));
    expect(lost()[0]?.level).toBe("warn");
    // Reconnection attempts go on (refused every 50 ms to 2 s, each a debug
    // line): still one warning.
    const attempts = () => lines.filter((l) => l.msg === "redis connection error").length;
    const before = attempts();
    await until(() => attempts() >= before + 3, "three more reconnection attempts");
    expect(lost()).toHaveLength(1);

    await redis.restart();
    await eventually(async () =>
      expect(lines.filter((l) => l.msg === "Redis connection back")).toHaveLength(1),
    );
    const texts = JSON.stringify(lines);
    expect(texts).not.toMatch(/enableOfflineQueue|Stream isn't writeable/);
    const failures = lines.filter((l) => l.msg === "session store call failed");
    expect(failures.length).toBeGreaterThan(0);
    expect(failures.length).toBeLessThan(5);
    for (const f of failures) expect(f.error).toMatch(/Redis|connection/);
  }, 30_000);

  it("answers a frozen Redis with UNAVAILABLE within the command timeout, then serves again when it thaws", async () => {
    const redis = await startRedis();
    cleanup.push(async () => {
      redis.resume();
      await redis.stop();
    });
    const { bridge } = await bridgeOn(redis);
    const c = bridge.client();
    const { sessionId } = await c.initializeSession({});
    redis.pause();
    const started = performance.now();
    const e = await c.heartbeat({ sessionId }).then(
      () => undefined,
      (err: unknown) => ConnectError.from(err),
    );
    const elapsed = performance.now() - started;
    // Heartbeat reports a store it cannot reach as an error, not as "session invalid".
    expect(e?.code).toBe(Code.Unavailable);
    expect(elapsed).toBeLessThan(3000);
    redis.resume();
    const back = await eventually(() => c.heartbeat({ sessionId }));
    expect(back.sessionValid).toBe(true);
  }, 30_000);

  it("ends the watch streams of a replica that was away while their session changed, so clients resynchronize", async () => {
    const redis = await startRedis();
    cleanup.push(() => redis.stop());
    // Replica B reaches Redis through a proxy the test can cut.
    const link = await startTcpProxy(redis.port);
    cleanup.push(() => link.close());
    const { bridge: a } = await bridgeOn(redis);
    const store = await createRedisStore({
      url: `redis://127.0.0.1:${link.port}`,
      commandTimeoutMs: 1000,
    });
    const b = await startBridge({ sessionStore: store });
    cleanup.push(async () => {
      await b.stop();
      await store.close();
    });
    const { sessionId } = await a.client().initializeSession({});
    await a
      .client()
      .registerVariable({ sessionId, name: "n", type: "integer", initialValue: int(0) });
    const watch = b
      .client("grpc")
      .watchVariables({ sessionId, syncMarker: true })
      [Symbol.asyncIterator]();
    expect((await watch.next()).value?.updateType).toBe("sync");

    link.cut();
    // B has noticed: its connection is down, its subscriptions gone.
    await until(() => !store.healthy, "replica B to see Redis gone");
    for (let i = 1; i <= 5; i++) {
      await a.client().setVariable({ sessionId, variableIdentifier: "n", value: int(i) });
    }
    // The commits went out on the session's channel while B was not
    // subscribed: pub/sub keeps nothing for it.
    link.restore();

    let ended: unknown;
    for (;;) {
      const next = await watch.next().catch((e: unknown) => {
        ended = e;
        return { done: true } as const;
      });
      if (next.done) break;
    }
    const error = ConnectError.from(ended);
    expect(error.code).toBe(Code.Unavailable);
    expect(error.rawMessage).toContain("resynchronize");
    // The replica serves again, current.
    const now = await eventually(() =>
      b.client().getVariable({ sessionId, variableIdentifier: "n" }),
    );
    expect(decodeValue(now.variable?.value).value).toBe(5);
  }, 30_000);
});
