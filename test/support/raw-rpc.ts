import http2 from "node:http2";
import type { DescMethod } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import type { Protocol } from "./bridge.js";

/**
 * How a raw call ended: the status code (`undefined` for OK) and message the
 * server sent, read from the wire the way each protocol carries it.
 */
export interface RawOutcome {
  readonly code: Code | undefined;
  readonly message: string;
  /**
   * The response's messages as they came, with their envelope flags (a
   * Connect unary reply: its body, flags 0); trailer and end-of-stream
   * envelopes are not included.
   */
  readonly envelopes: readonly { readonly flags: number; readonly data: Uint8Array }[];
}

/** Options of {@link rawCall}. */
export interface RawCallOptions {
  /** Extra request headers, e.g. `grpc-encoding`. */
  readonly headers?: Readonly<Record<string, string>>;
  /** Give up after this long (default 5 s); the call then rejects. */
  readonly timeoutMs?: number;
}

const flagEndStream = 0x02;
const flagTrailer = 0x80;

/** A length-prefixed message as gRPC, gRPC-Web and Connect streams frame it. */
export function envelope(data: Uint8Array, flags = 0): Uint8Array {
  const out = new Uint8Array(5 + data.length);
  new DataView(out.buffer).setUint8(0, flags);
  new DataView(out.buffer).setUint32(1, data.length);
  out.set(data, 5);
  return out;
}

/**
 * POSTs `body`, exactly these bytes, as a request for `method` over
 * `protocol` (gRPC over HTTP/2, gRPC-Web and Connect over HTTP/1.1, as
 * browsers send them) and reads the status the server answers with. `body`
 * is the message itself for a Connect unary call, and enveloped messages
 * (see {@link envelope}) otherwise.
 *
 * Rejects when the response carries no status at all: that is a failure of
 * the server, not an outcome.
 */
export async function rawCall(
  baseUrl: string,
  protocol: Protocol,
  method: DescMethod,
  body: Uint8Array,
  options: RawCallOptions = {},
): Promise<RawOutcome> {
  const path = `/${method.parent.typeName}/${method.name}`;
  const timeoutMs = options.timeoutMs ?? 5000;
  const headers = options.headers ?? {};
  if (protocol === "grpc") return grpcCall(baseUrl, path, body, headers, timeoutMs);
  const unary = method.methodKind === "unary";
  const contentType =
    protocol === "grpc-web"
      ? "application/grpc-web+proto"
      : unary
        ? "application/proto"
        : "application/connect+proto";
  const res = await fetch(baseUrl + path, {
    method: "POST",
    headers: { "content-type": contentType, ...headers },
    body: new Uint8Array(body),
    signal: AbortSignal.timeout(timeoutMs),
  });
  const bytes = new Uint8Array(await res.arrayBuffer());
  if (protocol === "connect" && unary) {
    if (res.status === 200)
      return { code: undefined, message: "", envelopes: [{ flags: 0, data: bytes }] };
    return { ...connectError(bytes, `HTTP ${res.status}`), envelopes: [] };
  }
  if (protocol === "connect") {
    const all = envelopes(bytes);
    const messages = all.filter((e) => (e.flags & flagEndStream) === 0);
    const end = all.find((e) => (e.flags & flagEndStream) !== 0);
    if (end === undefined) throw new Error(`no end of stream in the response (HTTP ${res.status})`);
    const json = JSON.parse(new TextDecoder().decode(end.data)) as { error?: unknown };
    if (json.error === undefined) return { code: undefined, message: "", envelopes: messages };
    return {
      ...connectError(new TextEncoder().encode(JSON.stringify(json.error)), "end of stream"),
      envelopes: messages,
    };
  }
  const all = envelopes(bytes);
  const trailer = all.find((e) => (e.flags & flagTrailer) !== 0);
  const fields = new Map<string, string>();
  res.headers.forEach((value, key) => {
    fields.set(key, value);
  });
  if (trailer !== undefined) {
    for (const line of new TextDecoder().decode(trailer.data).split("\r\n")) {
      const colon = line.indexOf(":");
      if (colon > 0)
        fields.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
    }
  }
  return {
    ...grpcStatus(fields.get("grpc-status"), fields.get("grpc-message"), `HTTP ${res.status}`),
    envelopes: all.filter((e) => (e.flags & flagTrailer) === 0),
  };
}

function grpcCall(
  baseUrl: string,
  path: string,
  body: Uint8Array,
  headers: Readonly<Record<string, string>>,
  timeoutMs: number,
): Promise<RawOutcome> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(baseUrl);
    const timer = setTimeout(() => {
      session.destroy();
      reject(new Error(`no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    let settled = false;
    const done = (settle: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      session.destroy();
      settle();
    };
    session.on("error", (e) => done(() => reject(e)));
    const stream = session.request({
      ":method": "POST",
      ":path": path,
      "content-type": "application/grpc+proto",
      te: "trailers",
      ...headers,
    });
    const fields = new Map<string, string>();
    const chunks: Buffer[] = [];
    const take = (h: http2.IncomingHttpHeaders) => {
      for (const [k, v] of Object.entries(h)) if (typeof v === "string") fields.set(k, v);
    };
    // The status is complete with the trailers (or with the end of a
    // trailers-only response), which may come before the server has read the
    // whole request: then the stream stays open until we stop sending.
    const finish = () =>
      done(() => {
        try {
          resolve({
            ...grpcStatus(fields.get("grpc-status"), fields.get("grpc-message"), "stream"),
            envelopes: envelopes(Buffer.concat(chunks)),
          });
        } catch (e) {
          reject(e);
        }
      });
    stream.on("response", take);
    stream.on("trailers", (h) => {
      take(h);
      finish();
    });
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("end", finish);
    stream.on("close", finish);
    stream.on("error", (e) => done(() => reject(e)));
    stream.end(body);
  });
}

function grpcStatus(
  status: string | undefined,
  message: string | undefined,
  where: string,
): Omit<RawOutcome, "envelopes"> {
  if (status === undefined) throw new Error(`no grpc-status in the response (${where})`);
  const code = Number(status);
  if (code !== 0 && Code[code] === undefined) {
    throw new Error(`grpc-status is not a status code: ${status}`);
  }
  return {
    code: code === 0 ? undefined : (code as Code),
    message: decodeURIComponent(message ?? ""),
  };
}

function connectError(bytes: Uint8Array, where: string): Omit<RawOutcome, "envelopes"> {
  const json = JSON.parse(new TextDecoder().decode(bytes)) as { code?: unknown; message?: unknown };
  const name = String(json.code).replace(/(^|_)([a-z])/g, (_m, _s, ch: string) => ch.toUpperCase());
  const code = (Code as unknown as Record<string, Code | undefined>)[name];
  if (code === undefined) throw new Error(`no Connect error code in the response (${where})`);
  return { code, message: typeof json.message === "string" ? json.message : "" };
}

function envelopes(bytes: Uint8Array): { flags: number; data: Uint8Array }[] {
  const out: { flags: number; data: Uint8Array }[] = [];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let at = 0; at + 5 <= bytes.length; ) {
    const length = view.getUint32(at + 1);
    out.push({ flags: bytes[at] ?? 0, data: bytes.subarray(at + 5, at + 5 + length) });
    at += 5 + length;
  }
  return out;
}
