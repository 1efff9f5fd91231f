import { ConnectError, type Interceptor } from "@connectrpc/connect";

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
