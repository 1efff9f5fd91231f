/**
 * Pins every reliance of edge-compat.ts on Node and connect-es, one
 * `describe` each, under the same name as the reliance there: an upgrade
 * of Node, @connectrpc/connect or @connectrpc/connect-node that changes one
 * fails here first, next to what it breaks. Each test runs the real thing
 * (a Node server on a loopback socket, or connect's own handlers); the
 * suites named in each `describe` test the same through the whole bridge.
 *
 * (Over 400 lines: one small server per reliance.)
 */
import { EventEmitter, once } from "node:events";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { gzipSync } from "node:zlib";
import { create, toBinary } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  type ConnectRouterOptions,
  createClient,
  createConnectRouter,
  createContextValues,
  createRouterTransport,
  type HandlerContext,
} from "@connectrpc/connect";
import { compressionGzip, type connectNodeAdapter } from "@connectrpc/connect-node";
import { afterAll, afterEach, beforeAll, describe, expect, expectTypeOf, it } from "vitest";
import { protocols } from "../../../test/support/bridge.js";
import { startFront } from "../../../test/support/front.js";
import { envelope, rawCall } from "../../../test/support/raw-rpc.js";
import { until } from "../../../test/support/wait.js";
import {
  BridgeService,
  PingRequestSchema,
  PingResponseSchema,
} from "../../gen/snakepit/bridge/bridge_pb.js";
import {
  armHttp1Timeouts,
  callEnded,
  clampDeadline,
  closeIfBodyUnread,
  connectEndStreamFrame,
  connectErrorBody,
  connectHttpStatus,
  connectNodeAuthority,
  connectRequestFailure,
  correctBeforeWritten,
  directWriter,
  frameEnvelope,
  grpcStatus,
  grpcWebTrailerFrame,
  handOffToHttp1,
  handOffToHttp2,
  maxTimerMs,
  type NodeHandler,
  type NodeRequest,
  type NodeResponse,
  parseDeadline,
  resetOnWriteStall,
  universalRequestOf,
  workerSessionManager,
  writeUniversalResponse,
} from "./edge-compat.js";
import type { HttpFront } from "./http-front.js";

/** Servers and sockets a test opened, closed after it. */
const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup();
});

/** Listens on a free loopback port; closed after the test. */
async function listen(server: net.Server | http2.Http2Server): Promise<number> {
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  cleanups.push(() => {
    server.close();
    if (server instanceof http.Server) server.closeAllConnections();
  });
  return (server.address() as net.AddressInfo).port;
}

/**
 * A TCP server that reads a connection's first chunk, as the front does to
 * classify it, and hands the socket on with that chunk.
 */
async function classifying(handOff: (socket: net.Socket, received: Buffer) => void) {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.once("data", (chunk: Buffer) => {
      socket.pause();
      handOff(socket, chunk);
    });
  });
  cleanups.push(() => {
    for (const socket of sockets) socket.destroy();
  });
  return listen(server);
}

/** A raw TCP connection; resolves with everything it received once the server closed it. */
function rawExchange(
  port: number,
  ...writes: string[]
): { text: Promise<string>; socket: net.Socket } {
  const socket = net.connect(port, "127.0.0.1");
  cleanups.push(() => socket.destroy());
  for (const w of writes) socket.write(w);
  const text = new Promise<string>((resolve, reject) => {
    let received = "";
    socket.on("data", (chunk) => {
      received += chunk.toString("latin1");
    });
    socket.on("close", () => resolve(received));
    socket.on("error", reject);
  });
  return { text, socket };
}

/** An HTTP/2 client session to `port`; closed after the test. */
function h2Client(port: number, settings?: http2.Settings): http2.ClientHttp2Session {
  const session = http2.connect(`http://127.0.0.1:${port}`, settings ? { settings } : {});
  session.on("error", () => {});
  cleanups.push(() => session.destroy());
  return session;
}

/** Reads a client stream to its end: the body and the trailers. */
async function readAll(stream: http2.ClientHttp2Stream) {
  const chunks: Buffer[] = [];
  let trailers: http2.IncomingHttpHeaders = {};
  stream.on("trailers", (t) => {
    trailers = t;
  });
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return { body: Buffer.concat(chunks), trailers };
}

describe("NodeRequest / NodeResponse", () => {
  it("are the request and response types connect-node's adapter takes (checked by the typecheck)", () => {
    expectTypeOf<NodeRequest>().toEqualTypeOf<http.IncomingMessage | http2.Http2ServerRequest>();
    expectTypeOf<NodeHandler>().toEqualTypeOf<ReturnType<typeof connectNodeAdapter>>();
    expectTypeOf<http.ServerResponse>().toExtend<NodeResponse>();
    expectTypeOf<http2.Http2ServerResponse>().toExtend<NodeResponse>();
  });
});

describe("handOffToHttp1 / handOffToHttp2", () => {
  it("an HTTP/1 server gets the bytes read to classify the connection first, then the rest", async () => {
    const server = http.createServer((req, res) => {
      let body = "";
      req.on("data", (c) => {
        body += c;
      });
      req.on("end", () => res.end(`${req.method} ${req.url} ${body}`));
    });
    const port = await classifying((socket, received) => handOffToHttp1(server, socket, received));
    // The first write is what the classifier reads; the rest comes later.
    const { text, socket } = rawExchange(port, "POST /path HTTP/1.1\r\nHost: x\r\n");
    await until(() => socket.bytesWritten > 0, "the first write");
    socket.end("Content-Length: 5\r\nConnection: close\r\n\r\nhello");
    expect(await text).toMatch(/^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nPOST \/path hello$/);
  });

  it("an HTTP/2 server makes its session at once, reads the preface that was read, and serves", async () => {
    const server = http2.createServer((req, res) => res.end(`h2 ${req.url}`));
    const sessions: (http2.ServerHttp2Session | undefined)[] = [];
    const port = await classifying((socket, received) => {
      const session = handOffToHttp2(server, socket, received);
      sessions.push(session);
      // The session returned is the one the server serves the connection with.
      session?.on("stream", () => sessions.push(session));
    });
    const client = h2Client(port);
    const { body } = await readAll(client.request({ ":path": "/p" }).end());
    expect(body.toString()).toBe("h2 /p");
    expect(sessions).toHaveLength(2);
    expect(sessions[0]).toBeInstanceOf(Object);
    expect(sessions[1]).toBe(sessions[0]);
  });
});

describe("armHttp1Timeouts", () => {
  it("makes a server that never listens answer 408 to headers that do not arrive in time", async () => {
    const server = http.createServer({ connectionsCheckingInterval: 50 }, (_req, res) => res.end());
    server.headersTimeout = 300;
    server.requestTimeout = 300;
    armHttp1Timeouts(server);
    cleanups.push(() => server.close());
    const port = await classifying((socket, received) => handOffToHttp1(server, socket, received));
    const started = Date.now();
    const { text } = rawExchange(port, "GET / HTTP/1.1\r\nHost: x\r\n");
    expect(await text).toMatch(/^HTTP\/1\.1 408 /);
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
  });
});

describe("resetOnWriteStall", () => {
  async function server(stallMs: number, replyBytes: number) {
    const h2 = http2.createServer((req, res) => {
      resetOnWriteStall(req.stream, stallMs);
      res.end(Buffer.alloc(replyBytes, 7));
    });
    return listen(h2);
  }

  it("resets a stream whose peer takes none of its reply, though the peer keeps pinging", async () => {
    const port = await server(300, 1 << 20);
    // A window of 0: the server can send no DATA on any stream.
    const client = h2Client(port, { initialWindowSize: 0 });
    const pinger = setInterval(() => client.ping(() => {}), 50);
    cleanups.push(() => clearInterval(pinger));
    const stream = client.request({ ":path": "/" }).end();
    stream.on("error", () => {});
    const started = Date.now();
    await once(stream, "close");
    expect(stream.rstCode).toBe(http2.constants.NGHTTP2_CANCEL);
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
  });

  it("leaves a stream whose peer reads its reply alone", async () => {
    const port = await server(300, 4 << 20);
    const { body } = await readAll(h2Client(port).request({ ":path": "/" }).end());
    expect(body.length).toBe(4 << 20);
  });
});

describe("closeIfBodyUnread", () => {
  async function server() {
    const h1 = http.createServer((req, res) => {
      closeIfBodyUnread(req, res);
      if (req.url === "/refuse") {
        // Headers implicit, as refuseRequest sends them.
        res.statusCode = 413;
        res.end("too big\n");
      } else if (req.url === "/refuse-head") {
        // writeHead with headers, as connect-node sends them.
        res.writeHead(413, { "content-type": "text/plain" });
        res.end("too big\n");
      } else {
        req.resume();
        req.on("end", () => res.end("read\n"));
      }
    });
    return listen(h1);
  }

  it.each(["/refuse", "/refuse-head"])(
    "a response sent before the body was read (%s) closes the connection",
    async (path) => {
      const port = await server();
      const { text } = rawExchange(
        port,
        `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n0123456789`,
      );
      const reply = await text;
      expect(reply).toMatch(/^HTTP\/1\.1 413 /);
      expect(reply.toLowerCase()).toContain("\r\nconnection: close\r\n");
    },
  );

  it("a response sent after the body was read keeps the connection for the next request", async () => {
    const port = await server();
    const request = "POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
    const { text, socket } = rawExchange(port, request);
    let received = "";
    socket.on("data", (chunk) => {
      received += chunk.toString("latin1");
    });
    await until(() => received.endsWith("read\n"), "the first reply");
    expect(received.toLowerCase()).toContain("\r\nconnection: keep-alive\r\n");
    socket.write(request.replace("HTTP/1.1\r\n", "HTTP/1.1\r\nConnection: close\r\n"));
    expect((await text).match(/HTTP\/1\.1 200 /g)).toHaveLength(2);
  });
});

describe("directWriter", () => {
  const frames = [frameEnvelope(0, Buffer.from("one")), frameEnvelope(0, Buffer.from("two"))];

  it("HTTP/2: frames written to the stream go out between the response's headers and its trailers", async () => {
    const h2 = http2.createServer((req, res) => {
      const { target, sendHeaders } = directWriter(req, res);
      res.setHeader("content-type", "application/grpc");
      sendHeaders();
      for (const frame of frames) target.write(frame);
      res.addTrailers({ "grpc-status": "0" });
      res.end();
    });
    const port = await listen(h2);
    const stream = h2Client(port).request({ ":path": "/" }).end();
    const [headers] = (await once(stream, "response")) as [http2.IncomingHttpHeaders];
    expect(headers["content-type"]).toBe("application/grpc");
    const { body, trailers } = await readAll(stream);
    expect(body).toEqual(Buffer.concat(frames));
    expect(trailers["grpc-status"]).toBe("0");
  });

  it("HTTP/1: frames written to the response follow its flushed headers", async () => {
    const h1 = http.createServer((req, res) => {
      const { target, sendHeaders } = directWriter(req, res);
      res.setHeader("content-type", "application/grpc-web+proto");
      sendHeaders();
      expect(res.headersSent).toBe(true);
      for (const frame of frames) target.write(frame);
      res.end();
    });
    const port = await listen(h1);
    const res = await fetch(`http://127.0.0.1:${port}/`);
    expect(Buffer.from(await res.arrayBuffer())).toEqual(Buffer.concat(frames));
  });
});

describe("connectNodeAuthority", () => {
  /** What connect-node made of a request: the URL, or what it threw. */
  const seen: string[] = [];
  const handler = (replace: string | undefined) => (req: NodeRequest, res: NodeResponse) => {
    const given = connectNodeAuthority.of(req);
    if (replace !== undefined) connectNodeAuthority.set(req, replace);
    try {
      seen.push(`${given} -> ${universalRequestOf(req, res, createContextValues()).url}`);
    } catch (e) {
      // `new URL` throws a TypeError, which would escape the request listener.
      seen.push(`${given} -> throws ${e instanceof TypeError ? "TypeError" : String(e)}`);
    }
    res.end();
  };

  it("HTTP/1: connect-node builds the URL from Host, as read and replaced here, and throws on a malformed one", async () => {
    seen.length = 0;
    const port = await listen(http.createServer(handler(undefined)));
    for (const host of ["bridge.example:1", "["]) {
      const { text } = rawExchange(
        port,
        `GET /p HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`,
      );
      await text;
    }
    const replaced = await listen(http.createServer(handler("other.example:2")));
    await (await fetch(`http://127.0.0.1:${replaced}/q`)).arrayBuffer();
    expect(seen).toEqual([
      "bridge.example:1 -> http://bridge.example:1/p",
      "[ -> throws TypeError",
      `127.0.0.1:${replaced} -> http://other.example:2/q`,
    ]);
  });

  it("HTTP/2: connect-node builds the URL from :authority, as read and replaced here", async () => {
    seen.length = 0;
    const port = await listen(http2.createServer(handler("other.example:2")));
    const client = h2Client(port);
    await readAll(client.request({ ":path": "/p", ":authority": "bridge.example:1" }).end());
    expect(seen).toEqual(["bridge.example:1 -> http://other.example:2/p"]);
  });
});

describe("universalRequestOf / writeUniversalResponse", () => {
  it("the request's signal aborts when the client goes away; the response is written as given", async () => {
    let signal: AbortSignal | undefined;
    const h1 = http.createServer((req, res) => {
      const uReq = universalRequestOf(req, res, createContextValues());
      signal = uReq.signal;
      if (req.url === "/hang") return;
      void writeUniversalResponse(
        {
          status: 200,
          header: new Headers({ "content-type": "text/plain" }),
          body: (async function* () {
            yield Buffer.from("a");
            yield Buffer.from("b");
          })(),
        },
        res,
      );
    });
    const port = await listen(h1);
    const res = await fetch(`http://127.0.0.1:${port}/`);
    expect([res.headers.get("content-type"), await res.text()]).toEqual(["text/plain", "ab"]);
    const { socket } = rawExchange(port, "GET /hang HTTP/1.1\r\nHost: x\r\n\r\n");
    await until(() => signal !== undefined && !signal.aborted && socket.bytesWritten > 0);
    const hanging = signal as AbortSignal;
    socket.destroy();
    await until(() => hanging.aborted, "the request's signal to abort");
  });
});

describe("clampDeadline", () => {
  it("clamps deadlines beyond a Node timer, as connect reads them, and leaves the rest", () => {
    const clamp = (name: string, value: string) => {
      const headers: Record<string, string> = { [name]: value };
      clampDeadline(headers);
      return headers[name];
    };
    expect(clamp("grpc-timeout", "99999999H")).toBe("596H");
    expect(clamp("grpc-timeout", "2147484S")).toBe("596H");
    expect(clamp("grpc-timeout", `${maxTimerMs}m`)).toBe(`${maxTimerMs}m`);
    expect(clamp("grpc-timeout", "999999999H")).toBe("999999999H"); // malformed: connect refuses it
    expect(clamp("connect-timeout-ms", "9999999999")).toBe(String(maxTimerMs));
    expect(clamp("connect-timeout-ms", String(maxTimerMs))).toBe(String(maxTimerMs));
    expect(clamp("connect-timeout-ms", "soon")).toBe("soon");
    // 596H is what a Node timer holds.
    expect(596 * 3_600_000).toBeLessThanOrEqual(maxTimerMs);
  });
  // The call served with such a deadline: test/hostile/front-fuzz.test.ts.
});

// ---------------------------------------------------------------------------
// connect

describe("abortWithReason", () => {
  // The reason a handler's signal carries when its call ends, over every
  // protocol, through a real front: the shared `callEnded` for a call that
  // succeeded, the call's own error for one that failed, the deadline for
  // one that ran out of time.
  const signals = new Map<string, AbortSignal>();
  const failure = new ConnectError("the test handler failed", Code.FailedPrecondition);

  function routes(router: ConnectRouter) {
    router.service(BridgeService, {
      async ping(req, context) {
        signals.set(req.message, context.signal);
        if (req.message.startsWith("fail")) throw failure;
        if (req.message.startsWith("slow")) {
          // As a handler that honours its signal: it gives up when the signal fires.
          await new Promise((resolve) => context.signal.addEventListener("abort", resolve));
          throw ConnectError.from(context.signal.reason);
        }
        return create(PingResponseSchema, { message: req.message });
      },
    });
  }

  let front: HttpFront;
  let url: string;
  beforeAll(async () => {
    ({ front, url } = await startFront({ routes }));
  });
  afterAll(() => front.close({ graceMs: 100 }));

  async function call(protocol: (typeof protocols)[number], message: string, timeout?: string) {
    const body = toBinary(PingRequestSchema, create(PingRequestSchema, { message }));
    const headers: Record<string, string> =
      timeout === undefined
        ? {}
        : protocol === "connect"
          ? { "connect-timeout-ms": timeout }
          : { "grpc-timeout": `${timeout}m` };
    const ping = BridgeService.method.ping;
    const outcome = await rawCall(
      url,
      protocol,
      ping,
      protocol === "connect" ? body : envelope(body),
      {
        headers,
      },
    );
    const signal = signals.get(message);
    if (signal === undefined) throw new Error(`the handler never saw ${message}`);
    // The context is aborted as the call ends, at the latest when its stream closes.
    await until(() => signal.aborted, `the signal of ${message} to be aborted`);
    return { outcome, signal };
  }

  describe.each(protocols)("over %s", (protocol) => {
    it("carries the shared callEnded reason when the call succeeded, not a DOMException", async () => {
      const { outcome, signal } = await call(protocol, `ok ${protocol}`);
      expect(outcome.code).toBeUndefined();
      expect(signal.reason).toBe(callEnded);
      expect(callEnded.code).toBe(Code.Canceled);
      expect(Object.isFrozen(callEnded)).toBe(true);
    });

    it("carries the call's own error when the handler failed", async () => {
      const { outcome, signal } = await call(protocol, `fail ${protocol}`);
      expect(outcome.code).toBe(Code.FailedPrecondition);
      expect(signal.reason).toBe(failure);
    });

    it("carries DEADLINE_EXCEEDED when the call ran out of time", async () => {
      const { outcome, signal } = await call(protocol, `slow ${protocol}`, "50");
      expect(outcome.code).toBe(Code.DeadlineExceeded);
      expect(ConnectError.from(signal.reason).code).toBe(Code.DeadlineExceeded);
    });
  });
});

/**
 * Calls Ping through connect's own gRPC handler with `body` as the request
 * body (enveloped messages), without any adapter: the error its handler
 * context was aborted with, and the status it wrote.
 */
async function grpcHandlerCall(
  body: Uint8Array,
  options: Partial<ConnectRouterOptions> & {
    headers?: Record<string, string>;
    reply?: string;
  } = {},
): Promise<{ reason: unknown; status: string | null; message: string | null }> {
  let context: HandlerContext | undefined;
  const { headers = {}, ...routerOptions } = options;
  const gate = routerOptions.requestGate;
  const router = createConnectRouter({
    acceptCompression: [compressionGzip],
    ...routerOptions,
    requestGate: (ctx) => {
      context = ctx;
      return gate?.(ctx);
    },
  });
  router.service(BridgeService, {
    ping: (req) => create(PingResponseSchema, { message: req.message }),
  });
  const handler = router.handlers.find((h) => h.method.name === "Ping");
  if (handler === undefined) throw new Error("no Ping handler");
  const res = await handler({
    httpVersion: "2.0",
    method: "POST",
    url: `http://bridge.test${handler.requestPath}`,
    header: new Headers({ "content-type": "application/grpc+proto", ...headers }),
    body: (async function* () {
      yield body;
    })(),
    signal: new AbortController().signal,
    contextValues: createContextValues(),
  });
  for await (const _ of res.body ?? []) {
    // drained: the status is in the trailer once the body ends
  }
  const trailer = res.trailer ?? new Headers();
  return {
    reason: context?.signal.reason,
    status: trailer.get("grpc-status"),
    message: trailer.get("grpc-message"),
  };
}

const pingBytes = (message: string) =>
  toBinary(PingRequestSchema, create(PingRequestSchema, { message }));

describe("correctBeforeWritten", () => {
  it("a correction made when the call aborts is the status connect's handler writes", async () => {
    const outcome = await grpcHandlerCall(envelope(pingBytes("s").subarray(0, 1)), {
      requestGate: (context) =>
        correctBeforeWritten(context, (reason) =>
          connectRequestFailure(reason)?.kind === "parse"
            ? { message: "corrected", code: Code.InvalidArgument }
            : undefined,
        ),
    });
    expect([outcome.status, outcome.message]).toEqual([String(Code.InvalidArgument), "corrected"]);
    expect(outcome.reason).toBeInstanceOf(ConnectError);
  });

  it("over the in-memory Connect transport too", async () => {
    const transport = createRouterTransport(
      (router) =>
        router.service(BridgeService, {
          ping: () => create(PingResponseSchema, { message: "x".repeat(100) }),
        }),
      {
        router: {
          writeMaxBytes: 50,
          requestGate: (context) =>
            correctBeforeWritten(context, () => ({ message: "no", code: Code.Aborted })),
        },
      },
    );
    const error = await createClient(BridgeService, transport)
      .ping({})
      .catch((e: unknown) => ConnectError.from(e));
    expect([(error as ConnectError).code, (error as ConnectError).rawMessage]).toEqual([
      Code.Aborted,
      "no",
    ]);
  });
  // Every protocol, unary and streaming, through the front: request-errors.test.ts.
});

describe("connectRequestFailure", () => {
  it("recognizes connect's own errors for requests it cannot read or size, and nothing else", async () => {
    const kinds = async (body: Uint8Array, options?: Parameters<typeof grpcHandlerCall>[1]) =>
      connectRequestFailure((await grpcHandlerCall(body, options)).reason);
    expect(await kinds(envelope(pingBytes("session").subarray(0, 4)))).toEqual({
      kind: "parse",
      detail: "premature EOF",
    });
    expect(await kinds(envelope(pingBytes("s"), 1))).toEqual({
      kind: "compressed-without-encoding",
    });
    const gzip = gzipSync(pingBytes("session"));
    const cut = await kinds(envelope(gzip.subarray(0, gzip.length - 6), 1), {
      headers: { "grpc-encoding": "gzip" },
    });
    expect([cut?.kind, cut?.kind === "decompress" && cut.error.message]).toEqual([
      "decompress",
      "unexpected end of file",
    ]);
    expect(await kinds(envelope(pingBytes("x".repeat(100))), { readMaxBytes: 50 })).toEqual({
      kind: "size",
      which: "request",
      size: 102,
      limit: 50,
    });
    // A reply over writeMaxBytes, as the Connect unary handler aborts with it.
    let reason: unknown;
    const transport = createRouterTransport(
      (router) =>
        router.service(BridgeService, {
          ping: () => create(PingResponseSchema, { message: "y".repeat(100) }),
        }),
      {
        router: {
          writeMaxBytes: 50,
          requestGate: ({ signal }) =>
            signal.addEventListener("abort", () => {
              reason = signal.reason;
            }),
        },
      },
    );
    await createClient(BridgeService, transport)
      .ping({})
      .catch(() => undefined);
    expect(connectRequestFailure(reason)).toEqual({
      kind: "size",
      which: "reply",
      size: 102,
      limit: 50,
    });
    expect(
      connectRequestFailure(new ConnectError("parse binary: x", Code.Unknown)),
    ).toBeUndefined();
    expect(connectRequestFailure(new Error("parse binary: x"))).toBeUndefined();
  });
  // The messages the client gets for each, on every protocol: request-errors.test.ts.
});

describe("protocol pieces", () => {
  const error = new ConnectError("bad value: 100%", Code.InvalidArgument);

  it("frames an envelope: flags, 32-bit big-endian length, data", () => {
    expect([...frameEnvelope(0x80, new Uint8Array([1, 2, 3]))]).toEqual([
      0x80, 0, 0, 0, 3, 1, 2, 3,
    ]);
  });

  it("gRPC status headers and gRPC-Web's trailer frame", () => {
    expect(Object.fromEntries(grpcStatus(error))).toEqual({
      "grpc-message": "bad%20value%3A%20100%25",
      "grpc-status": "3",
    });
    expect(Object.fromEntries(grpcStatus(undefined))).toEqual({ "grpc-status": "0" });
    const frame = grpcWebTrailerFrame(grpcStatus(error));
    const text = "grpc-message: bad%20value%3A%20100%25\r\ngrpc-status: 3\r\n";
    expect(frame).toEqual(frameEnvelope(0x80, Buffer.from(text)));
  });

  it("Connect's end-stream frame and unary error body", () => {
    const json = '{"error":{"code":"invalid_argument","message":"bad value: 100%"}}';
    expect(connectEndStreamFrame(error)).toEqual(frameEnvelope(0x02, Buffer.from(json)));
    expect(connectEndStreamFrame(undefined)).toEqual(frameEnvelope(0x02, Buffer.from("{}")));
    expect(Buffer.from(connectErrorBody(error)).toString()).toBe(
      '{"code":"invalid_argument","message":"bad value: 100%"}',
    );
    expect(
      [Code.InvalidArgument, Code.ResourceExhausted, Code.Unavailable, Code.Internal].map(
        connectHttpStatus,
      ),
    ).toEqual([400, 429, 503, 500]);
  });

  it("parses deadlines as connect does", () => {
    expect(parseDeadline("grpc", "5S")).toEqual({ timeoutMs: 5000 });
    expect(parseDeadline("connect", "1500")).toEqual({ timeoutMs: 1500 });
    expect(parseDeadline("grpc", null)).toEqual({});
    const bad = parseDeadline("grpc", "5s").error;
    expect([bad?.code, bad?.rawMessage]).toEqual([
      Code.InvalidArgument,
      "protocol error: invalid grpc timeout value: 5s",
    ]);
  });
  // Read by connect's own clients: test/server/watch.test.ts (watches) and
  // test/hostile/front-fuzz.test.ts (refusals).
});

describe("workerSessionManager", () => {
  /** An HTTP/2 server that answers every request, then says GOAWAY on the idle connection. */
  async function goawayServer() {
    const server = http2.createServer();
    server.on("stream", (stream) => {
      stream.respond({ ":status": 200 });
      stream.end("ok");
      // Once the stream is done, the connection is idle: tell it to go away.
      stream.on("close", () => {
        if (!stream.session?.destroyed) stream.session?.goaway(http2.constants.NGHTTP2_NO_ERROR);
      });
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const { port } = server.address() as net.AddressInfo;
    return { server, url: `http://127.0.0.1:${port}` };
  }

  it("hooks the session of the manager's ready state (the internals it relies on)", async () => {
    const { server, url } = await goawayServer();
    try {
      const manager = workerSessionManager(url, { idleConnectionTimeoutMs: 5000 });
      await manager.connect();
      const state = (manager as unknown as { s: { t: string; conn?: http2.ClientHttp2Session } }).s;
      expect(state.t).toBe("ready");
      const conn = state.conn;
      expect(conn).toBeInstanceOf(EventEmitter);
      // The manager's own listener, and the guard that outlives it.
      expect(conn?.listenerCount("error")).toBeGreaterThanOrEqual(2);
      manager.abort();
    } finally {
      server.close();
    }
  });
});
