/**
 * The bridge server's HTTP surface, through a real server on a real socket:
 * health and Prometheus metrics, CORS for browsers, the request size limit,
 * and what the server's logs reveal about session ids.
 *
 * (Over 400 lines: each HTTP concern is a few cases on one shared server.)
 */
import http from "node:http";
import net from "node:net";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { describe, expect, it } from "vitest";
import { BridgeService, PingRequestSchema } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { createLogger, createMemoryStore, redactSessionId } from "../../src/server/index.js";
import { encodeJsonAny, encodeValue } from "../../src/values/index.js";
import { bridgePerTest, type Protocol, protocols } from "../support/bridge.js";
import { envelope, rawCall } from "../support/raw-rpc.js";
import { until, waitFor } from "../support/wait.js";

const bridge = bridgePerTest();

const int = (n: number) => encodeValue("integer", n).any;

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One HTTP/1.1 request on its own connection. */
function request(
  url: string,
  options: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, {
      method: options.method ?? "GET",
      headers: options.headers ?? {},
      agent: false,
    });
    req.on("error", reject);
    req.on("response", (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        body += chunk;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.end(options.body);
  });
}

/**
 * Polls `probe` until it returns a value `accept`s (metrics gauges refresh
 * every second), for at most 5 s; returns the last value either way, so the
 * caller's assertion shows what was there instead.
 */
async function eventually<T>(probe: () => Promise<T>, accept: (value: T) => boolean): Promise<T> {
  let last = await probe();
  await waitFor(
    async () => {
      if (!accept(last)) {
        last = await probe();
        if (!accept(last)) throw new Error("not yet");
      }
    },
    { timeoutMs: 5000, intervalMs: 100 },
  ).catch(() => undefined); // the caller's assertion reports the last value
  return last;
}

describe("admin endpoints", () => {
  it("are served on the admin listener only: the public and worker ports answer 404", async () => {
    const b = await bridge();
    for (const path of ["/healthz", "/metrics"]) {
      expect((await request(`${b.adminUrl}${path}`)).status).toBe(200);
      expect((await request(`${b.url}${path}`)).status).toBe(404);
      expect((await request(`${b.workerUrl}${path}`)).status).toBe(404);
    }
    // The admin listener serves no RPC.
    const rpc = await request(`${b.adminUrl}/snakepit.bridge.BridgeService/Ping`, {
      method: "POST",
      headers: { "Content-Type": "application/proto", "Connect-Protocol-Version": "1" },
      body: "",
    });
    expect(rpc.status).toBe(404);
  });
});

describe("keep-alive", () => {
  it("a bodyless GET keeps its HTTP/1.1 connection open for the next request", async () => {
    const b = await bridge();
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const ports: number[] = [];
    for (let i = 0; i < 3; i++) {
      await new Promise<void>((resolve, reject) => {
        http
          .get(`${b.adminUrl}/healthz`, { agent }, (res) => {
            ports.push(res.socket.localPort ?? -1);
            expect(res.headers.connection).toBe("keep-alive");
            res.resume();
            res.on("end", () => resolve());
          })
          .on("error", reject);
      });
    }
    agent.destroy();
    expect(new Set(ports).size).toBe(1);
  });
});

/** The memory report /healthz carries while under the memory budget. */
const memoryOk = {
  memory: { used: expect.any(Number), budget: expect.any(Number), state: "ok" },
};

describe("/healthz", () => {
  it("answers 200 with the live session count, and 503 once stop() has begun", async () => {
    const b = await bridge();
    const c = b.client();
    await c.initializeSession({});
    await c.initializeSession({});
    const healthy = await eventually(
      () => request(`${b.adminUrl}/healthz`),
      (r) => r.body.includes('"sessions":2'),
    );
    expect(healthy.status).toBe(200);
    expect(healthy.headers["content-type"]).toBe("application/json");
    expect(JSON.parse(healthy.body)).toEqual({ status: "ok", sessions: 2, ...memoryOk });

    // A load balancer's probe that connected just before the shutdown began
    // and asks just after it: the admin listener, closed last, says the
    // bridge is draining, then closes the connection.
    const socket = net.connect(Number(new URL(b.adminUrl).port), "127.0.0.1");
    await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
    const stopping = b.stop();
    let reply = "";
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      reply += chunk;
    });
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
    socket.write("GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n");
    await closed;
    await stopping;
    expect(reply).toMatch(/^HTTP\/1\.1 503 /);
    expect(JSON.parse(reply.slice(reply.indexOf("\r\n\r\n") + 4))).toEqual({
      status: "unavailable",
      sessions: 2,
      draining: true,
      ...memoryOk,
    });
  });
});

describe("/healthz with a store that reports its backend", () => {
  it("answers 503 with the store unavailable while it is down, and 200 again once it is back", async () => {
    // The in-memory store with the Redis store's `healthy` flag, and its
    // stats failing while "down" as a remote store's do.
    const inner = createMemoryStore();
    let down = false;
    let failedStats = 0;
    const store = {
      ...inner,
      get healthy() {
        return !down;
      },
      stats: () => {
        if (!down) return inner.stats();
        failedStats++;
        return Promise.reject(new Error("connection is closed"));
      },
    };
    try {
      const b = await bridge({ sessionStore: store });
      await b.client().initializeSession({});
      const up = await eventually(
        () => request(`${b.adminUrl}/healthz`),
        (r) => r.body.includes('"sessions":1'),
      );
      expect([up.status, JSON.parse(up.body)]).toEqual([
        200,
        { status: "ok", sessions: 1, store: "ok", ...memoryOk },
      ]);

      down = true;
      // The once-a-second stats refresh fails at least once: a rejection it
      // left unhandled would fail this run.
      await until(() => failedStats > 0, "a failed stats refresh");
      const failing = await request(`${b.adminUrl}/healthz`);
      expect([failing.status, JSON.parse(failing.body)]).toEqual([
        503,
        { status: "unavailable", sessions: 1, store: "unavailable", ...memoryOk },
      ]);
      // Calls still reach the store: the health report only tells the balancer.
      expect((await b.client().ping({ message: "still here" })).message).toBe("still here");

      down = false;
      const back = await request(`${b.adminUrl}/healthz`);
      expect([back.status, JSON.parse(back.body)]).toEqual([
        200,
        { status: "ok", sessions: 1, store: "ok", ...memoryOk },
      ]);
    } finally {
      // A store given to the server is the caller's to close.
      await inner.close();
    }
  });
});

/** The samples of a Prometheus text exposition, keyed `name{labels}`. */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    out.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return out;
}

describe("/metrics", () => {
  it("counts RPCs by method and code, tool executions by outcome, and reports live sizes", async () => {
    const b = await bridge();
    const c = b.client();
    const { sessionId: s1 } = await c.initializeSession({
      initialVariables: [
        { name: "x", type: "integer", initialValue: int(1) },
        { name: "y", type: "integer", initialValue: int(2) },
      ],
    });
    const { sessionId: s2 } = await c.initializeSession({
      initialVariables: [{ name: "z", type: "integer", initialValue: int(3) }],
    });
    for (const [sessionId, name] of [
      [s1, "x"],
      [s1, "y"],
      [s2, "z"],
    ] as const) {
      await c.getVariable({ sessionId, variableIdentifier: name });
    }
    await expect(c.getVariable({ sessionId: s1, variableIdentifier: "nope" })).rejects.toThrow(
      /not found/,
    );
    const ok = await c.executeTool({
      sessionId: s1,
      toolName: "increment_variable",
      parameters: { name: encodeJsonAny("x") },
    });
    expect(ok.success).toBe(true);
    const missing = await c.executeTool({ sessionId: s1, toolName: "no_such_tool" });
    expect(missing.success).toBe(false);

    const abort = new AbortController();
    const watch = c.watchVariables({ sessionId: s2, syncMarker: true }, { signal: abort.signal });
    const iterator = watch[Symbol.asyncIterator]();
    expect((await iterator.next()).value?.updateType).toBe("sync");

    const scrape = async () => {
      const res = await request(`${b.adminUrl}/metrics`);
      expect(res.status).toBe(200);
      expect(res.headers["content-type"]).toBe("text/plain; version=0.0.4; charset=utf-8");
      return samples(res.body);
    };
    const during = await eventually(scrape, (m) => m.get("bridge_sessions") === 2);
    expect(during.get('bridge_rpc_calls_total{rpc="GetVariable",code="ok"}')).toBe(3);
    expect(during.get('bridge_rpc_calls_total{rpc="GetVariable",code="not_found"}')).toBe(1);
    expect(during.get('bridge_rpc_calls_total{rpc="InitializeSession",code="ok"}')).toBe(2);
    expect(during.get('bridge_rpc_duration_seconds_count{rpc="GetVariable"}')).toBe(4);
    expect(during.get('bridge_tool_executions_total{tool="increment_variable",outcome="ok"}')).toBe(
      1,
    );
    // Names a caller makes up get no series of their own.
    expect(
      during.get('bridge_tool_executions_total{tool="(unregistered)",outcome="not_found"}'),
    ).toBe(1);
    expect([...during.keys()].some((k) => k.includes("no_such_tool"))).toBe(false);
    expect(during.get("bridge_sessions")).toBe(2);
    expect(during.get("bridge_variables")).toBe(3);
    expect(during.get("bridge_watchers")).toBe(1);

    abort.abort();
    await iterator.next().catch(() => undefined);
    await c.cleanupSession({ sessionId: s2 });
    const after = await eventually(
      scrape,
      (m) => m.get("bridge_sessions") === 1 && m.get("bridge_watchers") === 0,
    );
    expect(after.get("bridge_sessions")).toBe(1);
    expect(after.get("bridge_variables")).toBe(2);
    expect(after.get("bridge_watchers")).toBe(0);
  });
});

describe("CORS", () => {
  const allowed = "http://app.example";
  const preflight = (url: string, origin: string) =>
    request(`${url}/snakepit.bridge.BridgeService/Ping`, {
      method: "OPTIONS",
      headers: {
        Origin: origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,connect-protocol-version",
      },
    });
  const ping = (url: string, origin: string) =>
    request(`${url}/snakepit.bridge.BridgeService/Ping`, {
      method: "POST",
      headers: {
        Origin: origin,
        "Content-Type": "application/json",
        "Connect-Protocol-Version": "1",
      },
      body: JSON.stringify({ message: "from the browser" }),
    });

  it("lets the configured origin call from a browser", async () => {
    const b = await bridge({ corsOrigins: [allowed] });
    const pre = await preflight(b.url, allowed);
    expect(pre.status).toBe(204);
    expect(pre.headers["access-control-allow-origin"]).toBe(allowed);
    expect(pre.headers["access-control-allow-methods"]).toContain("POST");
    const allowHeaders = String(pre.headers["access-control-allow-headers"]).toLowerCase();
    expect(allowHeaders).toContain("content-type");
    expect(allowHeaders).toContain("connect-protocol-version");
    expect(pre.headers.vary).toContain("Origin");

    const call = await ping(b.url, allowed);
    expect(call.status).toBe(200);
    expect(JSON.parse(call.body).message).toBe("from the browser");
    expect(call.headers["access-control-allow-origin"]).toBe(allowed);
    expect(String(call.headers["access-control-expose-headers"]).toLowerCase()).toContain(
      "grpc-status",
    );
  });

  it.each([
    "http://evil.example",
    "http://app.example.evil.example",
    "http://app.example:8080",
    "https://app.example",
    "null",
  ])("refuses the origin %s", async (origin) => {
    const b = await bridge({ corsOrigins: [allowed] });
    const pre = await preflight(b.url, origin);
    expect(pre.status).toBe(403);
    expect(pre.headers["access-control-allow-origin"]).toBeUndefined();
    // The call itself is served (CORS is enforced by the browser), but without
    // the header the browser does not let the page read the answer.
    const call = await ping(b.url, origin);
    expect(call.headers["access-control-allow-origin"]).toBeUndefined();
  });
});

describe("request size limit", () => {
  const limit = 64 * 1024;

  /** A transport of its own, with one keep-alive connection for HTTP/1.1. */
  function transport(url: string, protocol: Protocol): Transport {
    const options = { baseUrl: url, defaultTimeoutMs: 3000 };
    const nodeOptions = { agent: new http.Agent({ keepAlive: true, maxSockets: 1 }) };
    return protocol === "grpc"
      ? createGrpcTransport(options)
      : protocol === "grpc-web"
        ? createGrpcWebTransport({ ...options, httpVersion: "1.1", nodeOptions })
        : createConnectTransport({ ...options, httpVersion: "1.1", nodeOptions });
  }

  it.each(protocols)(
    "refuses a larger request with RESOURCE_EXHAUSTED over %s, and the next call works",
    async (protocol) => {
      const b = await bridge({ maxRequestBytes: limit, maxValueBytes: 1024 });
      const c = createClient(BridgeService, transport(b.url, protocol));
      const outcome = (p: Promise<{ message: string }>) =>
        p.then(
          (res) => `ok ${res.message.length}`,
          (e: unknown) => {
            const error = ConnectError.from(e);
            // The refusal names the setting to change.
            if (!error.rawMessage.includes("--max-request-bytes")) return error.rawMessage;
            return Code[error.code];
          },
        );
      expect(await outcome(c.ping({ message: "x".repeat(limit - 1000) }))).toBe(
        `ok ${limit - 1000}`,
      );
      for (const size of [limit + 1000, 1024 * 1024]) {
        expect(`${size}: ${await outcome(c.ping({ message: "x".repeat(size) }))}`).toBe(
          `${size}: ResourceExhausted`,
        );
        // The connection the refused request came on must stay usable (or be closed).
        expect(`after ${size}: ${await outcome(c.ping({ message: "next" }))}`).toBe(
          `after ${size}: ok 4`,
        );
      }
    },
  );
});

describe("reply size limit", () => {
  it.each(protocols)(
    "refuses a larger reply with RESOURCE_EXHAUSTED naming --max-reply-bytes over %s",
    async (protocol) => {
      const limit = 64 * 1024;
      const b = await bridge({ maxReplyBytes: limit });
      const c = b.client(protocol);
      const { sessionId } = await c.initializeSession({});
      const text = encodeValue("string", "x".repeat(20 * 1024)).any;
      for (const name of ["a", "b", "c", "d"]) {
        await c.registerVariable({ sessionId, name, type: "string", initialValue: text });
      }
      const fits = await c.getVariables({ sessionId, variableIdentifiers: ["a", "b"] });
      expect(Object.keys(fits.variables)).toEqual(["a", "b"]);
      for (const call of [
        c.getVariables({ sessionId, variableIdentifiers: ["a", "b", "c", "d"] }),
        // The same variable asked for many times counts each time.
        c.getVariables({ sessionId, variableIdentifiers: Array(10).fill("a") }),
      ]) {
        const e = ConnectError.from(await call.catch((err: unknown) => err));
        expect(e.code).toBe(Code.ResourceExhausted);
        expect(e.rawMessage).toMatch(
          /^the reply would be about .*the limit is 64 KiB \(--max-reply-bytes\)/,
        );
      }
      // A listing comes in pages that fit the limit, with the way on.
      const page = await c.listVariables({ sessionId, pattern: "*" });
      expect(page.variables.length).toBeLessThan(4);
      expect(page.nextPageToken).not.toBe("");
      // Behind the service's checks, connect's own bound on the encoded reply.
      const echo = ConnectError.from(
        await c.ping({ message: "x".repeat(limit + 1000) }).catch((err: unknown) => err),
      );
      expect(echo.code).toBe(Code.ResourceExhausted);
      expect((await c.ping({ message: "next" })).message).toBe("next");
    },
  );
});

describe("reply compression", () => {
  /** Whether a Ping reply's message came compressed, over gRPC from a client that accepts gzip. */
  const replyCompressed = async (url: string, message: string) => {
    const body = envelope(toBinary(PingRequestSchema, create(PingRequestSchema, { message })));
    const outcome = await rawCall(url, "grpc", BridgeService.method.ping, body, {
      headers: { "grpc-accept-encoding": "gzip" },
    });
    expect(outcome.code).toBeUndefined();
    expect(outcome.envelopes).toHaveLength(1);
    return outcome.envelopes[0]?.flags === 1;
  };

  it("compresses only replies of --compress-min-bytes and more", async () => {
    const small = "x".repeat(2 * 1024);
    const large = "x".repeat(20 * 1024);
    const tuned = (await bridge({ compressMinBytes: 8 * 1024 })).url;
    expect(await replyCompressed(tuned, small)).toBe(false);
    expect(await replyCompressed(tuned, large)).toBe(true);
    // The default (64 KiB) leaves a 20 KiB reply alone, and compresses a larger one.
    const plain = (await bridge()).url;
    expect(await replyCompressed(plain, large)).toBe(false);
    expect(await replyCompressed(plain, "x".repeat(100 * 1024))).toBe(true);
  });
});

describe("logs", () => {
  it("never carry a whole session id, only its redacted prefix", async () => {
    const lines: string[] = [];
    const logger = createLogger({
      level: "debug",
      sink: {
        write: (chunk: string) => {
          lines.push(...chunk.split("\n").filter((l) => l !== ""));
        },
      },
    });
    const b = await bridge({ logger });
    const c = b.client();
    const minted = (
      await c.initializeSession({
        initialVariables: [{ name: "n", type: "integer", initialValue: int(1) }],
      })
    ).sessionId;
    const chosen = "7f3c9a2e-1b4d-4e8f-9a6b-2c5d8e1f0a3b";
    await c.initializeSession({ sessionId: chosen });
    const unknown = "0d9e8f7a-6b5c-4d3e-8f2a-1b0c9d8e7f6a";

    for (const sessionId of [unknown, `${minted}x`]) {
      const error = await c.getVariable({ sessionId, variableIdentifier: "n" }).then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
      expect(error?.code).toBe(Code.NotFound);
      expect(error?.rawMessage).not.toContain(sessionId);
    }
    for (const sessionId of [minted, chosen]) {
      const ok = await c.executeTool({
        sessionId,
        toolName: "conversation_append",
        parameters: { role: encodeJsonAny("user"), content: encodeJsonAny("hi") },
      });
      expect(ok.success).toBe(true);
      const failed = await c.executeTool({
        sessionId,
        toolName: "increment_variable",
        parameters: { name: encodeJsonAny("missing") },
      });
      expect(failed.success).toBe(false);
      await c.cleanupSession({ sessionId });
    }

    const events = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    for (const id of [minted, chosen]) {
      const mentions = events.filter((e) => e.session === redactSessionId(id));
      // Failed executions are sampled per outcome: the second session's
      // failure is counted in the first one's window, not written.
      expect(mentions.map((e) => e.msg)).toEqual(
        id === minted
          ? ["tool executed", "tool executed", "session ended"]
          : ["tool executed", "session ended"],
      );
      expect(redactSessionId(id)).toMatch(/^.{6}…$/u);
    }
    for (const id of [minted, chosen, unknown, `${minted}x`]) {
      expect(lines.filter((l) => l.includes(id))).toEqual([]);
    }
  });
});
