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
 *   body is read. A decoding failure of a call that never reached the
 *   interceptors, and a size-limit refusal, are corrected before the error
 *   is written ({@link correctBeforeWritten}).
 *
 * Errors raised later, such as a response that cannot be serialized, or the
 * same texts thrown by an implementation (relaying a peer's garbage), are
 * the server's and stay INTERNAL. What connect offers to tell these errors
 * apart is only their texts, and the correction relies on the order in
 * which its handlers abort and write: both are connect-es 2.2 internals,
 * kept in edge-compat.ts ({@link connectRequestFailure},
 * {@link correctBeforeWritten}); request-errors.test.ts pins the behaviour
 * on every protocol, so an upgrade that changes them fails there.
 */
import {
  Code,
  ConnectError,
  createContextKey,
  type HandlerContext,
  type Interceptor,
} from "@connectrpc/connect";
import {
  type ConnectRequestFailure,
  connectRequestFailure,
  correctBeforeWritten,
  type ErrorCorrection,
} from "./edge-compat.js";

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
    const message = decodingFailure(connectRequestFailure(e), typeName);
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
  const typeName = context.method.input.typeName;
  correctBeforeWritten(context, (reason): ErrorCorrection | undefined => {
    const failure = connectRequestFailure(reason);
    if (failure?.kind === "size") {
      return { message: sizeLimitMessage(failure), code: Code.ResourceExhausted };
    }
    if (context.values.get(reachedInterceptors)) return undefined;
    const message = decodingFailure(failure, typeName);
    return message === undefined ? undefined : { message, code: Code.InvalidArgument };
  });
}

/**
 * What went wrong decoding a request of type `typeName`, for the client, if
 * `failure` is one of the failures connect raises for undecodable requests
 * (INTERNAL, as if the server were at fault); otherwise undefined. The
 * callers ensure structurally that it was raised while reading the request.
 */
function decodingFailure(
  failure: ConnectRequestFailure | undefined,
  typeName: string,
): string | undefined {
  switch (failure?.kind) {
    case "parse":
      return `request is not a valid ${typeName} message: ${failure.detail}`;
    case "compressed-without-encoding":
      return "request message is flagged as compressed, but the request names no compression (grpc-encoding or connect-content-encoding)";
    case "decompress":
      // connect-node reports zlib's data errors as INVALID_ARGUMENT, but
      // others, such as a gzip stream cut short (Z_BUF_ERROR), as INTERNAL.
      return `request could not be decompressed: ${failure.error.message}`;
    default:
      return undefined;
  }
}

/**
 * connect's size-limit refusals, reworded to name the server's settings:
 * "message size 5000000 is larger than configured readMaxBytes 4194304"
 * becomes "the request is 5000000 bytes; the limit is 4194304 bytes
 * (--max-request-bytes)". (A reply over the limit is usually refused by the
 * service before it is built; connect's own check behind it keeps its text
 * where the call has already ended.)
 */
function sizeLimitMessage(failure: Extract<ConnectRequestFailure, { kind: "size" }>): string {
  if (failure.which === "reply") {
    return `the reply is ${failure.size} bytes; the limit is ${failure.limit} bytes (--max-reply-bytes): ask for less at once`;
  }
  return requestOverLimit(failure.limit, failure.size);
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
