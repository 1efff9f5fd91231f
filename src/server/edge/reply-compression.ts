/**
 * The compressions the bridge offers for replies (gzip and brotli), with
 * the cost of compressing bounded the way every other resource is: per
 * client, and never for a caller who has left.
 *
 * connect-node's own `compressionBrotli` compresses at brotli's default
 * quality, 11: a client that merely asked for `br` made one 16 MiB reply
 * cost 23.5 s of CPU (gzip: 0.44 s), and the work went on after the client
 * had gone. Here:
 *
 * - brotli runs at quality {@link brotliQuality} (about gzip's speed, a
 *   smaller result), gzip at zlib's default level;
 * - a reply is compressed as a stream, in pieces of {@link pieceBytes}:
 *   each piece is one short task on libuv's thread pool, so other clients'
 *   replies and file work interleave with a large one instead of waiting
 *   seconds behind it, and before each piece the call's signal is checked,
 *   so a caller who is gone costs at most one more piece;
 * - each client compresses one reply at a time (`--trusted-proxy` decides
 *   who a client is, as for every quota); its other replies wait their turn,
 *   so one client holds at most one thread of the pool.
 *
 * The call a compression belongs to is known through {@link compressionScope},
 * which the RPC handler enters for requests that accept compression (connect's
 * `Compression` interface passes only the bytes).
 */
import { AsyncLocalStorage } from "node:async_hooks";
import zlib from "node:zlib";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Compression } from "@connectrpc/connect/protocol";
import { compressionBrotli, compressionGzip } from "@connectrpc/connect-node";

/** Brotli's quality for replies (0–11): 5 compresses about as fast as gzip -6, and smaller. */
export const brotliQuality = 5;

/** Input bytes compressed per thread-pool task. */
export const pieceBytes = 256 * 1024;

/** The call a compression runs for: who asked, and whether they are still there. */
export interface CompressionScope {
  /** The client (as quotas count clients). */
  readonly client: string;
  /** Aborted when the call ends or its caller goes away. */
  readonly signal: AbortSignal;
}

/** Entered by the RPC handler around a call whose client accepts compressed replies. */
export const compressionScope = new AsyncLocalStorage<CompressionScope>();

/**
 * Headers by which a request may get a compressed reply: an accepted
 * encoding, or (without one) the request's own encoding, which connect
 * then uses for the reply as well.
 */
const encodingHeaders = [
  "grpc-accept-encoding",
  "connect-accept-encoding",
  "accept-encoding",
  "grpc-encoding",
  "connect-content-encoding",
  "content-encoding",
];

/** Whether a request may get a compressed reply, in any protocol. */
export function acceptsCompression(
  headers: Readonly<Record<string, string | string[] | undefined>>,
): boolean {
  for (const name of encodingHeaders) {
    const value = headers[name];
    if (value !== undefined && value.length > 0) return true;
  }
  return false;
}

/**
 * Per-client turns: `run` starts a task once the client's previous one has
 * ended. Clients without a task in flight hold no entry.
 */
function createTurns(): <T>(client: string, task: () => Promise<T>) => Promise<T> {
  const tails = new Map<string, Promise<unknown>>();
  return (client, task) => {
    const before = tails.get(client) ?? Promise.resolve();
    const result = before.then(task, task);
    const tail = result.then(
      () => undefined,
      () => undefined,
    );
    tails.set(client, tail);
    void tail.then(() => {
      if (tails.get(client) === tail) tails.delete(client);
    });
    return result;
  };
}

type StreamFactory = () => zlib.Gzip | zlib.BrotliCompress;

/** Compresses `bytes` with a stream from `create`, a piece at a time, stopping when `signal` aborts. */
function compressInPieces(
  create: StreamFactory,
  bytes: Uint8Array,
  signal: AbortSignal | undefined,
): Promise<Uint8Array<ArrayBuffer>> {
  return new Promise((resolve, reject) => {
    const stream = create();
    const out: Buffer[] = [];
    let length = 0;
    let offset = 0;
    const gone = () =>
      new ConnectError("the caller went away; the reply was not compressed", Code.Canceled);
    stream.on("data", (chunk: Buffer) => {
      out.push(chunk);
      length += chunk.length;
    });
    stream.once("error", reject);
    // Buffer.concat allocates a plain (never shared) ArrayBuffer.
    stream.once("end", () => resolve(Buffer.concat(out, length) as Uint8Array<ArrayBuffer>));
    const next = () => {
      if (signal?.aborted === true) {
        stream.destroy();
        reject(gone());
        return;
      }
      if (offset >= bytes.length) {
        stream.end();
        return;
      }
      const piece = bytes.subarray(offset, offset + pieceBytes);
      offset += piece.length;
      // Flushing each piece makes it one pool task whose end is seen here;
      // a sync flush keeps the dictionary, so the result stays as small.
      stream.write(piece);
      if (stream instanceof zlib.Gzip) stream.flush(zlib.constants.Z_SYNC_FLUSH, next);
      else stream.flush(next);
    };
    next();
  });
}

/**
 * Wraps connect-node's compression `base` (its decompression, for requests,
 * is kept as is) with a bounded compression for replies.
 */
function boundedCompression(
  base: Compression,
  create: StreamFactory,
  turns: ReturnType<typeof createTurns>,
): Compression {
  return {
    name: base.name,
    decompress: (bytes, readMaxBytes) => base.decompress(bytes, readMaxBytes),
    compress(bytes) {
      const scope = compressionScope.getStore();
      if (scope === undefined) return compressInPieces(create, bytes, undefined);
      return turns(scope.client, () => compressInPieces(create, bytes, scope.signal));
    },
  };
}

/**
 * The compressions of one server, gzip and brotli (a reply gets the first
 * of the client's accepted encodings that is here). Each server has its
 * own per-client turns.
 */
export function createReplyCompressions(): Compression[] {
  const turns = createTurns();
  return [
    boundedCompression(compressionGzip, () => zlib.createGzip(), turns),
    boundedCompression(
      compressionBrotli,
      () =>
        zlib.createBrotliCompress({
          params: { [zlib.constants.BROTLI_PARAM_QUALITY]: brotliQuality },
        }),
      turns,
    ),
  ];
}
