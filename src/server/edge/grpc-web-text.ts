/**
 * gRPC-Web's text mode (`application/grpc-web-text`, `…-text+proto`): the
 * binary gRPC-Web body, base64-encoded both ways. It is the default of
 * Google's `grpc-web` client and of protobuf-ts, and the only mode in which
 * an XMLHttpRequest client sees a server stream's messages as they come.
 * connect-node speaks only the binary mode, so this layer sits in front of
 * the RPC dispatch: {@link fromGrpcWebText} turns a text request into the
 * binary request it encodes, and {@link toGrpcWebText} encodes the reply.
 *
 * Replies are encoded piece by piece, each piece padded on its own, as
 * Envoy's grpc_web filter does: both clients decode a stream of padded
 * groups, so every message is flushed as soon as it is written, and an
 * encoded frame ({@link encodeGrpcWebTextChunk}) does not depend on what was
 * written before it and can be shared by many streams.
 *
 * Requests are decoded as they arrive, so the size limit connect applies to
 * each message (`readMaxBytes`, i.e. `--max-request-bytes`) holds for the
 * decoded bytes, and a hostile body costs no more memory than its current
 * chunk. Text that is not base64 fails the call with INVALID_ARGUMENT.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { UniversalServerRequest, UniversalServerResponse } from "@connectrpc/connect/protocol";

const textContentType = /^application\/grpc-web-text(?:\+proto)?$/i;
const binaryContentType = "application/grpc-web+proto";
/** The content type of a text-mode reply. */
export const grpcWebTextContentType = "application/grpc-web-text+proto";

const notBase64 = /[^A-Za-z0-9+/=]/;

/** Whether `contentType` names gRPC-Web's text mode (protobuf messages). */
export function isGrpcWebText(contentType: string | null | undefined): boolean {
  return contentType != null && textContentType.test(contentType.trim());
}

function invalidBase64(detail: string): ConnectError {
  return new ConnectError(
    `the request body is not valid base64 (content type application/grpc-web-text): ${detail}`,
    Code.InvalidArgument,
  );
}

/**
 * Decodes base64 text that arrives in arbitrary pieces: groups of four
 * characters are decoded once complete, padding may end any group (clients
 * that send a body in several writes pad each), and one unpadded group may
 * end the text. Throws INVALID_ARGUMENT on anything else.
 */
export function createBase64Decoder(): {
  /** The bytes of the complete groups received so far. */
  push(chunk: Uint8Array): Uint8Array;
  /** The bytes of a final unpadded group; throws if the text ended mid-group. */
  end(): Uint8Array;
} {
  let pending = "";
  let received = 0;
  return {
    push(chunk) {
      // Where text[0] is in the whole body, for messages.
      const start = received - pending.length;
      const text =
        pending + Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).toString("latin1");
      received += chunk.byteLength;
      const bad = notBase64.exec(text);
      if (bad !== null) {
        throw invalidBase64(
          `unexpected character code ${text.charCodeAt(bad.index)} at offset ${start + bad.index}`,
        );
      }
      const whole = text.length - (text.length % 4);
      pending = text.slice(whole);
      return decodeGroups(text.slice(0, whole), start);
    },
    end() {
      if (pending.length === 0) return new Uint8Array(0);
      if (pending.length === 1 || pending.includes("=")) {
        throw invalidBase64(`the text ends inside a group of four characters ("${pending}")`);
      }
      const bytes = Buffer.from(pending, "base64");
      pending = "";
      return bytes;
    },
  };
}

/** Decodes whole groups, each padded one ending a segment; `base` is for messages. */
function decodeGroups(text: string, base: number): Uint8Array {
  let padding = text.indexOf("=");
  if (padding === -1) return Buffer.from(text, "base64");
  const pieces: Buffer[] = [];
  let start = 0;
  while (padding !== -1) {
    const groupEnd = padding - (padding % 4) + 4;
    const inGroup = padding % 4;
    // "xx==" or "xxx=": padding only in the last two places, and to the end.
    if (inGroup < 2 || (inGroup === 2 && text[padding + 1] !== "=")) {
      throw invalidBase64(`misplaced padding at offset ${base + padding}`);
    }
    pieces.push(Buffer.from(text.slice(start, groupEnd), "base64"));
    start = groupEnd;
    padding = text.indexOf("=", start);
  }
  if (start < text.length) pieces.push(Buffer.from(text.slice(start), "base64"));
  return pieces.length === 1 ? (pieces[0] as Buffer) : Buffer.concat(pieces);
}

/** Decodes a base64 request body as it streams in; see {@link createBase64Decoder}. */
export async function* decodeGrpcWebTextBody(
  body: AsyncIterable<Uint8Array>,
): AsyncGenerator<Uint8Array> {
  const decoder = createBase64Decoder();
  for await (const chunk of body) {
    const bytes = decoder.push(chunk);
    if (bytes.length > 0) yield bytes;
  }
  const rest = decoder.end();
  if (rest.length > 0) yield rest;
}

/**
 * One piece of a binary gRPC-Web reply (an enveloped message or the trailer
 * frame) as text: its padded base64, which a client can decode without
 * anything written before or after it.
 */
export function encodeGrpcWebTextChunk(chunk: Uint8Array): Uint8Array {
  const base64 = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).toString("base64");
  return Buffer.from(base64, "latin1");
}

/**
 * The binary gRPC-Web request a text-mode request encodes, or undefined if
 * `req` is not in text mode. Its body is decoded as the handler reads it.
 */
export function fromGrpcWebText(req: UniversalServerRequest): UniversalServerRequest | undefined {
  if (!isGrpcWebText(req.header.get("content-type"))) return undefined;
  if (!isByteStream(req.body)) return undefined;
  const header = new Headers(req.header);
  header.set("content-type", binaryContentType);
  return { ...req, header, body: decodeGrpcWebTextBody(req.body) };
}

/**
 * The text-mode form of a binary gRPC-Web reply: base64 body, each piece
 * encoded and flushed as it is produced; the content type says text. A reply
 * that is not gRPC-Web (an HTTP error without body) is returned as is.
 */
export function toGrpcWebText(res: UniversalServerResponse): UniversalServerResponse {
  const contentType = res.header?.get("content-type") ?? "";
  if (!contentType.toLowerCase().startsWith("application/grpc-web")) return res;
  const header = new Headers(res.header);
  header.set("content-type", grpcWebTextContentType);
  if (res.body === undefined) return { ...res, header };
  return { ...res, header, body: mapChunks(res.body, encodeGrpcWebTextChunk) };
}

function isByteStream(body: UniversalServerRequest["body"]): body is AsyncIterable<Uint8Array> {
  return typeof body === "object" && body !== null && Symbol.asyncIterator in body;
}

/**
 * `source` with each chunk mapped, passing `throw` and `return` through:
 * connect learns from them that a reply could not be written (and aborts
 * the call), which a generator's `for await` would turn into a plain return
 * (see `writeUniversalResponse` in edge-compat.ts).
 */
function mapChunks(
  source: AsyncIterable<Uint8Array>,
  map: (chunk: Uint8Array) => Uint8Array,
): AsyncIterable<Uint8Array> {
  return {
    [Symbol.asyncIterator]() {
      const it = source[Symbol.asyncIterator]();
      const mapped = async (
        step: Promise<IteratorResult<Uint8Array>>,
      ): Promise<IteratorResult<Uint8Array>> => {
        const r = await step;
        return r.done === true ? r : { done: false, value: map(r.value) };
      };
      return {
        next: () => mapped(it.next()),
        throw: (e?: unknown) => (it.throw === undefined ? Promise.reject(e) : mapped(it.throw(e))),
        return: (v?: unknown) =>
          it.return === undefined
            ? Promise.resolve({ done: true, value: v })
            : mapped(it.return(v)),
      };
    },
  };
}
