import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";

/** Longest error message sent to a client, in code points. */
export const MAX_ERROR_MESSAGE = 1024;

/**
 * Makes every error message well-formed and bounded before it leaves the
 * server. Over gRPC the message travels in a trailer: a lone UTF-16
 * surrogate (half an emoji cut by a careless slice, or quoted by a
 * JSON.parse error) cannot be percent-encoded there, and a message echoing a
 * 70 KB identifier overflows HTTP/2 header limits; either way the client
 * would get no proper status at all. Messages keep their start, which is
 * what says what went wrong.
 *
 * It also keeps the engine's "Maximum call stack size exceeded" from
 * reaching clients as a message (see exhaustedStack below).
 */
export const errorHygieneInterceptor: Interceptor = (next) => async (req) => {
  try {
    const res = await next(req);
    if (!res.stream) return res;
    return { ...res, message: cleanStream(res.message) };
  } catch (e) {
    throw clean(e);
  }
};

async function* cleanStream<T>(messages: AsyncIterable<T>): AsyncIterable<T> {
  try {
    yield* messages;
  } catch (e) {
    throw clean(e);
  }
}

function clean(e: unknown): unknown {
  if (exhaustedStack(e)) {
    return new ConnectError("internal error", Code.Internal, undefined, undefined, e);
  }
  if (!(e instanceof ConnectError)) return e;
  const text = safeMessage(e.rawMessage);
  if (text === e.rawMessage) return e;
  const safe = new ConnectError(text, e.code, e.metadata, undefined, e.cause);
  safe.details.push(...e.details);
  return safe;
}

/** A message as a client can receive it: well-formed UTF-16, bounded length. */
export function safeMessage(message: string, max = MAX_ERROR_MESSAGE): string {
  const whole = message.toWellFormed();
  const points = Array.from(whole);
  return points.length <= max ? whole : `${points.slice(0, max).join("")}…`;
}

/**
 * Whether `e`, or an error in its chain of causes, is the RangeError V8
 * throws when the stack runs out, e.g. a ConnectError that some code made
 * from it with `ConnectError.from`, copying its text. Such an error says
 * nothing a client can act on, and nothing in it tells whether deep input
 * or a server defect was to blame: input nesting is refused as
 * INVALID_ARGUMENT before any recursion (see MAX_JSON_DEPTH in src/values),
 * so whatever still runs out of stack is answered as INTERNAL "internal
 * error", like any other unexpected error, with the original kept as the
 * cause for the logs. Other RangeErrors (protobuf-es's "premature EOF" is
 * one) may well be the caller's, and pass unchanged.
 */
function exhaustedStack(e: unknown): boolean {
  for (let at = e, hops = 0; at instanceof Error && hops < 8; at = at.cause, hops++) {
    // V8 gives this RangeError no code or other mark: its text is the only handle.
    if (at instanceof RangeError && at.message === "Maximum call stack size exceeded") return true;
  }
  return false;
}
