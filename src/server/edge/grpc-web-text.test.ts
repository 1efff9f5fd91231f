import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import {
  createBase64Decoder,
  decodeGrpcWebTextBody,
  encodeGrpcWebTextChunk,
  isGrpcWebText,
} from "./grpc-web-text.js";

const bytes = (n: number) => Uint8Array.from({ length: n }, (_, i) => (i * 37 + 11) & 0xff);
const ascii = (s: string) => new Uint8Array(Buffer.from(s, "latin1"));
const b64 = (b: Uint8Array) => Buffer.from(b).toString("base64");

async function decodeAll(pieces: string[]): Promise<Uint8Array> {
  async function* body() {
    for (const p of pieces) yield ascii(p);
  }
  const out: Uint8Array[] = [];
  for await (const chunk of decodeGrpcWebTextBody(body())) out.push(chunk);
  return Buffer.concat(out);
}

async function decodeError(pieces: string[]): Promise<ConnectError> {
  const error = await decodeAll(pieces).then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(error instanceof ConnectError)) throw new Error(`expected a ConnectError, got ${error}`);
  return error;
}

describe("gRPC-Web text decoding", () => {
  it("decodes text split anywhere, even one character at a time", async () => {
    const data = bytes(1000);
    const text = b64(data);
    expect(await decodeAll(text.split(""))).toEqual(Buffer.from(data));
    expect(await decodeAll([text.slice(0, 7), text.slice(7, 501), text.slice(501)])).toEqual(
      Buffer.from(data),
    );
  });

  it("decodes pieces that were each padded, as clients writing several times send them", async () => {
    const parts = [bytes(5), bytes(1), bytes(300), bytes(2)];
    const text = parts.map(b64).join("");
    expect(text.slice(0, 8)).toMatch(/=$/);
    expect(await decodeAll([text])).toEqual(Buffer.concat(parts));
    expect(await decodeAll(text.split(""))).toEqual(Buffer.concat(parts));
  });

  it("accepts one unpadded group at the very end", async () => {
    const data = bytes(7);
    expect(await decodeAll([b64(data).replace(/=+$/, "")])).toEqual(Buffer.from(data));
  });

  it("refuses characters outside base64, naming where", async () => {
    const error = await decodeError(["AAAA", "AA-A"]);
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toBe(
      "the request body is not valid base64 (content type application/grpc-web-text): unexpected character code 45 at offset 6",
    );
    expect((await decodeError(["AAAA\r\n"])).code).toBe(Code.InvalidArgument);
  });

  it("refuses misplaced padding and text ending mid-group", async () => {
    expect((await decodeError(["A=AA"])).rawMessage).toMatch(/misplaced padding at offset 1$/);
    expect((await decodeError(["AAAAAA=A"])).rawMessage).toMatch(/misplaced padding at offset 6$/);
    expect((await decodeError(["AAAAA"])).rawMessage).toMatch(/ends inside a group/);
    expect((await decodeError(["AAAAAA="])).rawMessage).toMatch(/ends inside a group/);
  });

  it("holds back at most three characters between chunks", () => {
    const decoder = createBase64Decoder();
    expect([...decoder.push(ascii("AAE"))]).toEqual([]);
    expect([...decoder.push(ascii("CAw"))]).toEqual([0, 1, 2]);
    expect([...decoder.end()]).toEqual([3]);
  });
});

describe("gRPC-Web text encoding", () => {
  it("encodes each piece on its own, padded, so pieces can be joined", async () => {
    const pieces = [bytes(1), bytes(5), bytes(9)].map(encodeGrpcWebTextChunk);
    for (const p of pieces) expect(p.length % 4).toBe(0);
    const joined = pieces.map((p) => Buffer.from(p).toString("latin1"));
    expect(await decodeAll(joined)).toEqual(Buffer.concat([bytes(1), bytes(5), bytes(9)]));
  });

  it("recognizes the text content types only", () => {
    expect(isGrpcWebText("application/grpc-web-text")).toBe(true);
    expect(isGrpcWebText("application/grpc-web-text+proto")).toBe(true);
    expect(isGrpcWebText("Application/GRPC-Web-Text")).toBe(true);
    expect(isGrpcWebText("application/grpc-web-text+json")).toBe(false);
    expect(isGrpcWebText("application/grpc-web+proto")).toBe(false);
    expect(isGrpcWebText(null)).toBe(false);
  });
});
