/**
 * What Envoy relies on the bridge for, against real `unified-bridge serve`
 * processes on a real Redis: the health endpoint its checks probe (as
 * envoy/envoy.yaml configures them), and a rolling update: one replica
 * gets SIGTERM while a client watches and writes through a proxy; the
 * replica drains (503 on /healthz, no new connections, watch streams ended
 * with UNAVAILABLE, in-flight calls finished, exit 0) and the client carries
 * on with the other replica, losing no write.
 */

import { readFile } from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it, vi } from "vitest";
import { parse } from "yaml";
import { createSessionContext } from "../../src/client/index.js";
import { BridgeService } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { encodeValue } from "../../src/values/index.js";
import { startBridge } from "../support/bridge.js";
import { cliSuite, type ServedCli } from "../support/cli.js";
import { startRedis, type TestRedis } from "../support/redis-server.js";
import { startTcpProxy } from "../support/tcp-proxy.js";
import { at, list } from "./envoy-api.js";

const cli = cliSuite();
const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

/** The health check of the bridge cluster in envoy/envoy.yaml (the file as written). */
async function envoyHealthCheck(): Promise<{ path: string; expected: number[] }> {
  const config = parse(await readFile(new URL("../../envoy/envoy.yaml", import.meta.url), "utf8"));
  const bridge = list(config, "static_resources", "clusters").find(
    (c) => at(c, "name") === "bridge",
  );
  const check = at(bridge, "health_checks", 0, "http_health_check");
  // Envoy's default expected_statuses: 200 only.
  const ranges = list(check, "expected_statuses") as { start: number; end: number }[];
  const expected = ranges.length === 0 ? [200] : ranges.flatMap((r) => [r.start, r.end - 1]);
  return { path: String(at(check, "path")), expected };
}

/** One probe as Envoy's HTTP health checker sends it: GET over HTTP/1.1, Host the cluster. */
function probe(adminUrl: string, path: string): Promise<{ status: number; body: string }> {
  const { hostname, port } = new URL(adminUrl);
  return new Promise((resolve, reject) => {
    const req = http.get(
      { host: hostname, port, path, headers: { host: "bridge", "user-agent": "Envoy/HC" } },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => {
          body += c;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on("error", reject);
    req.setTimeout(1000, () => req.destroy(new Error("health check timed out")));
  });
}

const portOf = (url: string) => Number(new URL(url).port);

async function replica(redis: TestRedis): Promise<ServedCli> {
  const served = await cli.serve([
    "--store",
    redis.url,
    "--port",
    "0",
    "--worker-port",
    "0",
    "--admin-port",
    "0",
    "--shutdown-grace-ms",
    "10000",
    "--log-level",
    "error",
  ]);
  cleanup.push(async () => {
    if (served.child.exitCode === null) served.child.kill("SIGKILL");
  });
  return served;
}

describe("what Envoy needs from the bridge", () => {
  it("its health check passes while the store is reachable and fails while it is not", async () => {
    const { path, expected } = await envoyHealthCheck();
    expect(expected).toEqual([200]);
    const redis = await startRedis();
    cleanup.push(() => redis.stop());
    const a = await replica(redis);
    expect(await probe(a.adminUrl, path)).toMatchObject({ status: 200 });

    await redis.kill();
    await vi.waitFor(
      async () => {
        const res = await probe(a.adminUrl, path);
        expect(res.status).toBe(503);
        expect(JSON.parse(res.body)).toMatchObject({ status: "unavailable", store: "unavailable" });
      },
      { timeout: 10_000, interval: 100 },
    );
    await redis.restart();
    await vi.waitFor(
      async () => expect(await probe(a.adminUrl, path)).toMatchObject({ status: 200 }),
      { timeout: 15_000, interval: 100 },
    );
  }, 60_000);

  it("a replica given SIGTERM drains, and its client moves to the other one losing no write", async () => {
    const { path } = await envoyHealthCheck();
    const redis = await startRedis();
    cleanup.push(() => redis.stop());
    const a = await replica(redis);
    const b = await replica(redis);
    const proxy = await startTcpProxy(portOf(a.url));
    cleanup.push(() => proxy.close());

    // A worker hosting a tool that holds its call until released: a call
    // in flight on A while A drains.
    let entered!: () => void;
    const inTool = new Promise<void>((resolve) => {
      entered = resolve;
    });
    let release!: () => void;
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    const worker = await startBridge({ builtinTools: false, autoCreateSessions: true });
    cleanup.push(() => worker.stop());
    worker.server.registerTool({
      name: "hold",
      description: "Answers once released.",
      handler: async () => {
        entered();
        await released;
        return "done";
      },
    });
    await createClient(BridgeService, createGrpcTransport({ baseUrl: a.workerUrl })).registerTools({
      workerId: "drain-test",
      tools: [
        {
          name: "hold",
          description: "Answers once released.",
          metadata: { worker_address: `127.0.0.1:${worker.port}` },
        },
      ],
    });

    const ctx = await createSessionContext({
      transport: createGrpcTransport({ baseUrl: proxy.url }),
      watch: { initialBackoffMs: 20, maxBackoffMs: 200 },
      affinityHeader: true,
    });
    cleanup.push(() => ctx.close());
    await ctx.register("n", "integer", 0);
    const clientB = createClient(BridgeService, createGrpcTransport({ baseUrl: b.url }));
    const pushed = (value: number) =>
      new Promise<void>((resolve) => {
        const off = ctx.on("change", ({ name, snapshot, origin }) => {
          if (name === "n" && origin === "server" && snapshot?.value === value) {
            off();
            resolve();
          }
        });
      });
    // The watch is live: a write on B reaches the client's cache through A.
    const first = pushed(-1);
    await clientB.setVariable({
      sessionId: ctx.sessionId,
      variableIdentifier: "n",
      value: encodeValue("integer", -1).any,
    });
    await first;

    // The writer: one value every 25 ms, each retried until acknowledged.
    const acked: { value: number; version: number }[] = [];
    const refused: Code[] = [];
    let writing = true;
    const writer = (async () => {
      for (let value = 1; writing && value <= 80; value++) {
        for (;;) {
          try {
            const snapshot = await ctx.set("n", value);
            acked.push({ value, version: snapshot.version });
            break;
          } catch (e) {
            refused.push(ConnectError.from(e).code);
            // The writer's pace (a client retrying), not a wait for an event.
            await new Promise((r) => setTimeout(r, 25));
          }
        }
        await new Promise((r) => setTimeout(r, 25));
      }
    })();
    await vi.waitFor(() => expect(acked.length).toBeGreaterThanOrEqual(3));
    const held = ctx.callTool("hold");
    // Awaited below; if an assertion fails first, its rejection is not unhandled.
    held.catch(() => undefined);
    await inTool;

    const ended = new Promise<ConnectError>((resolve) => {
      const off = ctx.on("reconnecting", ({ error }) => {
        off();
        resolve(error);
      });
    });
    a.child.kill("SIGTERM");
    // Draining: /healthz fails (Envoy stops routing here) ...
    await vi.waitFor(
      async () => {
        const res = await probe(a.adminUrl, path);
        expect(res.status).toBe(503);
        expect(JSON.parse(res.body)).toMatchObject({ draining: true });
      },
      { timeout: 5000, interval: 50 },
    );
    // ... new connections are refused ...
    const refusedConnection = await new Promise<string>((resolve) => {
      const socket = net.connect(portOf(a.url), "127.0.0.1");
      socket.once("connect", () => {
        socket.destroy();
        resolve("connected");
      });
      socket.once("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? "error"));
    });
    expect(refusedConnection).toBe("ECONNREFUSED");
    // ... and the watch stream ended with a code clients retry on.
    expect((await ended).code).toBe(Code.Unavailable);
    expect(a.child.exitCode).toBeNull();

    // The proxy sends new connections to B, as Envoy does once A is unhealthy.
    const resynced = new Promise<void>((resolve) => ctx.on("resynchronized", () => resolve()));
    proxy.redirect(portOf(b.url));
    await resynced;
    const ackedBefore = acked.length;
    await vi.waitFor(() => expect(acked.length).toBeGreaterThanOrEqual(ackedBefore + 3));

    // The call in flight on A when it got SIGTERM completes, then A exits 0.
    release();
    expect(await held).toBe("done");
    expect((await a.exited).code).toBe(0);

    writing = false;
    await writer;
    // Writes failed only in the moments A went away. (connect-node reports
    // those as UNAVAILABLE, INTERNAL for a stream the draining A refused, or
    // CANCELED for one its session manager reset while switching
    // connections; Envoy retries the refused ones itself.)
    expect(refused.length).toBeLessThanOrEqual(5);
    // Every acknowledged write is stored at the version it was acknowledged with.
    const versions = acked.map((w) => w.version);
    expect(versions).toEqual([...versions].sort((x, y) => x - y));
    const history = new Map(
      (await ctx.history("n", { limit: 100 })).map((h) => [h.version, h.value]),
    );
    for (const w of acked) expect(history.get(w.version), `version ${w.version}`).toBe(w.value);
    // Between the first and the last, the stored versions hold the written
    // values in order and nothing else (a retried write may be stored twice).
    const firstVersion = (acked[0] as { version: number }).version;
    const stored = [...history]
      .filter(([version]) => version >= firstVersion && version <= (acked.at(-1)?.version ?? 0))
      .sort(([x], [y]) => x - y)
      .map(([, value]) => value as number);
    expect(stored).toEqual([...stored].sort((x, y) => x - y));
    expect(new Set(stored)).toEqual(new Set(acked.map((w) => w.value)));
    const last = acked.at(-1) as { value: number; version: number };
    expect(ctx.peek("n")?.snapshot).toMatchObject(last);

    // The watch now runs on B.
    const later = pushed(1000);
    await clientB.setVariable({
      sessionId: ctx.sessionId,
      variableIdentifier: "n",
      value: encodeValue("integer", 1000).any,
    });
    await later;
    expect(ctx.peek("n")?.snapshot).toMatchObject({ value: 1000, version: last.version + 1 });
  }, 90_000);
});
