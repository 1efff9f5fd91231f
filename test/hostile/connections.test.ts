/**
 * Hostile peers at the connection level: what one client can make the
 * server hold (connections, streams, replies, memory) and for how long,
 * and what a shutdown does to calls in flight. Each test is a finding an
 * attacker reproduced before the server was hardened, shown closed against
 * a real server on a real socket (the memory and shutdown ones against the
 * real CLI process, so memory and signals are the server's own).
 *
 * Timings are asserted with margins for a shared 2-core machine: a limit
 * must not act before its time, and must act within a second or two of it.
 *
 * (Over 400 lines: one finding per case; they share the raw HTTP/2 helpers.)
 */
import http2 from "node:http2";
import net from "node:net";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import {
  BatchGetVariablesRequestSchema,
  BridgeService,
  PingRequestSchema,
} from "../../src/gen/snakepit/bridge/bridge_pb.js";
import type { ToolDefinition } from "../../src/server/index.js";
import {
  decodeJsonAny,
  encodeJsonAny,
  encodeValue,
  type JsonValue,
} from "../../src/values/index.js";
import { bridgePerTest, startBridge } from "../support/bridge.js";
import { cliSuite } from "../support/cli.js";
import { rejectionOf } from "../support/errors.js";
import {
  connectRaw,
  errorOf,
  FrameFlag,
  FrameType,
  frame,
  H2Error,
  h2Preface,
  headerBlock,
  type RawConnection,
  Setting,
  settingsAck,
  settingsFrame,
  settingsOf,
} from "../support/h2-frames.js";
import { rssMiB as rssOf } from "../support/process-stats.js";
import { waitFor } from "../support/wait.js";

const MiB = 1024 * 1024;
const start = bridgePerTest();
const cli = cliSuite();

// Sockets, sessions and servers a test opened; closed after it, whatever happened.
const opened: { destroy(): unknown }[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((o) => o.destroy()));
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * `p`, or a failure naming `what` after `ms`: a limit that does not act
 * fails its test with a reason instead of running into the test timeout.
 */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `condition` every 20 ms; throws naming `what` after `timeoutMs`. */
async function until(
  condition: () => boolean | Promise<boolean>,
  timeoutMs: number,
  what: string,
): Promise<void> {
  await waitFor(
    async () => {
      if (!(await condition())) throw new Error(`${what}: not within ${timeoutMs} ms`);
    },
    { timeoutMs, intervalMs: 20 },
  );
}

/** Open connections of a bridge's public listener, as its metrics report them. */
async function publicConnections(adminUrl: string): Promise<number> {
  const text = await fetch(`${adminUrl}/metrics`).then((r) => r.text());
  return Number(/bridge_connections\{listener="public"\} (\d+)/.exec(text)?.[1]);
}

/** A plain TCP connection to 127.0.0.1 that records what it got and when it closed. */
interface Tcp {
  readonly socket: net.Socket;
  /** Milliseconds from connecting to closing; undefined while open. */
  closedAfter(): number | undefined;
  readonly closed: Promise<number>;
  received(): string;
  receivedBytes(): number;
}

async function tcp(port: number): Promise<Tcp> {
  const socket = net.connect(port, "127.0.0.1");
  opened.push(socket);
  // Resets by the server are what these tests look at, not failures.
  socket.on("error", () => {});
  const chunks: Buffer[] = [];
  let bytes = 0;
  socket.on("data", (chunk: Buffer) => {
    bytes += chunk.length;
    if (chunks.length < 16) chunks.push(chunk);
  });
  let connectedAt = performance.now();
  let closedAfter: number | undefined;
  const closed = new Promise<number>((resolve) =>
    socket.once("close", () => {
      closedAfter = performance.now() - connectedAt;
      resolve(closedAfter);
    }),
  );
  // Connected, or closed (a refused connection counts as closed at once).
  await Promise.race([
    new Promise<void>((resolve) =>
      socket.once("connect", () => {
        connectedAt = performance.now();
        resolve();
      }),
    ),
    closed,
  ]);
  return {
    socket,
    closedAfter: () => closedAfter,
    closed,
    received: () => Buffer.concat(chunks).toString("latin1"),
    receivedBytes: () => bytes,
  };
}

async function raw(port: number): Promise<RawConnection> {
  const c = await connectRaw(port);
  opened.push(c.socket);
  return c;
}

function h2(url: string, options: http2.ClientSessionOptions = {}): http2.ClientHttp2Session {
  const session = http2.connect(url, options);
  opened.push(session);
  session.on("error", () => {});
  return session;
}

/** A gRPC Ping over a raw node:http2 session; resolves with its grpc-status. */
async function h2Ping(session: http2.ClientHttp2Session, message: string): Promise<unknown> {
  const stream = session.request(grpcHeaders("Ping"));
  stream.end(grpcMessage(toBinary(PingRequestSchema, create(PingRequestSchema, { message }))));
  stream.resume();
  const trailers = new Promise<http2.IncomingHttpHeaders>((resolve) =>
    stream.once("trailers", resolve),
  );
  const status = (await within(trailers, 3000, "the Ping's trailers"))["grpc-status"];
  await new Promise((resolve) => stream.once("close", resolve));
  return status;
}

/** A gRPC length-prefixed message. */
function grpcMessage(bytes: Uint8Array): Buffer {
  const out = Buffer.alloc(5 + bytes.length);
  out.writeUInt32BE(bytes.length, 1);
  out.set(bytes, 5);
  return out;
}

const grpcHeaders = (method: string) => ({
  ":method": "POST",
  ":path": `/snakepit.bridge.BridgeService/${method}`,
  "content-type": "application/grpc",
  te: "trailers",
});

const params = (o: Record<string, JsonValue>) =>
  Object.fromEntries(Object.entries(o).map(([k, v]) => [k, encodeJsonAny(v)]));

const grpcClient = (url: string, defaultTimeoutMs = 10_000) =>
  createClient(BridgeService, createGrpcTransport({ baseUrl: url, defaultTimeoutMs }));

/** Fills a session with `n` string variables of just under 1 MiB (the default value limit). */
async function fillSession(c: ReturnType<typeof grpcClient>, n: number) {
  const { sessionId } = await c.initializeSession({});
  const names = Array.from({ length: n }, (_, i) => `big${i}`);
  const value = encodeValue("string", "x".repeat(MiB - 1024)).any;
  for (const name of names) {
    await c.registerVariable({ sessionId, name, type: "string", initialValue: value });
  }
  return { sessionId, names };
}

describe("connections", () => {
  it("refuses connections beyond --max-connections at accept, and serves again once the flood's are gone", async () => {
    const bridge = await start({ maxConnections: 20, headersTimeoutMs: 1500 });
    const flood = await Promise.all(Array.from({ length: 60 }, () => tcp(bridge.port)));
    const closed = () => flood.filter((s) => s.closedAfter() !== undefined);
    await until(() => closed().length >= 40, 5000, "40 of 60 connections closed");
    // A negative check: no event marks "no more will close", so a short wait
    // gives a wrong refusal the time to show.
    await sleep(300);
    // 20 held, the other 40 closed at accept, long before any timeout.
    expect(flood.length - closed().length).toBe(20);
    expect(Math.max(...closed().map((s) => s.closedAfter() as number))).toBeLessThan(1000);

    // While the flood holds every slot, a real client is refused too, at
    // once (connect-node reports the closed connection as CANCELED).
    const askedAt = performance.now();
    const refused = await rejectionOf(grpcClient(bridge.url, 3000).ping({ message: "full" }));
    expect(refused.code).not.toBe(Code.DeadlineExceeded);
    expect(performance.now() - askedAt).toBeLessThan(1000);

    // ...until the server drops the flood's connections, which never sent a
    // byte, at the headers timeout; then it is served.
    await until(() => closed().length === 60, 5000, "the held connections closed");
    const held = flood.map((s) => s.closedAfter() as number).filter((t) => t >= 1000);
    expect(held).toHaveLength(20);
    for (const t of held) expect(t).toBeGreaterThanOrEqual(1400);
    expect((await grpcClient(bridge.url, 3000).ping({ message: "served" })).message).toBe("served");
  });

  it("closes a connection that sends nothing after headersTimeoutMs", async () => {
    const bridge = await start({ headersTimeoutMs: 500 });
    const silent = await tcp(bridge.port);
    const after = await within(silent.closed, 3000, "closed");
    expect(after).toBeGreaterThanOrEqual(450);
    expect(after).toBeLessThan(2000);
    expect(silent.received()).toBe("");
  });

  it("answers 408 and closes an HTTP/1.1 request whose headers do not arrive in headersTimeoutMs", async () => {
    const bridge = await start({ headersTimeoutMs: 500 });
    const loris = await tcp(bridge.port);
    loris.socket.write("POST /snakepit.bridge.BridgeService/Ping HTTP/1.1\r\nHost: a\r\n");
    const after = await within(loris.closed, 3000, "closed");
    expect(after).toBeGreaterThanOrEqual(450);
    expect(after).toBeLessThan(2000);
    expect(loris.received()).toMatch(/^HTTP\/1\.1 408 /);
  });

  it("closes an HTTP/2 connection that sends its preface and SETTINGS but no request after idleTimeoutMs", async () => {
    const bridge = await start({ idleTimeoutMs: 1000 });
    const c = await raw(bridge.port);
    const t0 = performance.now();
    c.socket.write(Buffer.concat([h2Preface, settingsFrame()]));
    await c.next((f) => f.type === FrameType.settings && f.flags === 0, 2000);
    c.socket.write(settingsAck());
    const goaway = await c.next((f) => f.type === FrameType.goaway, 4000);
    expect(errorOf(goaway)).toEqual({ code: H2Error.noError, lastStreamId: 0 });
    await within(c.closed, 1000, "closed after its GOAWAY");
    const after = performance.now() - t0;
    expect(after).toBeGreaterThanOrEqual(950);
    expect(after).toBeLessThan(3000);
  });

  it("closes HTTP/2 and HTTP/1.1 connections idleTimeoutMs after their last call", async () => {
    const bridge = await start({ idleTimeoutMs: 1000 });
    // HTTP/2: one Ping, then nothing.
    const session = h2(bridge.url);
    const sessionClosed = new Promise<void>((resolve) => session.once("close", () => resolve()));
    expect(await h2Ping(session, "x")).toBe("0");
    const h2Done = performance.now();
    // HTTP/1.1: one Connect call on a keep-alive connection, then nothing.
    const http1 = await tcp(bridge.port);
    const ping = toBinary(PingRequestSchema, create(PingRequestSchema, { message: "y" }));
    http1.socket.write(
      "POST /snakepit.bridge.BridgeService/Ping HTTP/1.1\r\nHost: a\r\n" +
        "Content-Type: application/proto\r\nConnect-Protocol-Version: 1\r\n" +
        `Content-Length: ${ping.length}\r\n\r\n`,
    );
    http1.socket.write(ping);
    await until(() => /\r\n\r\n/.test(http1.received()), 2000, "the HTTP/1.1 answer");
    const h1Done = performance.now();
    expect(http1.received()).toMatch(/^HTTP\/1\.1 200 .*keep-alive/is);

    await within(sessionClosed, 4000, "the HTTP/2 connection closed");
    const h2Idle = performance.now() - h2Done;
    await within(http1.closed, 4000, "the HTTP/1.1 connection closed");
    const h1Idle = performance.now() - h1Done;
    for (const idle of [h2Idle, h1Idle]) {
      expect(idle).toBeGreaterThanOrEqual(950);
      expect(idle).toBeLessThan(3500);
    }
  });

  it("resets an HTTP/2 stream whose request never ends after requestTimeoutMs", async () => {
    const bridge = await start({ requestTimeoutMs: 1000 });
    const session = h2(bridge.url);
    const stream = session.request(grpcHeaders("Ping"), { endStream: false });
    // Half a message, then silence: the stream is half-open forever.
    stream.write(Buffer.from([0, 0, 0, 0, 10, 0x0a]));
    const t0 = performance.now();
    const code = await within(
      new Promise<number>((resolve) => stream.once("close", () => resolve(stream.rstCode))),
      3000,
      "the stream reset",
    );
    const after = performance.now() - t0;
    expect(code).toBe(http2.constants.NGHTTP2_CANCEL);
    expect(after).toBeGreaterThanOrEqual(950);
    expect(after).toBeLessThan(2500);
    // Only the stream: its connection goes on serving.
    expect(await h2Ping(session, "after")).toBe("0");
  });

  it("answers 408 and closes an HTTP/1.1 request whose body never completes after requestTimeoutMs", async () => {
    const bridge = await start({ requestTimeoutMs: 1000, headersTimeoutMs: 500 });
    const slow = await tcp(bridge.port);
    slow.socket.write(
      "POST /snakepit.bridge.BridgeService/Ping HTTP/1.1\r\nHost: a\r\n" +
        "Content-Type: application/proto\r\nConnect-Protocol-Version: 1\r\n" +
        "Content-Length: 100\r\n\r\n\x0a\x62",
    );
    const after = await within(slow.closed, 3000, "closed");
    expect(after).toBeGreaterThanOrEqual(950);
    expect(after).toBeLessThan(2500);
    expect(slow.received()).toMatch(/^HTTP\/1\.1 408 /);
  });

  it("advertises SETTINGS_MAX_CONCURRENT_STREAMS = --max-streams-per-connection and refuses a client that ignores it", async () => {
    const bridge = await start({ maxStreamsPerConnection: 4 });
    const session = h2(bridge.url);
    await new Promise((resolve) => session.once("remoteSettings", resolve));
    expect(session.remoteSettings.maxConcurrentStreams).toBe(4);

    // A raw client opens 6 streams at once, none of them finished.
    const block = headerBlock([
      [":method", "POST"],
      [":scheme", "http"],
      [":path", "/snakepit.bridge.BridgeService/Ping"],
      [":authority", "127.0.0.1"],
      ["content-type", "application/grpc"],
      ["te", "trailers"],
    ]);
    const sixStreams = Array.from({ length: 6 }, (_, i) =>
      frame(FrameType.headers, FrameFlag.endHeaders, 1 + 2 * i, block),
    );
    const open = async (acknowledge: boolean) => {
      const c = await raw(bridge.port);
      c.socket.write(Buffer.concat([h2Preface, settingsFrame()]));
      const settings = await c.next((f) => f.type === FrameType.settings && f.flags === 0, 2000);
      expect(settingsOf(settings).get(Setting.maxConcurrentStreams)).toBe(4);
      c.socket.write(Buffer.concat([...(acknowledge ? [settingsAck()] : []), ...sixStreams]));
      return c;
    };
    // Before it acknowledged the limit: the 5th and 6th streams are refused.
    const early = await open(false);
    const refused = [
      await early.next((f) => f.type === FrameType.rstStream && f.streamId === 9, 2000),
      await early.next((f) => f.type === FrameType.rstStream && f.streamId === 11, 2000),
    ];
    for (const f of refused) expect(errorOf(f).code).toBe(H2Error.refusedStream);
    // A negative check: nothing marks "no third reset is coming", so a short
    // wait gives one the time to arrive.
    await sleep(200);
    expect(early.frames.filter((f) => f.type === FrameType.rstStream)).toHaveLength(2);
    // After: a protocol error that ends the connection; stream 7 (the 4th) was the last one taken.
    const late = await open(true);
    const goaway = await late.next((f) => f.type === FrameType.goaway, 2000);
    expect(errorOf(goaway)).toEqual({ code: H2Error.protocolError, lastStreamId: 7 });
    await within(late.closed, 2000, "closed after its GOAWAY");
  });

  it("has a compliant client queue the calls beyond --max-streams-per-connection: never more than that many at once", async () => {
    let running = 0;
    let most = 0;
    const hold: ToolDefinition = {
      name: "hold",
      description: "Holds a call for 300 ms and counts how many are held at once.",
      handler: async () => {
        running++;
        most = Math.max(most, running);
        await sleep(300);
        running--;
        return "held";
      },
    };
    const bridge = await start({ maxStreamsPerConnection: 4, tools: [hold] });
    const c = bridge.client("grpc");
    const { sessionId } = await c.initializeSession({});
    const t0 = performance.now();
    const results = await Promise.all(
      Array.from({ length: 8 }, () =>
        c.executeTool({ sessionId, toolName: "hold", parameters: {} }, { timeoutMs: 5000 }),
      ),
    );
    expect(results.map((r) => [r.success, decodeJsonAny(r.result)])).toEqual(
      Array.from({ length: 8 }, () => [true, "held"]),
    );
    expect(most).toBe(4);
    // Two rounds of 300 ms: the client queued the rest instead of failing them.
    expect(performance.now() - t0).toBeGreaterThanOrEqual(550);
  });
});

describe("replies", () => {
  it("fails a reply over --max-reply-bytes with RESOURCE_EXHAUSTED, and the client gets that status", async () => {
    const bridge = await start({ maxReplyBytes: 64 * 1024 });
    for (const protocol of ["grpc", "connect", "grpc-web"] as const) {
      const c = bridge.client(protocol);
      const { sessionId } = await c.initializeSession({});
      // Two values of 40 KiB: each fits a reply, both together do not.
      const value = encodeValue("string", "x".repeat(40 * 1024)).any;
      for (const name of ["a", "b"]) {
        await c.registerVariable({ sessionId, name, type: "string", initialValue: value });
      }
      // A deadline turns a hang into DEADLINE_EXCEEDED, which would fail here.
      const both = await rejectionOf(
        c.getVariables({ sessionId, variableIdentifiers: ["a", "b"] }, { timeoutMs: 5000 }),
      );
      expect([protocol, Code[both.code]]).toEqual([protocol, "ResourceExhausted"]);
      // The same client goes on: one of them is served.
      const one = await c.getVariables({ sessionId, variableIdentifiers: ["a"] });
      expect([protocol, Object.keys(one.variables)]).toEqual([protocol, ["a"]]);
    }
  });

  it("cuts an HTTP/1.1 reply the peer stops reading after writeStallTimeoutMs", async () => {
    // Long enough that polling the connections gauge sees the reader's
    // connection open before the stall closes it, on a loaded machine too.
    const bridge = await start({ writeStallTimeoutMs: 3000 });
    const { sessionId, names } = await fillSession(grpcClient(bridge.url), 15);
    const body = toBinary(
      BatchGetVariablesRequestSchema,
      create(BatchGetVariablesRequestSchema, { sessionId, variableIdentifiers: names }),
    );
    const others = await publicConnections(bridge.adminUrl);
    const reader = await tcp(bridge.port);
    reader.socket.write(
      `POST /snakepit.bridge.BridgeService/GetVariables HTTP/1.1\r\nHost: a\r\n` +
        `Content-Type: application/proto\r\nConnect-Protocol-Version: 1\r\n` +
        `Content-Length: ${body.length}\r\n\r\n`,
    );
    reader.socket.write(body);
    reader.socket.pause();
    // The server took the connection, then (its reply stalled) closed it.
    // (HTTP/1.1's stall timeout is the socket's own, on Node's clock.)
    const connections = () => publicConnections(bridge.adminUrl);
    await until(async () => (await connections()) > others, 5000, "the reader's connection open");
    await until(async () => (await connections()) === others, 10_000, "the stalled one closed");
    // Reading again: what the kernel buffered, then the end.
    reader.socket.resume();
    await within(reader.closed, 3000, "the stalled connection closed");
    expect(reader.received()).toMatch(/^HTTP\/1\.1 200 /);
    expect(reader.receivedBytes(), `${reader.receivedBytes()} bytes received`).toBeLessThan(
      names.length * (MiB - 1024),
    );
    // The server is fine.
    expect((await grpcClient(bridge.url).ping({ message: "ok" })).message).toBe("ok");
  });

  it("resets the streams of a client that never reads (and keeps pinging) after --write-stall-timeout-ms, and the server's memory goes back", async () => {
    const stallMs = 1500;
    const server = await cli.serve([
      "--host",
      "127.0.0.1",
      "--port",
      "0",
      "--worker-port",
      "off",
      "--admin-port",
      "0",
      "--write-stall-timeout-ms",
      String(stallMs),
      "--trusted-proxy",
      "127.0.0.1",
      "--log-level",
      "error",
    ]);
    const rssMiB = () => rssOf(server.pid);
    const retainedMiB = async () => {
      const text = await (await fetch(`${server.adminUrl}/metrics`)).text();
      const gauge = (name: string) =>
        Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1] ?? Number.NaN);
      return (
        (gauge("nodejs_heap_size_used_bytes") + gauge("nodejs_external_memory_bytes")) / 2 ** 20
      );
    };
    const c = grpcClient(server.url);
    // 15 values of just under 1 MiB: within the default session budget
    // (16 MiB), and one read of them all is just under the default reply cap (16 MiB).
    const { sessionId, names } = await fillSession(c, 15);
    const all = await c.getVariables({ sessionId, variableIdentifiers: names });
    expect(Object.keys(all.variables)).toHaveLength(15);
    // Reads allocate, and allocation is what makes V8 collect: a few make
    // garbage from earlier work go before the baseline is taken.
    const churn = async (rounds: number) => {
      for (let i = 0; i < rounds; i++) {
        await c.getVariable({ sessionId, variableIdentifier: names[i % names.length] as string });
      }
    };
    await churn(40);
    const before = rssMiB();
    const retainedBefore = await retainedMiB();

    // 8 full reads on a connection whose stream windows take 1 KiB each and
    // are never read, while the client keeps pinging, as a keep-alive would
    // (which kept Node's own stream timeout from ever firing).
    const stalled = h2(server.url, { settings: { initialWindowSize: 1024 } });
    let peak = 0;
    const timers = [
      setInterval(() => stalled.ping(() => {}), 250),
      setInterval(() => {
        peak = Math.max(peak, rssMiB());
      }, 50),
    ];
    const request = grpcMessage(
      toBinary(
        BatchGetVariablesRequestSchema,
        create(BatchGetVariablesRequestSchema, { sessionId, variableIdentifiers: names }),
      ),
    );
    const t0 = performance.now();
    let settled: { code: number; after: number }[];
    try {
      // Each stream speaks for a client of its own (the server believes
      // x-forwarded-for from loopback here): one client's unread replies
      // are bounded by its reply budget long before the stall timeout, see
      // stalled-readers.test.ts; this is about what the timeout frees.
      const resets = Array.from({ length: 8 }, (_, i) => {
        const stream = stalled.request({
          ...grpcHeaders("GetVariables"),
          "x-forwarded-for": `10.0.0.${i + 1}`,
        });
        stream.on("error", () => {});
        stream.end(request);
        return new Promise<{ code: number; after: number }>((resolve) =>
          stream.once("close", () =>
            resolve({ code: stream.rstCode, after: performance.now() - t0 }),
          ),
        );
      });
      // Generous: building 8 replies of 15 MiB takes the server a while on a
      // loaded machine, and the stall clock starts only once they are written.
      settled = await within(Promise.all(resets), stallMs + 15_000, "8 stalled streams reset");
    } finally {
      for (const timer of timers) clearInterval(timer);
    }
    const during = Math.max(peak, rssMiB());
    const resetsAt = settled.map((r) => r.after.toFixed(0)).join(", ");
    for (const { code, after } of settled) {
      expect(code, `resets at ${resetsAt} ms`).toBe(http2.constants.NGHTTP2_CANCEL);
      expect(after, `resets at ${resetsAt} ms`).toBeGreaterThanOrEqual(stallMs - 50);
      expect(after, `resets at ${resetsAt} ms`).toBeLessThan(stallMs + 10_000);
    }
    // A stalled reply holds its framed bytes (just under the 16 MiB cap)
    // and, until V8 next collects, the encoding it was framed from and its
    // parts: 3 x the cap per reply is the generous bound. (Before the cap
    // and this guard, 8 replies of 40 MiB pinned 630 MiB for good.)
    const figures = () =>
      `RSS ${before.toFixed(0)} MiB before, peak ${during.toFixed(0)} MiB stalled, ${rssMiB().toFixed(0)} MiB now`;
    expect(during - before, figures()).toBeLessThan(8 * 16 * 3);
    // Reset, nothing refers to the replies any more. What the process still
    // holds is its JS heap and Buffer memory (prom-client's process metrics
    // on the admin listener); RSS is not the measure here, since the
    // allocator may keep freed pages mapped. Once V8 collects, which the
    // allocation of ordinary reads soon makes it do (an idle process would
    // not), that is back within a margin well under the 8 x 15 MiB the
    // replies held.
    const retained = async () =>
      `${figures()}; heap + external ${(await retainedMiB()).toFixed(0)} MiB now, ${retainedBefore.toFixed(0)} MiB before`;
    const deadline = performance.now() + 20_000;
    while ((await retainedMiB()) - retainedBefore > 48 && performance.now() < deadline) {
      await c.getVariables({ sessionId, variableIdentifiers: names });
      await churn(5);
    }
    expect((await retainedMiB()) - retainedBefore, await retained()).toBeLessThan(48);
    const again = await c.getVariables({ sessionId, variableIdentifiers: names });
    expect(Object.keys(again.variables)).toHaveLength(15);
    server.child.kill("SIGTERM");
    expect(await within(server.exited, 5000, "exit")).toEqual({ code: 0, signal: null });
  }, 60_000);
});

describe("shutdown with forwarded tool calls", () => {
  /**
   * A worker: another bridge with a tool that takes `ms`, as a Python
   * worker serving ExecuteTool would. `started` resolves when a call
   * reaches it; `aborted` when the caller went away mid-call.
   */
  async function slowWorker() {
    let started: () => void = () => {};
    let aborted: () => void = () => {};
    const calls = {
      started: new Promise<void>((resolve) => {
        started = resolve;
      }),
      aborted: new Promise<void>((resolve) => {
        aborted = resolve;
      }),
    };
    const worker = await startBridge({ autoCreateSessions: true, builtinTools: false });
    opened.push({ destroy: () => worker.stop() });
    worker.server.registerTool({
      name: "slow_echo",
      description: "Answers its text after ms milliseconds.",
      parameters: [
        { name: "text", type: "string", required: true },
        { name: "ms", type: "integer", required: true },
      ],
      handler: ({ text, ms }, { signal }) =>
        new Promise((resolve, reject) => {
          started();
          const timer = setTimeout(() => resolve(text as string), ms as number);
          signal.addEventListener("abort", () => {
            clearTimeout(timer);
            aborted();
            reject(new Error("cancelled"));
          });
        }),
    });
    return { worker, calls };
  }

  /** The CLI with a worker's slow_echo registered for a new session. */
  async function serveWithForwardedTool(graceMs: number) {
    const { worker, calls } = await slowWorker();
    const server = await cli.serve([
      "--host",
      "127.0.0.1",
      "--port",
      "0",
      "--worker-port",
      "0",
      "--admin-port",
      "0",
      "--shutdown-grace-ms",
      String(graceMs),
    ]);
    expect(server.workerUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const c = grpcClient(server.url);
    const { sessionId } = await c.initializeSession({});
    const registered = await grpcClient(server.workerUrl).registerTools({
      sessionId,
      workerId: "slow-worker",
      tools: [
        {
          name: "slow_echo",
          description: "Answers its text after ms milliseconds.",
          parameters: [
            { name: "text", type: "string", required: true },
            { name: "ms", type: "integer", required: true },
          ],
          metadata: { worker_address: `127.0.0.1:${worker.port}` },
        },
      ],
    });
    expect(registered.success).toBe(true);
    return { server, calls, c, sessionId };
  }

  it("on SIGTERM lets a forwarded tool call in flight finish, then exits 0", async () => {
    const { server, calls, c, sessionId } = await serveWithForwardedTool(5000);
    const call = c.executeTool({
      sessionId,
      toolName: "slow_echo",
      parameters: params({ text: "finished across the shutdown", ms: 800 }),
    });
    await within(calls.started, 5000, "the call reaching the worker");
    const signalledAt = performance.now();
    server.child.kill("SIGTERM");
    const result = await within(call, 5000, "the call's answer");
    const finished = performance.now() - signalledAt;
    expect([result.success, result.errorMessage]).toEqual([true, ""]);
    expect(decodeJsonAny(result.result)).toBe("finished across the shutdown");
    const exit = await within(server.exited, 5000, "exit");
    const exited = performance.now() - signalledAt;
    const figures = `answered ${finished.toFixed(0)} ms, exited ${exited.toFixed(0)} ms after SIGTERM`;
    expect(exit, figures).toEqual({ code: 0, signal: null });
    // It ran its course (800 ms from its start, SIGTERM right after it)...
    expect(finished, figures).toBeGreaterThanOrEqual(600);
    // ...and the process left once it was done, not at the end of the 5 s grace.
    expect(exited, figures).toBeLessThan(finished + 1500);
  });

  it("cuts a forwarded call that outlives --shutdown-grace-ms at the end of the grace period, and still exits", async () => {
    const graceMs = 800;
    const { server, calls, c, sessionId } = await serveWithForwardedTool(graceMs);
    const call = c.executeTool({
      sessionId,
      toolName: "slow_echo",
      parameters: params({ text: "never", ms: 15_000 }),
    });
    await within(calls.started, 5000, "the call reaching the worker");
    const signalledAt = performance.now();
    server.child.kill("SIGTERM");
    const cut = await within(rejectionOf(call), graceMs + 3000, "the call cut");
    const cutAfter = performance.now() - signalledAt;
    const exit = await within(server.exited, 5000, "exit");
    const exitedAfter = performance.now() - signalledAt;
    const figures = `cut ${cutAfter.toFixed(0)} ms (${Code[cut.code]}), exited ${exitedAfter.toFixed(0)} ms after SIGTERM; grace ${graceMs} ms`;
    expect(cutAfter, figures).toBeGreaterThanOrEqual(graceMs - 50);
    expect(cutAfter, figures).toBeLessThan(graceMs + 1500);
    expect(exit, figures).toEqual({ code: 0, signal: null });
    expect(exitedAfter, figures).toBeLessThan(graceMs + 2000);
    expect(server.stdout()).toContain("shutdown grace period over");
    // The worker is told: its call does not run on for nobody.
    await within(calls.aborted, 3000, "the worker's call cancelled");
  });
});

describe("admin listener", () => {
  it("serves /healthz and /metrics on the admin port only, not on the public port", async () => {
    const bridge = await start();
    for (const path of ["/healthz", "/metrics"]) {
      const pub = await fetch(`${bridge.url}${path}`);
      expect([path, pub.status]).toEqual([path, 404]);
      await pub.body?.cancel();
      // Over HTTP/2 too.
      const session = h2(bridge.url);
      const status = await new Promise<unknown>((resolve, reject) => {
        const stream = session.request({ ":path": path });
        stream.on("response", (headers) => resolve(headers[":status"]));
        stream.on("error", reject);
        stream.resume();
      });
      expect([path, status]).toEqual([path, 404]);
    }
    const health = await fetch(`${bridge.adminUrl}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: "ok" });
    const metrics = await fetch(`${bridge.adminUrl}/metrics`);
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toMatch(/^# TYPE bridge_sessions gauge$/m);
  });
});
