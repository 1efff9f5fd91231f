/**
 * Hostile callers against reply sizes, on a real server over real sockets:
 * a tiny request must not buy a huge reply, a listing must reach a client
 * that only accepts 4 MiB (Python grpcio's default), and one client cannot
 * make the server hold replies without bound by not reading them.
 */

import http2 from "node:http2";
import net from "node:net";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { describe, expect, it } from "vitest";
import { createSessionContext } from "../../src/client/index.js";
import {
  BatchGetVariablesRequestSchema,
  BridgeService,
  InitializeSessionRequestSchema,
  InitializeSessionResponseSchema,
  ListVariablesRequestSchema,
  ListVariablesResponseSchema,
  type RegisterToolsRequest,
  RegisterToolsRequestSchema,
} from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { encodeValue } from "../../src/values/index.js";
import { bridgePerTest, type RunningBridge } from "../support/bridge.js";
import { rejectionOf } from "../support/errors.js";
import { envelope, rawCall } from "../support/raw-rpc.js";
import { until } from "../support/wait.js";

const bridge = bridgePerTest();
const KiB = 1024;
const MiB = 1024 * KiB;
/** What a default Python grpcio client accepts. */
const GRPCIO_RECEIVE_LIMIT = 4 * MiB;

/**
 * Fills a session close to the default --max-session-bytes (16 MiB): 15
 * string variables of 1,000 KiB each, one call apiece (requests stay under
 * --max-request-bytes).
 */
async function fullSession(b: RunningBridge): Promise<{ sessionId: string; names: string[] }> {
  const c = b.client("grpc");
  const { sessionId } = await c.initializeSession({});
  const names: string[] = [];
  for (let i = 0; i < 15; i++) {
    const name = `big_${String(i).padStart(2, "0")}`;
    await c.registerVariable({
      sessionId,
      name,
      type: "string",
      initialValue: encodeValue("string", String(i % 10).repeat(1000 * KiB)).any,
    });
    names.push(name);
  }
  return { sessionId, names };
}

/** Raw gRPC ListVariables as a peer that knows no extension sends it: the wire reply. */
async function rawList(b: RunningBridge, request: Parameters<typeof listRequest>[0]) {
  const out = await rawCall(
    b.url,
    "grpc",
    BridgeService.method.listVariables,
    envelope(toBinary(ListVariablesRequestSchema, listRequest(request))),
    { timeoutMs: 30_000 },
  );
  expect(out.code, out.message).toBeUndefined();
  const data = out.envelopes[0]?.data ?? new Uint8Array(0);
  return { bytes: data.length, reply: fromBinary(ListVariablesResponseSchema, data) };
}

function listRequest(init: { sessionId: string; pageToken?: string; pageSize?: number }) {
  return create(ListVariablesRequestSchema, { pattern: "*", ...init });
}

describe("a tiny request for a whole session", () => {
  it("a 26-byte InitializeSession reopening a full session gets a small reply, and says where the rest is", async () => {
    const b = await bridge();
    const { sessionId, names } = await fullSession(b);
    const request = toBinary(
      InitializeSessionRequestSchema,
      create(InitializeSessionRequestSchema, { sessionId }),
    );
    expect(request.length).toBe(26);
    const started = performance.now();
    const out = await rawCall(
      b.url,
      "grpc",
      BridgeService.method.initializeSession,
      envelope(request),
      {
        timeoutMs: 30_000,
      },
    );
    const elapsed = performance.now() - started;
    expect(out.code, out.message).toBeUndefined();
    const data = out.envelopes[0]?.data ?? new Uint8Array(0);
    console.info(
      `reopen of a ${names.length}-variable session: ${data.length} bytes in ${elapsed.toFixed(0)} ms`,
    );
    // Before: 14.6 MiB, every variable inlined. Now a bounded first page
    // (64 KiB of variables; each of these is larger, so none).
    expect(data.length).toBeLessThan(128 * KiB);
    const reply = fromBinary(InitializeSessionResponseSchema, data);
    expect(reply).toMatchObject({ success: true, created: false, sessionId });
    expect(Object.keys(reply.initialVariables)).toEqual([]);
    expect(reply.initialVariablesNextPageToken).not.toBe("");
    expect(reply.availableToolsNextPageToken).toBe("");
    expect(Object.keys(reply.availableTools)).toContain("conversation_append");

    // The token continues with ListVariables: every variable, once.
    const rest: string[] = [];
    let token = reply.initialVariablesNextPageToken;
    while (token !== "") {
      const page = await rawList(b, { sessionId, pageToken: token });
      rest.push(...page.reply.variables.map((v) => v.name));
      token = page.reply.nextPageToken;
    }
    expect(rest).toEqual(names);
  });

  it("ListVariables('*') comes in pages a 4 MiB client can read; a peer that knows no pages gets the first one and a marker", async () => {
    const b = await bridge();
    const { sessionId, names } = await fullSession(b);
    // A stock snakepit client: no page fields at all.
    const first = await rawList(b, { sessionId });
    console.info(`ListVariables('*') of a full session, first page: ${first.bytes} bytes`);
    // Before: 14.6 MiB in one reply, over what grpcio accepts by default.
    expect(first.bytes).toBeLessThanOrEqual(2 * MiB);
    expect(first.reply.variables.length).toBeGreaterThan(0);
    expect(first.reply.nextPageToken).not.toBe("");

    const seen: string[] = [];
    let token = "";
    let pages = 0;
    do {
      const page = await rawList(b, { sessionId, pageToken: token });
      expect(page.bytes).toBeLessThanOrEqual(2 * MiB);
      seen.push(...page.reply.variables.map((v) => v.name));
      token = page.reply.nextPageToken;
      pages++;
    } while (token !== "" && pages < 50);
    expect(seen).toEqual(names);
    expect(pages).toBeGreaterThanOrEqual(8);

    // page_size bounds the count too; a token nobody issued is refused.
    const two = await rawList(b, { sessionId, pageSize: 2 });
    expect(two.reply.variables.map((v) => v.name)).toEqual(names.slice(0, 2));
    const c = b.client("grpc");
    const bad = await rejectionOf(
      c.listVariables({ sessionId, pageToken: "not-a-token" }),
      Code.InvalidArgument,
    );
    expect(bad.rawMessage).toContain("page_token");
    await rejectionOf(c.listVariables({ sessionId, pageSize: -1 }), Code.InvalidArgument);
  });
});

describe("the TypeScript client", () => {
  it("follows page tokens: list('*') of a full session returns every variable, and listTools every tool", async () => {
    const b = await bridge();
    const { sessionId, names } = await fullSession(b);
    const w = b.workerClient();
    for (let from = 0; from < 300; from += 200) {
      await w.registerTools(bulkyTools(from, Math.min(200, 300 - from)));
    }
    const ctx = await createSessionContext({
      transport: createGrpcTransport({ baseUrl: b.url, readMaxBytes: GRPCIO_RECEIVE_LIMIT }),
      sessionId,
    });
    try {
      const listed = await ctx.list("*");
      expect(listed.map((v) => v.name)).toEqual(names);
      expect(listed[3]?.value).toBe("3".repeat(1000 * KiB));
      const tools = await ctx.listTools();
      expect(tools).toHaveLength(300 + 4);
      expect(tools.at(-1)?.name).toBe("tool_0299");
    } finally {
      await ctx.close();
    }
  });
});

/** A worker registration of `count` tools of about 15 KiB each (under --max-tool-bytes). */
function bulkyTools(from: number, count: number): RegisterToolsRequest {
  return create(RegisterToolsRequestSchema, {
    workerId: "bulky-worker",
    tools: Array.from({ length: count }, (_, i) => ({
      name: `tool_${String(from + i).padStart(4, "0")}`,
      description: "d".repeat(15 * KiB),
      metadata: { worker_address: "127.0.0.1:50100" },
    })),
  });
}

describe("a full tool registry", () => {
  it("is listed, page by page, by a client that accepts only 4 MiB per reply", async () => {
    const b = await bridge();
    const w = b.workerClient();
    // The default --max-tools (1,024), in requests under --max-request-bytes.
    for (let from = 0; from < 1024; from += 200) {
      await w.registerTools(bulkyTools(from, Math.min(200, 1024 - from)));
    }
    const small = createClient(
      BridgeService,
      createGrpcTransport({ baseUrl: b.url, readMaxBytes: GRPCIO_RECEIVE_LIMIT }),
    );
    const init = await small.initializeSession({});
    expect(init.availableToolsNextPageToken).not.toBe("");

    const names: string[] = [];
    let token = "";
    let pages = 0;
    do {
      const page = await small.getExposedElixirTools({
        sessionId: init.sessionId,
        pageToken: token,
      });
      names.push(...page.tools.map((t) => t.name));
      token = page.nextPageToken;
      pages++;
    } while (token !== "" && pages < 50);
    console.info(`1,028 tools (about 15.3 MiB) listed in ${pages} pages`);
    expect(names).toHaveLength(1024 + 4);
    expect(new Set(names).size).toBe(names.length);
    expect(names).toContain("tool_1023");
    expect(names).toContain("conversation_append");
    // InitializeSession's own token continues the same listing.
    const rest = await small.getExposedElixirTools({
      sessionId: init.sessionId,
      pageToken: init.availableToolsNextPageToken,
    });
    expect(rest.tools.length).toBeGreaterThan(0);
    expect(Object.keys(init.availableTools)).not.toContain(rest.tools[0]?.name);
  });
});

/**
 * ListVariables calls over HTTP/2 connections that never let the server
 * send a byte of DATA (flow-control window 0): every reply is built and
 * then waits. A few calls per connection, as a client would spread them to
 * stay under Node's per-connection memory limit (which refuses further
 * streams of one connection, never of several). `answered` counts the
 * calls whose response headers came: those were served or refused (the
 * headers of either are not held by flow control).
 */
function stalledLists(
  b: RunningBridge,
  sessionId: string,
  connections: number,
  perConnection: number,
): { answered(): number; close(): void } {
  const sessions: http2.ClientHttp2Session[] = [];
  let answered = 0;
  const body = envelope(toBinary(ListVariablesRequestSchema, listRequest({ sessionId })));
  for (let c = 0; c < connections; c++) {
    const session = http2.connect(b.url, { settings: { initialWindowSize: 0 } });
    session.on("error", () => {});
    sessions.push(session);
    for (let i = 0; i < perConnection; i++) {
      const stream = session.request({
        ":method": "POST",
        ":path": "/snakepit.bridge.BridgeService/ListVariables",
        "content-type": "application/grpc+proto",
        te: "trailers",
      });
      stream.on("error", () => {});
      stream.on("response", () => answered++);
      stream.end(body);
    }
  }
  return {
    answered: () => answered,
    close() {
      for (const s of sessions) s.destroy();
    },
  };
}

describe("replies a client does not read", () => {
  it("are bounded per client: beyond 2 × --max-reply-bytes in flight, RESOURCE_EXHAUSTED; other clients are served", async () => {
    const b = await bridge();
    const { sessionId } = await fullSession(b);
    const c = b.client("grpc");
    const list = () => c.listVariables({ sessionId, pattern: "*" });
    // 24 pages of about 2 MiB each: 48 MiB, over the 32 MiB a client may have in flight.
    const stalled = stalledLists(b, sessionId, 8, 3);
    try {
      await until(() => stalled.answered() === 24, "every stalled call to be answered");
      // The same client (same address), on a connection it does read, is
      // refused while its other replies sit unread...
      let refusal: unknown;
      await until(async () => {
        refusal = await list().then(
          () => undefined,
          (e: unknown) => e,
        );
        return refusal !== undefined;
      }, "the client's calls to be refused");
      const e = await rejectionOf(Promise.reject(refusal), Code.ResourceExhausted);
      expect(e.rawMessage).toContain("--max-reply-bytes");
      expect(e.rawMessage).toContain("in flight per client");
      // ...while another client (another address) is served.
      const other = createClient(
        BridgeService,
        createGrpcTransport({
          baseUrl: b.url,
          nodeOptions: {
            // Another client: the server tells clients apart by address.
            createConnection: (url: URL) =>
              net.connect({
                host: url.hostname,
                port: Number(url.port),
                localAddress: "127.0.0.2",
              }),
          },
        }),
      );
      const page = await other.listVariables({ sessionId, pattern: "*" });
      expect(page.variables.length).toBeGreaterThan(0);
    } finally {
      stalled.close();
    }
    // Once the stalled calls are gone, so is what they held.
    await until(
      async () => (await list().catch(() => undefined)) !== undefined,
      "the budget to be released",
    );
  });
});

describe("replies a Connect client over HTTP/1.1 does not read", () => {
  it("count against the client's budget until they have left, not only until they were built", async () => {
    const b = await bridge();
    const { sessionId, names } = await fullSession(b);
    const body = toBinary(
      BatchGetVariablesRequestSchema,
      create(BatchGetVariablesRequestSchema, { sessionId, variableIdentifiers: names }),
    );
    // Each socket sends one GetVariables of the whole session (15 MiB) and
    // never reads: its reply fills the kernel's buffers and the rest waits
    // in the server. (connect ends a unary call's handler context as soon
    // as the reply is built, so a budget kept until then held nothing.)
    const sockets: net.Socket[] = [];
    const stall = () => {
      const socket = net.connect(b.port, "127.0.0.1");
      socket.on("error", () => {});
      socket.pause();
      socket.write(
        Buffer.concat([
          Buffer.from(
            `POST /snakepit.bridge.BridgeService/GetVariables HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/proto\r\nContent-Length: ${body.length}\r\n\r\n`,
            "latin1",
          ),
          body,
        ]),
      );
      sockets.push(socket);
    };
    try {
      for (let i = 0; i < 3; i++) stall();
      const c = b.client("connect");
      let refusal: unknown;
      await until(async () => {
        refusal = await c.getVariables({ sessionId, variableIdentifiers: names }).then(
          () => undefined,
          (e: unknown) => e,
        );
        return refusal !== undefined;
      }, "the client's next large read to be refused");
      const e = await rejectionOf(Promise.reject(refusal), Code.ResourceExhausted);
      expect(e.rawMessage).toContain("in flight per client");
    } finally {
      for (const s of sockets) s.destroy();
    }
    // Gone with the sockets: the same read is served again.
    const c = b.client("connect");
    await until(
      async () =>
        (await c.getVariables({ sessionId, variableIdentifiers: names }).catch(() => undefined)) !==
        undefined,
      "the budget to be released",
    );
  });
});
