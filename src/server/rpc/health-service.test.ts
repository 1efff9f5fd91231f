import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { connectNodeAdapter, createGrpcTransport } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  Health,
  HealthCheckResponse_ServingStatus as Status,
} from "../../gen/grpc/health/v1/health_pb.js";
import { createHealthService, type HealthServiceOptions } from "./health-service.js";

function client(options: HealthServiceOptions) {
  const service = createHealthService(options);
  return createClient(
    Health,
    createRouterTransport((router) => router.service(Health, service)),
  );
}

const servers: http2.Http2Server[] = [];
afterEach(async () => {
  await Promise.all(
    servers.splice(0).map((s) => new Promise<void>((resolve) => s.close(() => resolve()))),
  );
});

/** The service on a real HTTP/2 server, with a gRPC client: how cancellation really arrives. */
async function served(options: HealthServiceOptions) {
  const service = createHealthService(options);
  const server = http2.createServer(
    connectNodeAdapter({ routes: (router) => router.service(Health, service) }),
  );
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return createClient(Health, createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` }));
}

describe("createHealthService", () => {
  it("watches readiness and sends only changes", async () => {
    let ready = true;
    const shutdown = new AbortController();
    const c = client({ ready: () => ready, shutdownSignal: shutdown.signal, watchIntervalMs: 5 });
    const seen: Status[] = [];
    const watching = (async () => {
      for await (const u of c.watch({ service: "" })) seen.push(u.status);
    })();
    await vi.waitFor(() => expect(seen).toEqual([Status.SERVING]));
    ready = false;
    await vi.waitFor(() => expect(seen).toEqual([Status.SERVING, Status.NOT_SERVING]));
    ready = true;
    await vi.waitFor(() =>
      expect(seen).toEqual([Status.SERVING, Status.NOT_SERVING, Status.SERVING]),
    );
    shutdown.abort();
    await watching;
    expect(seen).toEqual([Status.SERVING, Status.NOT_SERVING, Status.SERVING, Status.NOT_SERVING]);
    expect((await c.check({ service: "" })).status).toBe(Status.NOT_SERVING);
  });

  it("bounds the watches held at once", async () => {
    const c = await served({
      ready: () => true,
      shutdownSignal: new AbortController().signal,
      maxWatchers: 1,
    });
    const abort = new AbortController();
    const first = c.watch({ service: "" }, { signal: abort.signal })[Symbol.asyncIterator]();
    expect((await first.next()).value?.status).toBe(Status.SERVING);
    const second = c.watch({ service: "" })[Symbol.asyncIterator]();
    const error = await second.next().catch((e: unknown) => ConnectError.from(e));
    expect(error).toMatchObject({
      code: Code.ResourceExhausted,
      rawMessage: "too many health watches open (1); use Check, or close a watch",
    });
    abort.abort();
    await first.next().catch(() => undefined);
    // A cancelled watch frees its slot.
    await vi.waitFor(async () => {
      const stop = new AbortController();
      const again = c.watch({ service: "" }, { signal: stop.signal })[Symbol.asyncIterator]();
      try {
        expect((await again.next()).value?.status).toBe(Status.SERVING);
      } finally {
        stop.abort();
      }
    });
  });
});
