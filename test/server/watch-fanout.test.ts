/**
 * The WatchVariables fan-out path (src/server/watch/watch-endpoint.ts) on the
 * wire: gRPC trailers and status, gRPC-Web framing, deadlines,
 * cancellation, keepalive updates, and every update reaching every stream
 * across the three protocols and a fan-out large enough to be delivered in
 * slices.
 */
import http from "node:http";
import http2 from "node:http2";
import { gzipSync } from "node:zlib";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, type ConnectError, createClient } from "@connectrpc/connect";
import { compressionGzip, createGrpcTransport } from "@connectrpc/connect-node";
import { describe, expect, it, vi } from "vitest";
import { createSessionContext } from "../../src/client/index.js";
import {
  BridgeService,
  type VariableUpdate,
  VariableUpdateSchema,
  WatchVariablesRequestSchema,
} from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { encodeValue } from "../../src/values/index.js";
import { bridgePerTest, type RunningBridge } from "../support/bridge.js";
import { envelope } from "../support/raw-rpc.js";

const bridge = bridgePerTest();
const int = (n: number) => encodeValue("integer", n).any;
const path = "/snakepit.bridge.BridgeService/WatchVariables";

async function newSession(b: RunningBridge, vars: string[] = ["x"]): Promise<string> {
  const c = b.client();
  const { sessionId } = await c.initializeSession({});
  for (const name of vars) {
    await c.registerVariable({ sessionId, name, type: "integer", initialValue: int(0) });
  }
  return sessionId;
}

function watchBody(init: Parameters<typeof create<typeof WatchVariablesRequestSchema>>[1]) {
  return envelope(toBinary(WatchVariablesRequestSchema, create(WatchVariablesRequestSchema, init)));
}

async function watchers(b: RunningBridge): Promise<number> {
  const text = await fetch(`${b.adminUrl}/metrics`).then((r) => r.text());
  return Number(/^bridge_watchers (\S+)$/m.exec(text)?.[1]);
}

/** Splits length-prefixed frames. */
function framesOf(bytes: Buffer): { flags: number; data: Buffer }[] {
  const out: { flags: number; data: Buffer }[] = [];
  let at = 0;
  while (at + 5 <= bytes.length) {
    const size = bytes.readUInt32BE(at + 1);
    out.push({ flags: bytes[at] as number, data: bytes.subarray(at + 5, at + 5 + size) });
    at += 5 + size;
  }
  return out;
}

/** A raw gRPC call over HTTP/2: headers, body and trailers as sent. */
function rawGrpc(url: string, body: Uint8Array, headers: Record<string, string> = {}) {
  const session = http2.connect(url);
  session.on("error", () => undefined);
  const stream = session.request({
    ":method": "POST",
    ":path": path,
    "content-type": "application/grpc",
    te: "trailers",
    ...headers,
  });
  stream.end(body);
  const chunks: Buffer[] = [];
  let responseHeaders: http2.IncomingHttpHeaders = {};
  let trailers: http2.IncomingHttpHeaders = {};
  stream.on("response", (h) => {
    responseHeaders = h;
  });
  stream.on("trailers", (t) => {
    trailers = t;
  });
  stream.on("data", (c: Buffer) => chunks.push(c));
  const done = new Promise<void>((resolve) => stream.on("close", () => resolve()));
  return {
    stream,
    session,
    updates: () =>
      framesOf(Buffer.concat(chunks)).map((f) => fromBinary(VariableUpdateSchema, f.data)),
    /** Waits for the end; headers, trailers and the frames. */
    async end() {
      await done;
      session.close();
      return { headers: responseHeaders, trailers, frames: framesOf(Buffer.concat(chunks)) };
    },
  };
}

/** A raw gRPC-Web call over HTTP/1.1, as browsers send it. */
function rawGrpcWeb(port: number, body: Uint8Array, headers: Record<string, string> = {}) {
  return new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }>(
    (resolve, reject) => {
      const req = http.request(
        {
          host: "127.0.0.1",
          port,
          method: "POST",
          path,
          headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1", ...headers },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () =>
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers,
              body: Buffer.concat(chunks),
            }),
          );
        },
      );
      req.on("error", reject);
      req.end(body);
    },
  );
}

describe("gRPC on the fan-out path", () => {
  it("streams frames, then ends with grpc-status in HTTP/2 trailers (percent-encoded message)", async () => {
    const b = await bridge();
    const sessionId = await newSession(b, ["x"]);
    const call = rawGrpc(b.url, watchBody({ sessionId, includeInitialValues: true }));
    await vi.waitFor(() => expect(call.updates()).toHaveLength(1));
    await b.client().cleanupSession({ sessionId });
    const { headers, trailers, frames } = await call.end();
    expect(headers[":status"]).toBe(200);
    expect(headers["content-type"]).toBe("application/grpc");
    expect(frames.map((f) => f.flags)).toEqual([0]);
    expect(fromBinary(VariableUpdateSchema, frames[0]?.data ?? new Uint8Array()).updateType).toBe(
      "initial_value",
    );
    expect(trailers["grpc-status"]).toBe(String(Code.NotFound));
    expect(decodeURIComponent(String(trailers["grpc-message"]))).toBe("session ended: cleaned up");
  });

  it("answers a refused call trailers-only, its message percent-encoded", async () => {
    const b = await bridge();
    const sessionId = await newSession(b);
    const call = rawGrpc(b.url, watchBody({ sessionId, variableIdentifiers: ["nö 100%"] }));
    const { headers, frames } = await call.end();
    expect(frames).toEqual([]);
    expect(headers["grpc-status"]).toBe(String(Code.NotFound));
    const raw = String(headers["grpc-message"]);
    expect(raw).toMatch(/^[\x20-\x7e]*$/);
    expect(decodeURIComponent(raw)).toContain("Variable not found: nö 100%");
  });

  it("refuses an undecodable request with INVALID_ARGUMENT naming the message type", async () => {
    const b = await bridge();
    const call = rawGrpc(b.url, envelope(Uint8Array.of(0x0a, 0x05, 0x61)));
    const { headers } = await call.end();
    expect(headers["grpc-status"]).toBe(String(Code.InvalidArgument));
    expect(decodeURIComponent(String(headers["grpc-message"]))).toContain(
      "snakepit.bridge.WatchVariablesRequest",
    );
  });

  it("refuses a request over --max-request-bytes, plain or once decompressed, naming the flag", async () => {
    const b = await bridge({ maxRequestBytes: 1024 });
    const sessionId = await newSession(b);
    const big = create(WatchVariablesRequestSchema, {
      sessionId,
      variableIdentifiers: Array.from({ length: 200 }, (_, i) => `name-${i}`),
    });
    const plain = await rawGrpc(b.url, envelope(toBinary(WatchVariablesRequestSchema, big))).end();
    const zipped = await rawGrpc(
      b.url,
      envelope(gzipSync(toBinary(WatchVariablesRequestSchema, big)), 1),
      { "grpc-encoding": "gzip" },
    ).end();
    for (const { headers } of [plain, zipped]) {
      expect(headers["grpc-status"]).toBe(String(Code.ResourceExhausted));
      expect(decodeURIComponent(String(headers["grpc-message"]))).toContain(
        "the limit is 1024 bytes (--max-request-bytes)",
      );
    }
    expect(decodeURIComponent(String(zipped.headers["grpc-message"]))).toContain("decompressed");
    expect(await watchers(b)).toBe(0);
  });

  it("ends the stream with DEADLINE_EXCEEDED when grpc-timeout passes, and drops the watcher", async () => {
    const b = await bridge();
    const sessionId = await newSession(b);
    const call = rawGrpc(b.url, watchBody({ sessionId }), { "grpc-timeout": "300m" });
    const { trailers } = await call.end();
    expect(trailers["grpc-status"]).toBe(String(Code.DeadlineExceeded));
    expect(await watchers(b)).toBe(0);
  });

  it("a reset stream unsubscribes at once", async () => {
    const b = await bridge();
    const sessionId = await newSession(b);
    const call = rawGrpc(b.url, watchBody({ sessionId }));
    await vi.waitFor(async () => expect(await watchers(b)).toBe(1));
    call.stream.close(http2.constants.NGHTTP2_CANCEL);
    await vi.waitFor(async () => expect(await watchers(b)).toBe(0));
    call.session.destroy();
  });

  it("accepts a gzip-compressed request message", async () => {
    const b = await bridge();
    const sessionId = await newSession(b);
    const c = createClient(
      BridgeService,
      createGrpcTransport({
        baseUrl: b.url,
        sendCompression: compressionGzip,
        compressMinBytes: 1,
      }),
    );
    const it = c.watchVariables({ sessionId, syncMarker: true })[Symbol.asyncIterator]();
    expect((await it.next()).value?.updateType).toBe("sync");
    await it.return?.();
  });

  it("a connect-node client's own deadline ends the watch with DEADLINE_EXCEEDED", async () => {
    const b = await bridge();
    const sessionId = await newSession(b);
    const error = await (async () => {
      try {
        for await (const _ of b.client("grpc").watchVariables({ sessionId }, { timeoutMs: 200 })) {
          // Nothing is written: the deadline ends it.
        }
      } catch (e) {
        return e as ConnectError;
      }
      return undefined;
    })();
    expect(error?.code).toBe(Code.DeadlineExceeded);
    await vi.waitFor(async () => expect(await watchers(b)).toBe(0));
  });
});

describe("gRPC-Web on the fan-out path", () => {
  it("frames messages and ends with a trailer frame", async () => {
    const b = await bridge();
    const sessionId = await newSession(b, ["x", "y"]);
    const res = await rawGrpcWeb(
      b.port,
      watchBody({ sessionId, includeInitialValues: true, syncMarker: true }),
      { "grpc-timeout": "200m" },
    );
    expect(res.status).toBe(200);
    expect(res.headers["content-type"]).toBe("application/grpc-web+proto");
    const frames = framesOf(res.body);
    expect(frames.map((f) => f.flags)).toEqual([0, 0, 0, 0x80]);
    expect(
      frames.slice(0, 3).map((f) => fromBinary(VariableUpdateSchema, f.data).updateType),
    ).toEqual(["initial_value", "initial_value", "sync"]);
    const trailer = Buffer.from(frames[3]?.data ?? []).toString("latin1");
    expect(trailer).toMatch(new RegExp(`^grpc-status: ${Code.DeadlineExceeded}\\r\\n`, "m"));
    expect(trailer).toMatch(/^grpc-message: .+\r\n/m);
  });

  it("answers a refused call in the headers", async () => {
    const b = await bridge();
    const res = await rawGrpcWeb(b.port, watchBody({ sessionId: "no-such-session-0000" }));
    expect(res.headers["grpc-status"]).toBe(String(Code.NotFound));
    expect(decodeURIComponent(String(res.headers["grpc-message"]))).toContain("Session not found");
  });

  it("a closed connection unsubscribes at once", async () => {
    const b = await bridge();
    const sessionId = await newSession(b);
    const req = http.request({
      host: "127.0.0.1",
      port: b.port,
      method: "POST",
      path,
      headers: { "content-type": "application/grpc-web+proto" },
    });
    req.on("error", () => undefined);
    req.end(watchBody({ sessionId }));
    await vi.waitFor(async () => expect(await watchers(b)).toBe(1));
    req.destroy();
    await vi.waitFor(async () => expect(await watchers(b)).toBe(0));
  });
});

describe("keepalive", () => {
  it.each(["grpc", "grpc-web", "connect"] as const)(
    "an idle stream carries keepalive updates over %s, without a variable",
    async (protocol) => {
      const b = await bridge({ watchKeepaliveMs: 100 });
      const sessionId = await newSession(b);
      const abort = new AbortController();
      const seen: VariableUpdate[] = [];
      const stream = b.client(protocol).watchVariables({ sessionId }, { signal: abort.signal });
      const reading = (async () => {
        for await (const u of stream) {
          seen.push(u);
          if (seen.length === 3) break;
        }
      })();
      await reading;
      expect(seen.map((u) => u.updateType)).toEqual(["keepalive", "keepalive", "keepalive"]);
      expect(seen.every((u) => u.variable === undefined)).toBe(true);
    },
  );

  it("a SessionContext ignores them and stays live", async () => {
    const b = await bridge({ watchKeepaliveMs: 50 });
    const sessionId = await newSession(b);
    const ctx = await createSessionContext({ transport: b.transport("grpc-web"), sessionId });
    let reconnects = 0;
    ctx.on("reconnecting", () => reconnects++);
    try {
      expect(await ctx.get("x")).toBe(0);
      await vi.waitFor(() => expect(ctx.cache.live).toBe(true));
      // Several keepalive intervals pass: a second stream of the session,
      // swept with the context's, has seen several keepalives.
      const probe = new AbortController();
      let keepalives = 0;
      const probing = (async () => {
        const watch = b.client().watchVariables({ sessionId }, { signal: probe.signal });
        for await (const u of watch) if (u.updateType === "keepalive") keepalives++;
      })().catch(() => undefined); // ended by its abort below
      await vi.waitFor(() => expect(keepalives).toBeGreaterThanOrEqual(4));
      probe.abort();
      await probing;
      await b.client().setVariable({ sessionId, variableIdentifier: "x", value: int(7) });
      await vi.waitFor(() => expect(ctx.peek("x")?.snapshot.value).toBe(7));
      expect(ctx.cache.live).toBe(true);
      expect(reconnects).toBe(0);
    } finally {
      await ctx.close();
    }
  });
});

describe("delivery", () => {
  it("every stream gets every update in order, over all protocols and past one fan-out slice", async () => {
    const b = await bridge({ maxWatchersPerSession: 2000 });
    const sessionId = await newSession(b);
    const abort = new AbortController();
    const writes = 20;
    const clients = [
      ...Array.from({ length: 2 }, () =>
        createClient(BridgeService, createGrpcTransport({ baseUrl: b.url })),
      ),
      b.client("grpc-web"),
      b.client("connect"),
    ];
    // 150 streams on each of two gRPC connections, 20 each on the others: 340.
    const counts = [150, 150, 20, 20];
    const got: number[][] = [];
    const ready: Promise<void>[] = [];
    clients.forEach((c, i) => {
      for (let k = 0; k < (counts[i] as number); k++) {
        const versions: number[] = [];
        got.push(versions);
        const it = c
          .watchVariables(
            { sessionId, variableIdentifiers: ["x"], syncMarker: true },
            { signal: abort.signal },
          )
          [Symbol.asyncIterator]();
        ready.push(
          (async () => {
            const first = await it.next();
            expect(first.value?.updateType).toBe("sync");
          })(),
        );
        void (async () => {
          await ready.at(-1);
          for (;;) {
            const next = await it.next().catch(() => ({ done: true as const, value: undefined }));
            if (next.done) return;
            if (next.value.updateType === "value_changed")
              versions.push(next.value.variable?.version ?? -1);
          }
        })();
      }
    });
    await Promise.all(ready);
    for (let v = 1; v <= writes; v++) {
      await b.client("grpc").setVariable({ sessionId, variableIdentifier: "x", value: int(v) });
    }
    const all = Array.from({ length: writes }, (_, i) => i + 1);
    await vi.waitFor(
      () => expect(got.filter((g) => g.length === writes)).toHaveLength(got.length),
      {
        timeout: 15_000,
      },
    );
    for (const versions of got) expect(versions).toEqual(all);
    abort.abort();
  });
});
