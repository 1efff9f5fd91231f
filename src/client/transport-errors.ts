/**
 * One meaning per code for every call of a SessionContext, reads included:
 * connect-node reports a connection that failed under a call (`read
 * ECONNRESET`, `socket hang up`) as `Code.Aborted`, the code the bridge
 * answers a version conflict with. A caller that retries on `Aborted` the
 * way a compare-and-swap loop does would take a broken connection for a
 * conflict; over HTTP/2 the same failure can come as `Code.Canceled`,
 * which says the caller gave up. Here such an error becomes
 * `Code.Unavailable` (the transport's error kept as `cause`); errors
 * decoded from a server's reply, and the cancellation the caller asked
 * for, pass unchanged.
 */
import { Code, ConnectError, type StreamResponse, type Transport } from "@connectrpc/connect";
import { fromServerReply } from "./write-outcome.js";

/**
 * The error a call should end with: `Aborted` only from a server's reply,
 * `Canceled` only when the caller's `signal` aborted.
 */
function honestTransportError(reason: unknown, signal?: AbortSignal): unknown {
  if (!(reason instanceof ConnectError) || fromServerReply(reason)) return reason;
  const misleading =
    reason.code === Code.Aborted || (reason.code === Code.Canceled && signal?.aborted !== true);
  if (!misleading) return reason;
  return new ConnectError(
    `the connection to the bridge failed (${reason.rawMessage})`,
    Code.Unavailable,
    reason.metadata,
    undefined,
    reason,
  );
}

async function* honestMessages<T>(
  messages: AsyncIterable<T>,
  signal: AbortSignal | undefined,
): AsyncIterable<T> {
  try {
    yield* messages;
  } catch (reason) {
    throw honestTransportError(reason, signal);
  }
}

/** Wraps `transport` so that its calls fail with {@link honestTransportError}. */
export function withHonestTransportErrors(transport: Transport): Transport {
  return {
    unary: (method, signal, timeoutMs, header, input, contextValues) =>
      transport
        .unary(method, signal, timeoutMs, header, input, contextValues)
        .catch((reason: unknown) => {
          throw honestTransportError(reason, signal);
        }),
    stream: (method, signal, timeoutMs, header, input, contextValues) =>
      transport.stream(method, signal, timeoutMs, header, input, contextValues).then(
        (response) =>
          ({
            ...response,
            message: honestMessages(response.message, signal),
          }) as StreamResponse<typeof method.input, typeof method.output>,
        (reason: unknown) => {
          throw honestTransportError(reason, signal);
        },
      ),
  };
}
