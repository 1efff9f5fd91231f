/**
 * Requests that cannot be decoded fail with INVALID_ARGUMENT, not INTERNAL.
 *
 * connect-es decodes a request before the service sees it, and reports some
 * of the ways that can fail as INTERNAL, as if the server were at fault: a
 * body that is not a valid protobuf message (truncated, a wrong wire type,
 * invalid UTF-8 in a string field) becomes `[internal] parse binary: …`; a
 * message flagged as compressed when the request names no compression, or a
 * compressed stream cut short, become INTERNAL as well. For a unary call this
 * happens before any interceptor runs, so no interceptor can correct it; for
 * a server-streaming call it happens while the implementation reads its
 * request, inside the interceptors.
 *
 * So this module has two parts, used together (see http-front.ts):
 *
 * - {@link requestErrorInterceptor}, the outermost interceptor, marks the call
 *   as having reached the interceptors, and for streaming calls wraps the
 *   request's message stream: a failure raised while reading it is by
 *   construction a failure to decode the request, and is replaced there, so
 *   that metrics and the other interceptors see the code the client gets.
 * - {@link requestErrorGate}, a `requestGate`, which connect runs before the
 *   body is read. It listens to the call's abort signal: every handler
 *   (Connect, gRPC and gRPC-Web, unary and streaming) calls
 *   `context.abort(error)` with the error and only then writes the status
 *   from that same error object. A decoding failure aborting a call that
 *   never reached the interceptors is corrected in place, before it is
 *   written.
 *
 * Errors raised later, such as a response that cannot be serialized, or the
 * same texts thrown by an implementation (relaying a peer's garbage), are
 * the server's and stay INTERNAL. This relies on connect-es 2.2 internals
 * (the handlers' abort-then-write order, the texts matched below);
 * request-errors.test.ts pins the behaviour on every protocol, so an upgrade
 * that changes them fails there.
 */
import {
  Code,
  ConnectError,
  createContextKey,
  type HandlerContext,
  type Interceptor,
} from "@connectrpc/connect";

/** Set once a call reaches {@link requestErrorInterceptor}. */
const reachedInterceptors = createContextKey(false, {
  description: "the request reached the interceptors",
});

/**
 * The interceptor half of the request error handling; must be the first
 * (outermost) interceptor, and is used with {@link requestErrorGate}.
 *
 * @example
 * ```ts
 * connectNodeAdapter({
 *   routes,
 *   interceptors: [requestErrorInterceptor, ...others],
 *   requestGate: requestErrorGate,
 * });
 * ```
 */
export const requestErrorInterceptor: Interceptor = (next) => async (req) => {
  req.contextValues.set(reachedInterceptors, true);
  if (!req.stream) return next(req);
  const typeName = req.method.input.typeName;
  return next({ ...req, message: decodingErrorsOf(req.message, typeName) });
};

async function* decodingErrorsOf<T>(messages: AsyncIterable<T>, typeName: string) {
  try {
    yield* messages;
  } catch (e) {
    const message = decodingFailure(e, typeName);
    if (message === undefined) throw e;
    throw new ConnectError(message, Code.InvalidArgument, undefined, undefined, e);
  }
}

/**
 * The `requestGate` half of the request error handling (see
 * {@link requestErrorInterceptor}): a unary request that cannot be decoded
 * fails with INVALID_ARGUMENT and a message naming the expected message type,
 * e.g. "request is not a valid snakepit.bridge.SetVariableRequest message:
 * premature EOF".
 */
export function requestErrorGate(context: HandlerContext): void {
  const { signal } = context;
  const typeName = context.method.input.typeName;
  signal.addEventListener(
    "abort",
    () => {
      const reason: unknown = signal.reason;
      const limit = sizeLimitFailure(reason);
      if (limit !== undefined) {
        reclassify(reason as ConnectError, limit, Code.ResourceExhausted);
        return;
      }
      if (context.values.get(reachedInterceptors)) return;
      const message = decodingFailure(reason, typeName);
      if (message !== undefined) reclassify(reason as ConnectError, message);
    },
    { once: true },
  );
}

/**
 * Turns `error` into INVALID_ARGUMENT with `message`, in place: the handler
 * writes the status from this very object once the abort listeners return.
 */
function reclassify(error: ConnectError, message: string, code = Code.InvalidArgument): void {
  const writable: { -readonly [K in keyof ConnectError]: ConnectError[K] } = error;
  const replacement = new ConnectError(message, code);
  writable.code = replacement.code;
  writable.rawMessage = replacement.rawMessage;
  writable.message = replacement.message;
}

// connect-es 2.2 (protocol/serialization.js) wraps protobuf-es's error in a
// new ConnectError with this prefix and without a cause, so the text is the
// only handle on it. Its counterpart "serialize binary: " is for responses.
const parseBinaryPrefix = "parse binary: ";
// protocol/envelope.js envelopeDecompress, for a message whose compressed
// flag is set although the request named no compression.
const compressedWithoutEncoding = "received compressed envelope, but do not know how to decompress";

/**
 * What went wrong decoding a request of type `typeName`, for the client, if
 * `e` is one of the INTERNAL errors connect raises for undecodable requests;
 * otherwise undefined. The callers ensure structurally that `e` was raised
 * while reading the request; this is the one place that knows connect's
 * texts for these errors.
 */
function decodingFailure(e: unknown, typeName: string): string | undefined {
  if (!(e instanceof ConnectError) || e.code !== Code.Internal) return undefined;
  if (e.rawMessage.startsWith(parseBinaryPrefix)) {
    const reason = e.rawMessage.slice(parseBinaryPrefix.length);
    return `request is not a valid ${typeName} message: ${reason}`;
  }
  if (e.rawMessage === compressedWithoutEncoding) {
    return "request message is flagged as compressed, but the request names no compression (grpc-encoding or connect-content-encoding)";
  }
  // connect-node reports zlib's data errors as INVALID_ARGUMENT, but others,
  // such as a gzip stream cut short (Z_BUF_ERROR), as INTERNAL; the zlib
  // error is the cause.
  const zlib = zlibError(e.cause);
  if (zlib !== undefined) return `request could not be decompressed: ${zlib.message}`;
  return undefined;
}

// protocol/limit-io.js: a request over readMaxBytes, a reply over writeMaxBytes.
const sizeLimit =
  /^message size (?:(\d+) )?is larger than configured (readMaxBytes|writeMaxBytes) (\d+)$/;

/**
 * connect's size-limit refusals, reworded to name the server's settings:
 * "message size 5000000 is larger than configured readMaxBytes 4194304"
 * becomes "the request is 5000000 bytes; the limit is 4194304 bytes
 * (--max-request-bytes)". (A reply over the limit is usually refused by the
 * service before it is built; connect's own check behind it keeps its text
 * where the call has already ended.)
 */
function sizeLimitFailure(e: unknown): string | undefined {
  if (!(e instanceof ConnectError) || e.code !== Code.ResourceExhausted) return undefined;
  const m = sizeLimit.exec(e.rawMessage);
  if (m === null) return undefined;
  const [, size, which, limit] = m;
  if (which === "writeMaxBytes") {
    return `the reply is ${size} bytes; the limit is ${limit} bytes (--max-reply-bytes): ask for less at once`;
  }
  return requestOverLimit(Number(limit), size === undefined ? undefined : Number(size));
}

/**
 * The message for a request message over --max-request-bytes, whichever
 * path read it: "the request is N bytes; the limit is L bytes
 * (--max-request-bytes)", or "over the limit" when its size is not known
 * (`once decompressed` for a gzip message that grew past it).
 */
export function requestOverLimit(
  limit: number,
  size?: number,
  when: "" | " once decompressed" = "",
): string {
  const sizeText = size === undefined ? "over the limit" : `${size} bytes`;
  return `the request is ${sizeText}${when}; the limit is ${limit} bytes (--max-request-bytes)`;
}

function zlibError(cause: unknown): Error | undefined {
  if (!(cause instanceof Error) || !("code" in cause)) return undefined;
  return typeof cause.code === "string" && cause.code.startsWith("Z_") ? cause : undefined;
}
