/**
 * The HTTP front on a real socket: protocol sniffing, the hand-off to
 * HTTP/1 and HTTP/2, its own endpoints, CORS, close() and listen().
 *
 * (Over 400 lines: each area needs raw-socket set-up of its own.)
 */
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { create } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  createClient,
  type Transport,
} from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import { frontOptions } from "../../../test/support/front.js";
import { waitFor } from "../../../test/support/wait.js";
import {
  BridgeService,
  PingResponseSchema,
  VariableUpdateSchema,
} from "../../gen/snakepit/bridge/bridge_pb.js";
import { createMetrics, createMetricsInterceptor } from "../observability/metrics.js";
import { createHttpFront, type HttpFront, type HttpFrontOptions } from "./http-front.js";

const pingPath = "/snakepit.bridge.BridgeService/Ping";

interface Deferred<T = void> {
  promise: Promise<T>;
  resolve(value: T): void;
}

function deferred<T = void>(): Deferred<T> {
  let resolve: (value: T) => void = () => {};
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** Hooks the test service exposes so tests can hold calls open. */
interface Hooks {
  slowStarted: Deferred;
  releaseSlow: Deferred;
  /** The front's shutdown signal, set once the front exists. */
  shutdown: AbortSignal;
}

// The minimal BridgeService of these tests: Ping (with "slow" waiting for the
// test) and a WatchVariables stream that runs until the front shuts down.
function testRoutes(hooks: Hooks) {
  return (router: ConnectRouter) =>
    router.service(BridgeService, {
      async ping(req, ctx) {
        if (req.message === "slow") {
          hooks.slowStarted.resolve();
          await hooks.releaseSlow.promise;
        }
        if (req.message === "fail") throw new ConnectError("nope", Code.NotFound);
        return create(PingResponseSchema, {
          message: `${ctx.protocolName}:${req.message.length > 64 ? req.message.length : req.message}`,
        });
      },
      async *watchVariables(_req, ctx) {
        const signal = AbortSignal.any([ctx.signal, hooks.shutdown]);
        let n = 0;
        while (!signal.aborted) {
          yield create(VariableUpdateSchema, {
            variableId: `v${n++}`,
            updateType: "value_changed",
          });
          await new Promise<void>((resolve) => {
            // The fake service's pace between updates, not a test's wait.
            const timer = setTimeout(resolve, 20);
            signal.addEventListener(
              "abort",
              () => {
                clearTimeout(timer);
                resolve();
              },
              { once: true },
            );
          });
        }
        // Shutdown: return, so the stream ends with OK rather than an error.
      },
    });
}

interface Started {
  front: HttpFront;
  port: number;
  url: string;
  hooks: Hooks;
  metrics: ReturnType<typeof createMetrics>;
}

const running: HttpFront[] = [];

/** Whether a new TCP connection to the port is refused (the listener is closed). */
function connectRefused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(false);
    });
    socket.once("error", () => resolve(true));
  });
}

afterEach(async () => {
  await Promise.all(running.splice(0).map((f) => f.close({ graceMs: 100 })));
});

async function start(options: Partial<HttpFrontOptions> = {}): Promise<Started> {
  const hooks: Hooks = {
    slowStarted: deferred(),
    releaseSlow: deferred(),
    shutdown: new AbortController().signal,
  };
  const metrics = createMetrics();
  const front = createHttpFront(
    frontOptions({
      routes: testRoutes(hooks),
      interceptors: [createMetricsInterceptor(metrics)],
      health: () => ({ ok: true, sessions: 2 }),
      metrics,
      ...options,
    }),
  );
  hooks.shutdown = front.shutdownSignal;
  running.push(front);
  const { port } = await front.listen();
  return { front, port, url: `http://127.0.0.1:${port}`, hooks, metrics };
}

const transports = {
  "gRPC (HTTP/2)": (url: string) => createGrpcTransport({ baseUrl: url }),
  "Connect (HTTP/1.1)": (url: string) =>
    createConnectTransport({ baseUrl: url, httpVersion: "1.1" }),
  "gRPC-Web (HTTP/1.1)": (url: string) =>
    createGrpcWebTransport({ baseUrl: url, httpVersion: "1.1" }),
  "Connect (HTTP/2)": (url: string) => createConnectTransport({ baseUrl: url, httpVersion: "2" }),
  "gRPC-Web (HTTP/2)": (url: string) => createGrpcWebTransport({ baseUrl: url, httpVersion: "2" }),
} satisfies Record<string, (url: string) => Transport>;

/** Options for a front without services, for lifecycle tests. */
function bareOptions(overrides: Partial<HttpFrontOptions> = {}): HttpFrontOptions {
  return frontOptions({ maxRequestBytes: 1024, ...overrides });
}

/** A raw HTTP/1.1 request, so tests control every header (fetch forbids some). */
function request(
  url: string,
  init: { method?: string; path: string; headers?: Record<string, string>; body?: string },
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      `${url}${init.path}`,
      { method: init.method ?? "GET", headers: init.headers ?? {}, agent: false },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          body += chunk;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on("error", reject);
    req.end(init.body);
  });
}

describe("one port, every protocol", () => {
  it.each(Object.entries(transports))("%s reaches Ping", async (_name, make) => {
    const { url } = await start();
    const client = createClient(BridgeService, make(url));
    const res = await client.ping({ message: "hi" });
    expect(res.message).toMatch(/^(grpc|grpc_web|grpc-web|connect):hi$/);
  });

  it("serves all protocols on the same port at once and counts them per RPC", async () => {
    const { url } = await start();
    const replies = await Promise.all(
      Object.values(transports).map((make) =>
        createClient(BridgeService, make(url)).ping({ message: "x" }),
      ),
    );
    expect(new Set(replies.map((r) => r.message.split(":")[0])).size).toBe(3);
    await expect(
      createClient(BridgeService, transports["gRPC (HTTP/2)"](url)).ping({ message: "fail" }),
    ).rejects.toMatchObject({ code: Code.NotFound });
    await expect(
      createClient(BridgeService, transports["Connect (HTTP/1.1)"](url)).getSession({}),
    ).rejects.toMatchObject({ code: Code.Unimplemented });

    const res = await fetch(`${url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
    const text = await res.text();
    expect(text).toContain(`bridge_rpc_calls_total{rpc="Ping",code="ok"} 5\n`);
    expect(text).toContain(`bridge_rpc_calls_total{rpc="Ping",code="not_found"} 1\n`);
    expect(text).toContain(`bridge_rpc_calls_total{rpc="GetSession",code="unimplemented"} 1\n`);
    expect(text).toContain(`bridge_rpc_duration_seconds_count{rpc="Ping"} 6\n`);
  });

  it("waits for the rest of an HTTP/2 preface that arrives in pieces", async () => {
    const { port } = await start();
    // The client's first write (the preface plus SETTINGS) is cut after 5 bytes.
    const session = http2.connect(`http://127.0.0.1:${port}`, {
      createConnection: () => {
        const socket = net.connect(port, "127.0.0.1");
        const write = socket.write.bind(socket) as (chunk: Uint8Array, cb?: () => void) => boolean;
        let first = true;
        socket.write = ((chunk: Uint8Array, ...rest: unknown[]) => {
          if (first && chunk.length > 5) {
            first = false;
            write(chunk.subarray(0, 5));
            setTimeout(() => write(chunk.subarray(5)), 50);
            return true;
          }
          return write(chunk, ...(rest as [() => void]));
        }) as typeof socket.write;
        return socket;
      },
    });
    try {
      const body = await h2Get(session, "/healthz");
      expect(JSON.parse(body)).toMatchObject({ status: "ok" });
    } finally {
      session.close();
    }
  });

  it("hands a connection that only starts like the preface to HTTP/1", async () => {
    const { port } = await start();
    const reply = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(port, "127.0.0.1", () => {
        socket.write("PRI * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
      });
      let text = "";
      socket.setEncoding("utf8");
      socket.on("data", (chunk: string) => {
        text += chunk;
      });
      socket.on("close", () => resolve(text));
      socket.on("error", reject);
    });
    expect(reply).toMatch(/^HTTP\/1\.1 \d{3} /);
  });

  it.each(["gRPC (HTTP/2)", "Connect (HTTP/1.1)", "gRPC-Web (HTTP/1.1)"] as const)(
    "%s: large requests arrive intact; over the limit is RESOURCE_EXHAUSTED",
    async (name) => {
      const { url } = await start({ maxRequestBytes: 512 * 1024 });
      // A fresh client per call, so the big message is the connection's first
      // bytes: the hand-off must keep them in order across many reads.
      const ping = (message: string) =>
        createClient(BridgeService, transports[name](url)).ping({ message });
      const fits = "a".repeat(500 * 1024);
      expect((await ping(fits)).message).toMatch(new RegExp(`:${fits.length}$`));
      await expect(ping("b".repeat(600 * 1024))).rejects.toMatchObject({
        code: Code.ResourceExhausted,
      });
    },
  );
});

describe("hand-off keeps bytes in order", () => {
  it("a connection whose first write is a whole large HTTP/1.1 request", async () => {
    const { port } = await start({ maxRequestBytes: 4 * 1024 * 1024 });
    // One write of headers plus a 2 MiB body: the server's first reads fill
    // whole buffers, the case where more data arrives during the hand-off.
    const message = "z".repeat(2 * 1024 * 1024);
    const body = JSON.stringify({ message });
    const head = [
      `POST ${pingPath} HTTP/1.1`,
      "Host: x",
      "Content-Type: application/json",
      "Connect-Protocol-Version: 1",
      `Content-Length: ${Buffer.byteLength(body)}`,
      "Connection: close",
      "",
      "",
    ].join("\r\n");
    const reply = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(port, "127.0.0.1", () => {
        socket.write(Buffer.from(head + body));
      });
      let text = "";
      socket.setEncoding("utf8");
      socket.on("data", (chunk: string) => {
        text += chunk;
      });
      socket.on("close", () => resolve(text));
      socket.on("error", reject);
    });
    expect(reply).toMatch(/^HTTP\/1\.1 200 /);
    expect(reply).toContain(`{"message":"connect:${message.length}"}`);
  });
});

describe("/healthz, /metrics and other paths", () => {
  it("reports health from the callback", async () => {
    const { url } = await start();
    const res = await fetch(`${url}/healthz`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(res.headers.get("cache-control")).toBe("no-store");
    expect(await res.json()).toEqual({ status: "ok", sessions: 2 });
  });

  it("answers 503 when the callback says not ok or throws", async () => {
    let state: "down" | "throw" = "down";
    const { url } = await start({
      health: () => {
        if (state === "throw") throw new Error("store unreachable");
        return { ok: false, store: "unreachable" };
      },
    });
    const down = await fetch(`${url}/healthz`);
    expect(down.status).toBe(503);
    expect(await down.json()).toEqual({ status: "unavailable", store: "unreachable" });
    state = "throw";
    const broken = await fetch(`${url}/healthz`);
    expect(broken.status).toBe(503);
    expect(await broken.json()).toEqual({ status: "error" });
  });

  it("answers 404 for other paths and 405 for other methods", async () => {
    const { url } = await start();
    expect((await fetch(`${url}/`)).status).toBe(404);
    expect((await fetch(`${url}/nope`)).status).toBe(404);
    const post = await fetch(`${url}/healthz`, { method: "POST" });
    expect(post.status).toBe(405);
    expect(post.headers.get("allow")).toBe("GET, HEAD");
  });

  it("serves /metrics over HTTP/2 too", async () => {
    const { port, metrics } = await start();
    metrics.gauge("bridge_sessions", "Live sessions.", () => 7);
    const session = http2.connect(`http://127.0.0.1:${port}`);
    try {
      const text = await h2Get(session, "/metrics");
      expect(text).toContain("\nbridge_sessions 7\n");
    } finally {
      session.close();
    }
  });
});

describe("CORS", () => {
  const allowed = "http://localhost:5173";
  const preflight = (url: string, origin: string) =>
    request(url, {
      method: "OPTIONS",
      path: pingPath,
      headers: {
        Origin: origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,connect-protocol-version",
      },
    });
  const call = (url: string, origin: string) =>
    request(url, {
      method: "POST",
      path: pingPath,
      headers: {
        Origin: origin,
        "Content-Type": "application/json",
        "Connect-Protocol-Version": "1",
      },
      body: JSON.stringify({ message: "cors" }),
    });

  it("answers a preflight from an allowed origin with what Connect and gRPC-Web need", async () => {
    const { url } = await start({ corsOrigins: [allowed, "https://app.example"] });
    const res = await preflight(url, allowed);
    expect(res.status).toBe(204);
    expect(res.headers["access-control-allow-origin"]).toBe(allowed);
    expect(res.headers.vary).toBe("Origin");
    expect(res.headers["access-control-max-age"]).toBe("7200");
    const methods = String(res.headers["access-control-allow-methods"]).split(", ");
    expect(methods).toEqual(expect.arrayContaining(["POST", "GET"]));
    const headers = String(res.headers["access-control-allow-headers"]).toLowerCase().split(", ");
    expect(headers).toEqual(
      expect.arrayContaining([
        "content-type",
        "connect-protocol-version",
        "x-grpc-web",
        "grpc-timeout",
      ]),
    );
  });

  it("adds the allow and expose headers to the actual response", async () => {
    const { url } = await start({ corsOrigins: [allowed] });
    const res = await call(url, allowed);
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toEqual({ message: "connect:cors" });
    expect(res.headers["access-control-allow-origin"]).toBe(allowed);
    expect(res.headers.vary).toBe("Origin");
    const exposed = String(res.headers["access-control-expose-headers"]).toLowerCase();
    expect(exposed).toContain("grpc-status");
    expect(exposed).toContain("grpc-message");
  });

  it("gives a disallowed origin no CORS headers", async () => {
    const { url } = await start({ corsOrigins: [allowed] });
    for (const origin of [
      "http://evil.example",
      "http://localhost:5174",
      `${allowed}.evil.example`,
    ]) {
      const pre = await preflight(url, origin);
      expect(pre.status).toBe(403);
      expect(pre.headers["access-control-allow-origin"]).toBeUndefined();
      const res = await call(url, origin);
      expect(res.headers["access-control-allow-origin"]).toBeUndefined();
      expect(res.headers["access-control-expose-headers"]).toBeUndefined();
    }
  });

  it("allows any origin only when the list contains *", async () => {
    const open = await start({ corsOrigins: ["*"] });
    const res = await preflight(open.url, "http://anything.example");
    expect(res.status).toBe(204);
    expect(res.headers["access-control-allow-origin"]).toBe("*");

    const closed = await start({ corsOrigins: [] });
    const denied = await call(closed.url, "http://anything.example");
    expect(denied.status).toBe(200);
    expect(denied.headers["access-control-allow-origin"]).toBeUndefined();
  });
});

describe("close()", () => {
  it("ends running server streams cleanly, on HTTP/2 and HTTP/1.1", async () => {
    const { front, url } = await start();
    const watch = async (transport: Transport) => {
      const ids: string[] = [];
      for await (const update of createClient(BridgeService, transport).watchVariables({})) {
        ids.push(update.variableId);
        if (ids.length === 2) opened.resolve();
      }
      return ids;
    };
    let opened = deferred();
    const h2 = watch(transports["gRPC (HTTP/2)"](url));
    await opened.promise;
    opened = deferred();
    const h1 = watch(transports["Connect (HTTP/1.1)"](url));
    await opened.promise;

    expect(front.shutdownSignal.aborted).toBe(false);
    const closing = front.close({ graceMs: 5000 });
    expect(front.shutdownSignal.aborted).toBe(true);
    // Both streams end without an error once the shutdown signal fires.
    expect((await h2).length).toBeGreaterThanOrEqual(2);
    expect((await h1).length).toBeGreaterThanOrEqual(2);
    await closing;
  });

  it.each(["gRPC (HTTP/2)", "Connect (HTTP/1.1)"] as const)(
    "%s: lets an in-flight unary call finish, then refuses connections",
    async (name) => {
      const { front, url, port, hooks } = await start();
      const client = createClient(BridgeService, transports[name](url));
      const slow = client.ping({ message: "slow" });
      await hooks.slowStarted.promise;

      let closed = false;
      const closing = front.close({ graceMs: 5000 }).then(() => {
        closed = true;
      });
      // close() has gone as far as it can (the listener is closed) and waits for the call.
      await waitFor(async () => expect(await connectRefused(port)).toBe(true));
      expect(closed).toBe(false);
      hooks.releaseSlow.resolve();
      expect((await slow).message).toMatch(/:slow$/);
      await closing;

      await expect(fetch(`${url}/healthz`)).rejects.toThrow();
      await expect(
        createClient(BridgeService, transports["gRPC (HTTP/2)"](url)).ping({ message: "late" }),
      ).rejects.toMatchObject({ code: Code.Unavailable });
    },
  );

  it("fails /healthz for requests that arrive while closing", async () => {
    const { front, port, hooks, url } = await start();
    // Keep close() from finishing, and hold a connection that has not spoken yet.
    const slow = createClient(BridgeService, transports["gRPC (HTTP/2)"](url)).ping({
      message: "slow",
    });
    await hooks.slowStarted.promise;
    const socket = net.connect(port, "127.0.0.1");
    await new Promise((resolve) => socket.once("connect", resolve));
    const closing = front.close({ graceMs: 5000 });

    const reply = await new Promise<string>((resolve, reject) => {
      let text = "";
      socket.setEncoding("utf8");
      socket.on("data", (chunk: string) => {
        text += chunk;
      });
      socket.on("close", () => resolve(text));
      socket.on("error", reject);
      socket.write("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    });
    expect(reply).toMatch(/^HTTP\/1\.1 503 /);
    expect(reply.toLowerCase()).toContain("connection: close");
    expect(reply).toContain('{"status":"shutting_down"}');

    hooks.releaseSlow.resolve();
    await slow;
    await closing;
  });

  it("closes connections that outlive the grace period", async () => {
    const { front, url, hooks } = await start();
    const slow = createClient(BridgeService, transports["Connect (HTTP/1.1)"](url)).ping({
      message: "slow",
    });
    await hooks.slowStarted.promise;
    const t0 = performance.now();
    await front.close({ graceMs: 100 });
    expect(performance.now() - t0).toBeLessThan(2000);
    await expect(slow).rejects.toBeInstanceOf(ConnectError);
    hooks.releaseSlow.resolve();
  });

  it("is idempotent and works before listen()", async () => {
    const front = createHttpFront(bareOptions());
    const a = front.close();
    expect(front.close()).toBe(a);
    await a;
    await expect(front.listen()).rejects.toThrow("closed");
  });
});

describe("listen()", () => {
  it("close() during listen() leaves the port free", async () => {
    const front = createHttpFront(bareOptions());
    const bound = front.listen();
    await front.close();
    const { port } = await bound;
    await expect(fetch(`http://127.0.0.1:${port}/healthz`)).rejects.toThrow();
  });

  it("rejects when the port is taken", async () => {
    const { port } = await start();
    const second = createHttpFront(bareOptions({ port }));
    await expect(second.listen()).rejects.toMatchObject({ code: "EADDRINUSE" });
    await second.close();
  });
});

/** GETs `path` over an HTTP/2 session and resolves with the body. */
function h2Get(session: http2.ClientHttp2Session, path: string): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const stream = session.request({ ":path": path });
    let body = "";
    stream.setEncoding("utf8");
    stream.on("data", (chunk: string) => {
      body += chunk;
    });
    stream.on("end", () => resolve(body));
    stream.on("error", reject);
    stream.end();
  });
}
