import { Code, ConnectError } from "@connectrpc/connect";
import { formatBytes } from "./limits.js";

/**
 * Bytes of replies in flight per client. Each reply is at most
 * --max-reply-bytes, but a client can ask for many at once and stop
 * reading: every one of them is built (CPU) and held (memory) until its
 * bytes leave. Reserving a reply's size before it is built, and keeping it
 * reserved until its call ends (connect aborts the handler context's
 * signal once the reply's last bytes were handed to the socket, or the
 * call failed), bounds what one client can make the server hold and
 * compute at once.
 */
export interface ReplyBudget {
  /**
   * Reserves `bytes` for a reply to `client` until `signal` aborts;
   * RESOURCE_EXHAUSTED when the client's replies in flight would exceed the
   * budget. `what` names the call in the message.
   */
  reserve(client: string, bytes: number, signal: AbortSignal, what: string): void;
  /** Bytes reserved for a client now (0 when none). */
  inFlight(client: string): number;
}

/** Replies smaller than this are not counted: they cost little, and the hot read path stays free. */
export const UNCOUNTED_REPLY_BYTES = 64 * 1024;

/**
 * Creates a budget of `maxBytes` per client. `limitName` says where the
 * figure comes from (a flag), for the refusal's message.
 */
export function createReplyBudget(maxBytes: number, limitName: string): ReplyBudget {
  const held = new Map<string, number>();
  const release = (client: string, bytes: number) => {
    const left = (held.get(client) ?? 0) - bytes;
    if (left > 0) held.set(client, left);
    else held.delete(client);
  };
  return {
    reserve(client, bytes, signal, what) {
      // A call whose context has ended already has nothing left to hold;
      // one without a client address has nothing to count by.
      if (bytes < UNCOUNTED_REPLY_BYTES || client === "" || signal.aborted) return;
      const current = held.get(client) ?? 0;
      // A reply alone always fits (its own size is the reply limit's business).
      if (current > 0 && current + bytes > maxBytes) {
        throw new ConnectError(
          `${what}: the reply would be about ${formatBytes(bytes)} while ${formatBytes(current)} of replies to this client are still being sent; at most ${formatBytes(maxBytes)} may be in flight per client (${limitName}): read the replies you asked for before asking for more`,
          Code.ResourceExhausted,
        );
      }
      held.set(client, current + bytes);
      signal.addEventListener("abort", () => release(client, bytes), { once: true });
    },
    inFlight: (client) => held.get(client) ?? 0,
  };
}
