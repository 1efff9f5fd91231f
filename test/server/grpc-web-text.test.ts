/**
 * gRPC-Web's text mode on the wire, against a real bridge: requests written
 * in several padded pieces, over HTTP/1.1 and HTTP/2, replies decoded with
 * protobuf-ts's base64 decoder (an implementation other than the server's),
 * and the refusals a hostile or broken body gets.
 */
import http from "node:http";
import http2 from "node:http2";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { base64decode } from "@protobuf-ts/runtime";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PingRequestSchema, PingResponseSchema } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { type RunningBridge, startBridge } from "../support/bridge.js";
import { envelope } from "../support/raw-rpc.js";

const pingPath = "/snakepit.bridge.BridgeService/Ping";
const maxRequestBytes = 4096;

let bridge: RunningBridge;
beforeAll(async () => {
  bridge = await startBridge({ maxRequestBytes });
});
afterAll(async () => {
  await bridge.stop();
});

interface TextReply {
  status: number;
  contentType: string;
  messages: Uint8Array[];
  trailer: Map<string, string>;
}

/** Splits a decoded gRPC-Web body into messages and the trailer frame's fields. */
function parseBody(status: number, contentType: string, text: string): TextReply {
  const bytes = base64decode(text);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const messages: Uint8Array[] = [];
  const trailer = new Map<string, string>();
  for (let at = 0; at + 5 <= bytes.length; ) {
    const length = view.getUint32(at + 1);
    const data = bytes.subarray(at + 5, at + 5 + length);
    if (((bytes[at] ?? 0) & 0x80) === 0) messages.push(data);
    else {
      for (const line of new TextDecoder().decode(data).split("\r\n")) {
        const colon = line.indexOf(":");
        if (colon > 0)
          trailer.set(line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim());
      }
    }
    at += 5 + length;
  }
  return { status, contentType, messages, trailer };
}

/** POSTs `pieces` of text, each in its own write, over HTTP/1.1. */
function textCallHttp1(pieces: readonly string[], path = pingPath): Promise<TextReply> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${bridge.url}${path}`, {
      method: "POST",
      headers: { "content-type": "application/grpc-web-text", "x-grpc-web": "1" },
    });
    req.on("response", (res) => {
      let text = "";
      res.setEncoding("latin1");
      res.on("data", (chunk: string) => {
        text += chunk;
      });
      res.on("end", () =>
        resolve(parseBody(res.statusCode ?? 0, res.headers["content-type"] ?? "", text)),
      );
    });
    req.on("error", reject);
    for (const piece of pieces) req.write(piece);
    req.end();
  });
}

function textCallHttp2(pieces: readonly string[]): Promise<TextReply> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(bridge.url);
    session.on("error", reject);
    const stream = session.request({
      ":method": "POST",
      ":path": pingPath,
      "content-type": "application/grpc-web-text+proto",
    });
    let status = 0;
    let contentType = "";
    let text = "";
    stream.setEncoding("latin1");
    stream.on("response", (h) => {
      status = Number(h[":status"]);
      contentType = String(h["content-type"]);
    });
    stream.on("data", (chunk: string) => {
      text += chunk;
    });
    stream.on("end", () => {
      session.close();
      resolve(parseBody(status, contentType, text));
    });
    stream.on("error", reject);
    for (const piece of pieces) stream.write(piece);
    stream.end();
  });
}

const pingFrame = (message: string) =>
  envelope(toBinary(PingRequestSchema, create(PingRequestSchema, { message })));
const base64 = (bytes: Uint8Array) => Buffer.from(bytes).toString("base64");
/** The frame in pieces of `size` bytes, each encoded (and padded) on its own. */
const paddedPieces = (frame: Uint8Array, size: number) => {
  const out: string[] = [];
  for (let at = 0; at < frame.length; at += size) out.push(base64(frame.subarray(at, at + size)));
  return out;
};

describe.each([
  ["HTTP/1.1", textCallHttp1],
  ["HTTP/2", textCallHttp2],
] as const)("gRPC-Web text over %s", (_name, call) => {
  it("answers a request sent in padded pieces with a text reply", async () => {
    const pieces = paddedPieces(pingFrame("hello in pieces"), 7);
    expect(pieces.some((p) => p.endsWith("="))).toBe(true);
    const reply = await call(pieces);
    expect(reply.status).toBe(200);
    expect(reply.contentType).toBe("application/grpc-web-text+proto");
    expect(reply.trailer.get("grpc-status")).toBe("0");
    expect(reply.messages.map((m) => fromBinary(PingResponseSchema, m).message)).toEqual([
      "hello in pieces",
    ]);
  });

  it("fails text that is not base64 with INVALID_ARGUMENT, in the text trailer", async () => {
    const reply = await call(["AAAA", "AA*A"]);
    expect(reply.status).toBe(200);
    expect(reply.trailer.get("grpc-status")).toBe(String(Code.InvalidArgument));
    expect(decodeURIComponent(reply.trailer.get("grpc-message") ?? "")).toBe(
      "the request body is not valid base64 (content type application/grpc-web-text): unexpected character code 42 at offset 6",
    );
  });
});

describe("gRPC-Web text request limits", () => {
  it("applies --max-request-bytes to the decoded message, not to the text", async () => {
    // 3,300 bytes of message are 4,400 characters of text: over the limit
    // as text, within it decoded.
    const within = await textCallHttp1([base64(pingFrame("x".repeat(3300)))]);
    expect(within.trailer.get("grpc-status")).toBe("0");
    expect(
      fromBinary(PingResponseSchema, within.messages[0] ?? new Uint8Array()).message,
    ).toHaveLength(3300);

    const over = await textCallHttp1([base64(pingFrame("x".repeat(maxRequestBytes + 10)))]);
    expect(over.trailer.get("grpc-status")).toBe(String(Code.ResourceExhausted));
    expect(decodeURIComponent(over.trailer.get("grpc-message") ?? "")).toContain(
      "--max-request-bytes",
    );
  });

  it("refuses a body announcing a huge message once its prefix is decoded, without reading on", async () => {
    // A 5-byte prefix announcing 1 GiB, then text that never ends: the
    // answer must come while the client is still sending.
    const prefix = new Uint8Array([0, 0x40, 0, 0, 0]);
    const reply = await new Promise<{ status: string | undefined; sentAfter: number }>(
      (resolve, reject) => {
        const req = http.request(`${bridge.url}${pingPath}`, {
          method: "POST",
          headers: { "content-type": "application/grpc-web-text" },
        });
        let sent = 0;
        let answered = false;
        const filler = "A".repeat(64 * 1024);
        const pump = () => {
          while (!answered && sent < 256 * 1024 * 1024) {
            sent += filler.length;
            if (!req.write(filler)) {
              req.once("drain", pump);
              return;
            }
          }
        };
        req.on("response", (res) => {
          answered = true;
          let text = "";
          res.setEncoding("latin1");
          res.on("data", (c: string) => {
            text += c;
          });
          res.on("end", () => {
            const parsed = parseBody(res.statusCode ?? 0, "", text);
            resolve({ status: parsed.trailer.get("grpc-status"), sentAfter: sent });
            req.destroy();
          });
        });
        req.on("error", (e) => {
          if (!answered) reject(e);
        });
        req.write(base64(prefix).slice(0, 8));
        pump();
      },
    );
    expect(reply.status).toBe(String(Code.ResourceExhausted));
    expect(reply.sentAfter).toBeLessThan(256 * 1024 * 1024);
  });
});
