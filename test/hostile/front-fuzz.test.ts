/**
 * No request head may take the bridge down or stall it. fast-check builds
 * request heads (method, path, Host / :authority, content type, `te`,
 * encodings, timeouts, duplicated and empty headers, and a body to match)
 * and sends each to a real `unified-bridge serve` process, on its public,
 * worker and admin listeners, over HTTP/1.0, HTTP/1.1 and HTTP/2. Each
 * request must get an answer (a status, or an HTTP/2 reset) within a few
 * seconds, never INTERNAL (a 500 or grpc-status 13: every request here is
 * the caller's doing), and after every run the server answers Ping.
 *
 * Before the front caught what a request handler throws, `Host: [` alone
 * ended the process: connect-node built the request URL with `new URL`.
 */
import http2 from "node:http2";
import net from "node:net";
import { create, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import fc from "fast-check";
import { afterEach, describe, expect, it } from "vitest";
import { BridgeService, PingRequestSchema } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { decodeJsonAny, encodeJsonAny } from "../../src/values/index.js";
import { startBridge } from "../support/bridge.js";
import { cliSuite, freePorts, type ServedCli } from "../support/cli.js";
import {
  connectRaw,
  FrameFlag,
  FrameType,
  frame,
  h2Preface,
  headerBlock,
  settingsFrame,
} from "../support/h2-frames.js";
import { envelope } from "../support/raw-rpc.js";

const cli = cliSuite();
let served: ServedCli;
let ports: { public: number; worker: number; admin: number };

/**
 * Starts the server for one test (the CLI suite kills what a test started
 * once it ends); afterwards, what it printed on stderr is the diagnosis.
 */
async function serve(): Promise<void> {
  served = await cli.serve([...freePorts, "--log-level", "error"]);
  const portOf = (url: string) => Number(new URL(url).port);
  ports = {
    public: portOf(served.url),
    worker: portOf(served.workerUrl),
    admin: portOf(served.adminUrl),
  };
}

afterEach(() => {
  if (served !== undefined && served.stderr() !== "") console.error(served.stderr());
});

/** A long answer to one request is a stall: everything here is answered at once. */
const answerWithinMs = 8000;

const service = "/snakepit.bridge.BridgeService";
const paths = [
  `${service}/Ping`,
  `${service}/GetVariable`,
  `${service}/SetVariable`,
  `${service}/InitializeSession`,
  `${service}/WatchVariables`,
  `${service}/ExecuteStreamingTool`,
  `${service}/RegisterTools`,
  "/grpc.health.v1.Health/Check",
  "/grpc.health.v1.Health/Watch",
  "/healthz",
  "/metrics",
  "/",
  "*",
  "//x",
  `${service}/Ping?encoding=proto&message=%zz`,
  `${service}/Ping?encoding=json&message={}&connect=v1`,
  `${service}/Ping/../Ping`,
  "/%zz",
  `${service}/Nope`,
];

const authorities = [
  "[",
  "]",
  "::1:80",
  "[::1]:80",
  "a:b:c",
  "%zz",
  "%41",
  "",
  " ",
  "localhost",
  "127.0.0.1:50051",
  "example.com:99999",
  "a b",
  "a/b",
  "a@b",
  "a?b",
  "a#b",
  "\u00ff",
  "x".repeat(300),
];

const contentTypes = [
  "application/proto",
  "application/json",
  "application/grpc",
  "application/grpc+proto",
  "application/grpc+json",
  "application/grpc-web",
  "application/grpc-web+proto",
  "application/grpc-web-text",
  "application/grpc-web-text+proto",
  "application/connect+proto",
  "application/connect+json",
  "application/json; charset=utf-8",
  "APPLICATION/GRPC",
  "text/plain",
  "",
  ";",
  "application/grpc; x",
];

const optional = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { nil: undefined });
/** Header values a client may send: visible Latin-1 and spaces, no line breaks. */
const headerText = fc.stringMatching(/^[\x20-\x7e\xa0-\xff]{0,40}$/);

/** Extra headers, each possibly twice or empty. */
const extraHeaders = fc.array(
  fc.tuple(
    fc.constantFrom(
      "te",
      "grpc-encoding",
      "grpc-accept-encoding",
      "content-encoding",
      "accept-encoding",
      "connect-content-encoding",
      "connect-accept-encoding",
      "connect-protocol-version",
      "grpc-timeout",
      "connect-timeout-ms",
      "x-grpc-web",
      "origin",
      "authorization",
      "x-forwarded-for",
      "content-type",
      "grpc-message-type",
      "user-agent",
      "expect",
      "access-control-request-method",
    ),
    fc.oneof(
      headerText,
      fc.constantFrom(
        "trailers",
        "gzip",
        "br",
        "identity",
        "deflate, gzip;q=0",
        "1n",
        "0S",
        "99999999H",
        "-1",
        "1e309",
        "Bearer ",
        "Bearer x",
        "1",
        "",
        "100-continue",
        "POST",
      ),
    ),
  ),
  { maxLength: 6 },
);

const ping = toBinary(BridgeService.method.ping.input, create(PingRequestSchema, { message: "x" }));
const bodies = fc.oneof(
  fc.constant(new Uint8Array(0)),
  fc.constant(ping),
  fc.constant(envelope(ping)),
  fc.constant(envelope(ping, 1)),
  fc.constant(envelope(ping).subarray(0, 7)),
  fc.constant(new TextEncoder().encode("{}")),
  fc.constant(new TextEncoder().encode('{"message":"x"}')),
  fc.uint8Array({ maxLength: 64 }),
);

const heads = fc.record({
  listener: fc.constantFrom("public", "worker", "admin") as fc.Arbitrary<
    "public" | "worker" | "admin"
  >,
  method: fc.constantFrom("POST", "GET", "PUT", "OPTIONS", "HEAD", "DELETE", "PATCH"),
  path: fc.constantFrom(...paths),
  authority: optional(fc.oneof(fc.constantFrom(...authorities), headerText)),
  contentType: optional(fc.constantFrom(...contentTypes)),
  headers: extraHeaders,
  body: bodies,
});
type Head = typeof heads extends fc.Arbitrary<infer T> ? T : never;

/** What came back: an HTTP status with its headers, or an HTTP/2 reset. */
interface Answer {
  readonly status?: number | undefined;
  readonly grpcStatus?: string | undefined;
  readonly reset?: boolean;
  readonly contentType?: string | undefined;
}

function describeHead(head: Head, version: string): string {
  const shown = { ...head, body: Buffer.from(head.body).toString("hex") };
  return `${version} ${JSON.stringify(shown)}`;
}

/** Sends `head` over HTTP/1.0 or 1.1 on a raw socket; resolves with the parsed answer. */
function sendHttp1(head: Head, minor: 0 | 1): Promise<Answer> {
  const lines = [`${head.method} ${head.path} HTTP/1.${minor}`];
  if (head.authority !== undefined) lines.push(`Host: ${head.authority}`);
  else if (minor === 1) lines.push("Host: localhost");
  if (head.contentType !== undefined) lines.push(`Content-Type: ${head.contentType}`);
  for (const [name, value] of head.headers) lines.push(`${name}: ${value}`);
  lines.push(`Content-Length: ${head.body.length}`, "Connection: close", "", "");
  const request = Buffer.concat([Buffer.from(lines.join("\r\n"), "latin1"), head.body]);
  return new Promise((resolve, reject) => {
    const socket = net.connect(ports[head.listener], "127.0.0.1");
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer within ${answerWithinMs} ms`));
    }, answerWithinMs);
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    // A reset after the answer was written is the server closing; judged below.
    socket.on("error", () => {});
    socket.on("close", () => {
      clearTimeout(timer);
      const text = Buffer.concat(chunks).toString("latin1");
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      if (status === null) {
        reject(
          new Error(
            `the connection closed without an answer: ${JSON.stringify(text.slice(0, 200))}`,
          ),
        );
        return;
      }
      const headerEnd = text.indexOf("\r\n\r\n");
      const grpc = /^grpc-status: *(\d+)/im.exec(
        text.slice(0, headerEnd === -1 ? undefined : headerEnd),
      );
      // gRPC-Web may carry the status in a trailer frame in the body.
      const trailer = /grpc-status: *(\d+)/i.exec(text.slice(headerEnd));
      const type = /^content-type: *([^\r]*)/im.exec(
        text.slice(0, headerEnd === -1 ? undefined : headerEnd),
      );
      resolve({
        status: Number(status[1]),
        grpcStatus: grpc?.[1] ?? trailer?.[1],
        contentType: type?.[1],
      });
    });
    socket.end(request);
  });
}

/** Sends `head` with node:http2's client; undefined when the client itself refuses the head. */
async function sendHttp2(head: Head): Promise<Answer | undefined> {
  const session = http2.connect(`http://127.0.0.1:${ports[head.listener]}`);
  session.on("error", () => {});
  try {
    const headers: Record<string, string | string[]> = {
      ":method": head.method,
      ":path": head.path,
    };
    if (head.authority !== undefined) headers[":authority"] = head.authority;
    if (head.contentType !== undefined) headers["content-type"] = head.contentType;
    for (const [name, value] of head.headers) {
      const had = headers[name];
      headers[name] =
        had === undefined ? value : [...(Array.isArray(had) ? had : [String(had)]), value];
    }
    let stream: http2.ClientHttp2Stream;
    try {
      stream = session.request(headers, { endStream: head.body.length === 0 });
    } catch {
      return undefined;
    }
    return await new Promise<Answer>((resolve, reject) => {
      let answer: Answer = {};
      const timer = setTimeout(() => {
        stream.close();
        reject(new Error(`no answer within ${answerWithinMs} ms`));
      }, answerWithinMs);
      stream.on("response", (h) => {
        answer = {
          status: Number(h[":status"]),
          grpcStatus: h["grpc-status"] as string | undefined,
        };
      });
      stream.on("trailers", (t) => {
        if (t["grpc-status"] !== undefined)
          answer = { ...answer, grpcStatus: t["grpc-status"] as string };
      });
      stream.on("data", (chunk: Buffer) => {
        const trailer = /grpc-status: *(\d+)/i.exec(chunk.toString("latin1"));
        if (trailer !== null && answer.grpcStatus === undefined)
          answer = { ...answer, grpcStatus: trailer[1] };
      });
      stream.on("error", () => {});
      stream.on("close", () => {
        clearTimeout(timer);
        if (answer.status === undefined) {
          if (stream.rstCode !== undefined && stream.rstCode !== 0) {
            resolve({ reset: true });
            return;
          }
          reject(new Error(`the stream closed without an answer (rst ${stream.rstCode})`));
          return;
        }
        resolve(answer);
      });
      if (head.body.length > 0) stream.end(head.body);
    });
  } finally {
    session.destroy();
  }
}

/** A Ping over gRPC on a connection of its own: the server is alive and serving. */
async function pingWorks(): Promise<void> {
  const client = createClient(BridgeService, createGrpcTransport({ baseUrl: served.url }));
  const reply = await client.ping({ message: "alive?" }, { timeoutMs: 3000 });
  expect(reply.message).toContain("alive?");
}

function judge(answer: Answer | undefined, what: string): void {
  if (answer === undefined || answer.reset === true) return;
  expect(answer.status, `${what}: HTTP 500`).not.toBe(500);
  expect(answer.grpcStatus, `${what}: grpc-status INTERNAL`).not.toBe("13");
}

describe("every request head is answered, and the server goes on serving", () => {
  for (const version of ["HTTP/1.0", "HTTP/1.1", "HTTP/2"] as const) {
    it(`over ${version}`, async () => {
      await serve();
      await fc.assert(
        fc.asyncProperty(heads, async (head) => {
          const what = describeHead(head, version);
          const answer =
            version === "HTTP/2"
              ? await sendHttp2(head)
              : await sendHttp1(head, version === "HTTP/1.0" ? 0 : 1);
          judge(answer, what);
          await pingWorks();
        }),
        { numRuns: 250, interruptAfterTimeLimit: 60_000 },
      );
      expect(served.child.exitCode).toBeNull();
      // Nothing escaped to the process's own error output (warnings included).
      expect(served.stderr()).toBe("");
    }, 120_000);
  }

  it("over raw HTTP/2 frames: duplicated, missing and empty pseudo-headers and headers", async () => {
    await serve();
    // Each pseudo-header absent, once or twice (nghttp2 refuses some of
    // these itself; the rest reach the bridge), then regular headers.
    const values = fc.oneof(
      fc.constantFrom(...authorities),
      fc.constantFrom("POST", "GET", "http", `${service}/Ping`, "/healthz", ""),
    );
    // Mostly once with a value that passes HTTP/2's own checks, so that
    // most requests reach the bridge; now and then missing or twice.
    const field = (name: string, usual: fc.Arbitrary<string>, odd: fc.Arbitrary<string>) =>
      fc.oneof(
        { weight: 6, arbitrary: usual.map((v): [string, string][] => [[name, v]]) },
        { weight: 1, arbitrary: fc.constant<[string, string][]>([]) },
        {
          weight: 1,
          arbitrary: fc
            .tuple(fc.oneof(usual, odd), fc.oneof(usual, odd))
            .map(([a, b]): [string, string][] => [
              [name, a],
              [name, b],
            ]),
        },
      );
    const block = fc
      .tuple(
        field(":method", fc.constantFrom("POST", "GET"), values),
        field(":scheme", fc.constant("http"), values),
        field(":path", fc.constantFrom(...paths), values),
        field(":authority", fc.constantFrom(...authorities), values),
        fc.oneof(
          fc.constant<[string, string][]>([]),
          field("host", fc.constantFrom(...authorities), values),
        ),
        field("content-type", fc.constantFrom(...contentTypes), values),
        fc.constantFrom<[string, string][]>([], [["te", "trailers"]], [["te", ""]]),
      )
      .map((groups) => groups.flat());
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom("public", "worker", "admin") as fc.Arbitrary<"public" | "worker" | "admin">,
        block,
        fc.boolean(),
        async (listener, fields, withBody) => {
          const conn = await connectRaw(ports[listener]);
          try {
            const block = headerBlock(fields);
            conn.socket.write(
              Buffer.concat([
                h2Preface,
                settingsFrame(),
                frame(
                  FrameType.headers,
                  FrameFlag.endHeaders | (withBody ? 0 : FrameFlag.endStream),
                  1,
                  block,
                ),
                ...(withBody
                  ? [frame(FrameType.data, FrameFlag.endStream, 1, envelope(ping))]
                  : []),
              ]),
            );
            // An answer on stream 1 (HEADERS or RST_STREAM), or the whole
            // connection refused (GOAWAY), within the time limit.
            await conn.next(
              (f) =>
                (f.streamId === 1 &&
                  (f.type === FrameType.headers || f.type === FrameType.rstStream)) ||
                f.type === FrameType.goaway,
              answerWithinMs,
            );
          } finally {
            conn.socket.destroy();
          }
          await pingWorks();
        },
      ),
      { numRuns: 150, interruptAfterTimeLimit: 60_000 },
    );
    expect(served.child.exitCode).toBeNull();
    // Nothing escaped to the process's own error output (warnings included).
    expect(served.stderr()).toBe("");
  }, 120_000);

  it("the request that ended the process is answered INVALID_ARGUMENT on every listener", async () => {
    await serve();
    for (const listener of ["public", "worker", "admin"] as const) {
      const head: Head = {
        listener,
        method: "POST",
        path: listener === "admin" ? "/grpc.health.v1.Health/Check" : `${service}/Ping`,
        authority: "[",
        contentType: "application/proto",
        headers: [],
        body: new Uint8Array(0),
      };
      const answer = await sendHttp1(head, 1);
      expect(answer.status).toBe(400);
      // gRPC-Web's text mode is answered in text mode.
      const text = await sendHttp1({ ...head, contentType: "application/grpc-web-text" }, 1);
      expect([text.grpcStatus, text.contentType]).toEqual(["3", "application/grpc-web-text+proto"]);
      const h2 = await sendHttp2({ ...head, authority: "a:b:c", contentType: "application/grpc" });
      expect(h2?.grpcStatus).toBe("3");
      // What Node's own HTTP/2 client sends for an IPv6 peer (one bridge
      // forwarding a tool call to another at [::1]:port) is served.
      const node = await sendHttp2({
        ...head,
        authority: "::1:50051",
        contentType: "application/grpc",
        body: envelope(listener === "admin" ? new Uint8Array(0) : ping),
      });
      expect(node?.grpcStatus ?? "0").toBe("0");
    }
    // HTTP/1.0 without Host is legal: served.
    const answer = await sendHttp1(
      {
        listener: "public",
        method: "POST",
        path: `${service}/Ping`,
        authority: undefined,
        contentType: "application/proto",
        headers: [],
        body: ping,
      },
      0,
    );
    expect(answer.status).toBe(200);
    // A deadline longer than a Node timer holds (11,000 years here) is no
    // reason to fail at once: the call is served.
    for (const [name, value] of [
      ["grpc-timeout", "99999999H"],
      ["connect-timeout-ms", "9999999999"],
    ] as const) {
      const h2 = await sendHttp2({
        listener: "public",
        method: "POST",
        path: `${service}/Ping`,
        authority: undefined,
        contentType: name === "grpc-timeout" ? "application/grpc" : "application/proto",
        headers: [[name, value]],
        body: name === "grpc-timeout" ? envelope(ping) : ping,
      });
      expect(h2?.status).toBe(200);
      expect(h2?.grpcStatus ?? "0").toBe("0");
    }
    await pingWorks();
    expect(served.stderr()).toBe("");
  });
});

describe("a bridge forwarding a tool call to another bridge at an IPv6 address", () => {
  it("is answered: Node's HTTP/2 client names [::1]:port as ::1:port, which once ended the receiving process", async () => {
    const worker = await startBridge({
      host: "::1",
      builtinTools: false,
      autoCreateSessions: true,
    });
    const bridge = await startBridge();
    worker.server.registerTool({
      name: "shout",
      description: "Upper-cases a text.",
      parameters: [{ name: "text", type: "string", required: true }],
      handler: ({ text }) => String(text).toUpperCase(),
    });
    try {
      const c = bridge.client("grpc");
      const { sessionId } = await c.initializeSession({});
      await bridge.workerClient().registerTools({
        sessionId,
        workerId: "v6-worker",
        tools: [{ name: "shout", metadata: { worker_address: `[::1]:${worker.port}` } }],
      });
      const res = await c.executeTool({
        sessionId,
        toolName: "shout",
        parameters: { text: encodeJsonAny("hi") },
      });
      expect(res.errorMessage).toBe("");
      expect(decodeJsonAny(res.result)).toBe("HI");
    } finally {
      await bridge.stop();
      await worker.stop();
    }
  });
});
