/**
 * One client must not hold what everyone shares. Each case is a finding:
 * one address took all 4,096 connections (everyone else locked out for at
 * least 120 s); one client opened all 10,000 watch streams; 40 addresses of
 * one host created all 10,000 sessions, since the session quota counted
 * exact addresses. Limits are scaled down here so the tests run fast; the
 * mechanism is the one the defaults drive. Real server, real sockets; a
 * second client is a second loopback address (127.0.0.2) or, behind a
 * trusted proxy, a second x-forwarded-for.
 */
import net from "node:net";
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { describe, expect, it } from "vitest";
import { BridgeService } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { bridgePerTest } from "../support/bridge.js";
import { rejectionOf } from "../support/errors.js";
import { until } from "../support/wait.js";

const start = bridgePerTest();

/** A gRPC client whose connections come from `localAddress`. */
function clientFrom(url: string, localAddress: string) {
  return createClient(
    BridgeService,
    createGrpcTransport({
      baseUrl: url,
      nodeOptions: {
        createConnection: (u: URL) =>
          net.connect({ host: u.hostname, port: Number(u.port), localAddress }),
      },
    }),
  );
}

/** Opens a TCP connection; resolves once it is closed or after `ms` (then it is held). */
function hold(port: number, ms: number): Promise<{ socket: net.Socket; closed: boolean }> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.on("error", () => {});
    const timer = setTimeout(() => resolve({ socket, closed: false }), ms);
    socket.once("close", () => {
      clearTimeout(timer);
      resolve({ socket, closed: true });
    });
  });
}

describe("one client cannot take everyone's share", () => {
  it("connections: one address holds at most --max-connections-per-client; another address is served at once", async () => {
    const b = await start({ maxConnections: 60, maxConnectionsPerClient: 20 });
    const flood = await Promise.all(Array.from({ length: 60 }, () => hold(b.port, 500)));
    try {
      const held = flood.filter((f) => !f.closed).length;
      // Before: the flood took all 60 (the whole listener).
      expect(held).toBe(20);
      const other = clientFrom(b.url, "127.0.0.2");
      const started = performance.now();
      expect((await other.ping({ message: "me too" }, { timeoutMs: 3000 })).message).toContain(
        "me too",
      );
      expect(performance.now() - started).toBeLessThan(2000);
    } finally {
      for (const f of flood) f.socket.destroy();
    }
  });

  it("watch streams: one client holds at most --max-watchers-per-client across its sessions; another client still opens one", async () => {
    const b = await start({ maxWatchersPerClient: 12, maxWatchers: 100 });
    const mine = b.client("grpc");
    const sessions = await Promise.all(
      Array.from({ length: 3 }, () => mine.initializeSession({}).then((r) => r.sessionId)),
    );
    const streams: AbortController[] = [];
    const open = async (c: typeof mine, sessionId: string) => {
      const abort = new AbortController();
      streams.push(abort);
      const it = c
        .watchVariables({ sessionId, syncMarker: true }, { signal: abort.signal })
        [Symbol.asyncIterator]();
      // The sync marker says the stream is open.
      await it.next();
      return it;
    };
    try {
      for (let i = 0; i < 12; i++) await open(mine, sessions[i % 3] as string);
      // Over both paths: gRPC (served on the front) and Connect.
      for (const c of [mine, b.client("connect")]) {
        const e = await rejectionOf(open(c, sessions[0] as string), Code.ResourceExhausted);
        expect(e.rawMessage).toContain("--max-watchers-per-client");
      }
      const other = clientFrom(b.url, "127.0.0.2");
      const { sessionId } = await other.initializeSession({});
      await open(other, sessionId);
      // Closing one frees its place.
      streams[0]?.abort();
      await until(async () => {
        try {
          await open(mine, sessions[1] as string);
          return true;
        } catch {
          return false;
        }
      }, "a stream to be opened again once one was closed");
    } finally {
      for (const s of streams) s.abort();
    }
  });

  it("sessions: addresses of one IPv6 /64 are one client for --max-sessions-per-client; another /64 is another", async () => {
    const b = await start({ maxSessionsPerClient: 10, trustedProxies: ["127.0.0.1"] });
    const c = b.client("grpc");
    const from = (address: string) => ({ headers: { "x-forwarded-for": address } });
    // Ten hosts' worth of addresses, all in 2001:db8:1:2::/64.
    for (let i = 1; i <= 10; i++) {
      await c.initializeSession({}, from(`2001:db8:1:2::${i.toString(16)}`));
    }
    const e = await rejectionOf(
      c.initializeSession({}, from("2001:db8:1:2:ffff:ffff:ffff:ffff")),
      Code.ResourceExhausted,
    );
    expect(e.rawMessage).toContain("--max-sessions-per-client");
    // A neighbour's /64, and an IPv4 client, are clients of their own.
    await c.initializeSession({}, from("2001:db8:1:3::1"));
    await c.initializeSession({}, from("192.0.2.7"));
  });
});
