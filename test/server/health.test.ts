/**
 * grpc.health.v1.Health on a real bridge, called over gRPC (HTTP/2) as
 * Envoy's gRPC health check and Kubernetes gRPC probes do: on the public,
 * worker and admin listeners, following the same readiness as /healthz
 * (a real Redis store going down and coming back, the server draining).
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import {
  Health,
  HealthCheckResponse_ServingStatus as Status,
} from "../../src/gen/grpc/health/v1/health_pb.js";
import { createRedisStore, type RedisStore } from "../../src/server/store/redis-store.js";
import { type RunningBridge, startBridge } from "../support/bridge.js";
import { startRedis, type TestRedis } from "../support/redis-server.js";

const health = (baseUrl: string) => createClient(Health, createGrpcTransport({ baseUrl }));

describe("grpc.health.v1.Health", () => {
  let bridge: RunningBridge;
  beforeAll(async () => {
    bridge = await startBridge();
  });
  afterAll(async () => {
    await bridge.stop();
  });

  it.each([
    ["public", () => bridge.url],
    ["worker", () => bridge.workerUrl],
    ["admin", () => bridge.adminUrl],
  ])("answers Check on the %s listener for the server and for BridgeService", async (_, url) => {
    const client = health(url());
    expect((await client.check({ service: "" })).status).toBe(Status.SERVING);
    expect((await client.check({ service: "snakepit.bridge.BridgeService" })).status).toBe(
      Status.SERVING,
    );
  });

  it("fails Check of an unknown service with NOT_FOUND, naming the known ones", async () => {
    const error = await health(bridge.url)
      .check({ service: "no.such.Service" })
      .catch((e: unknown) => ConnectError.from(e));
    expect(error).toBeInstanceOf(ConnectError);
    expect((error as ConnectError).code).toBe(Code.NotFound);
    expect((error as ConnectError).rawMessage).toBe(
      `unknown service 'no.such.Service'; this server reports on "" (the whole server) and "snakepit.bridge.BridgeService"`,
    );
  });

  it("answers Watch of an unknown service with SERVICE_UNKNOWN and keeps the stream open", async () => {
    const abort = new AbortController();
    const updates = health(bridge.url)
      .watch({ service: "no.such.Service" }, { signal: abort.signal })
      [Symbol.asyncIterator]();
    expect((await updates.next()).value?.status).toBe(Status.SERVICE_UNKNOWN);
    const next = updates.next();
    abort.abort();
    await expect(next).rejects.toMatchObject({ code: Code.Canceled });
  });
});

describe("Health follows readiness", () => {
  let redis: TestRedis;
  let store: RedisStore;
  let bridge: RunningBridge;
  beforeAll(async () => {
    redis = await startRedis();
    store = await createRedisStore({ url: redis.url, commandTimeoutMs: 1000 });
    bridge = await startBridge({ sessionStore: store });
  });
  afterAll(async () => {
    await bridge?.stop();
    await store?.close();
    await redis?.stop();
  });

  it("goes NOT_SERVING while the Redis store is down and SERVING once it is back, on Check and Watch", async () => {
    const client = health(bridge.adminUrl);
    const abort = new AbortController();
    const seen: Status[] = [];
    const watching = (async () => {
      for await (const u of health(bridge.url).watch({ service: "" }, { signal: abort.signal })) {
        seen.push(u.status);
      }
    })().catch((e: unknown) => e);
    await vi.waitFor(() => expect(seen).toEqual([Status.SERVING]));

    await redis.kill();
    await vi.waitFor(async () => {
      expect((await client.check({ service: "" })).status).toBe(Status.NOT_SERVING);
    }, 15_000);
    expect((await fetch(`${bridge.adminUrl}/healthz`)).status).toBe(503);
    await vi.waitFor(() => expect(seen).toEqual([Status.SERVING, Status.NOT_SERVING]), 5000);

    await redis.restart();
    await vi.waitFor(async () => {
      expect((await client.check({ service: "snakepit.bridge.BridgeService" })).status).toBe(
        Status.SERVING,
      );
    }, 15_000);
    await vi.waitFor(
      () => expect(seen).toEqual([Status.SERVING, Status.NOT_SERVING, Status.SERVING]),
      5000,
    );
    abort.abort();
    expect(await watching).toMatchObject({ code: Code.Canceled });
  }, 45_000);
});

describe("Health while draining", () => {
  it("tells a watcher NOT_SERVING when the server begins to shut down, then ends the stream", async () => {
    const bridge = await startBridge();
    const seen: Status[] = [];
    const watching = (async () => {
      for await (const u of health(bridge.url).watch({ service: "" })) seen.push(u.status);
    })();
    await vi.waitFor(() => expect(seen).toEqual([Status.SERVING]));
    await bridge.stop();
    await watching;
    expect(seen).toEqual([Status.SERVING, Status.NOT_SERVING]);
  });
});
