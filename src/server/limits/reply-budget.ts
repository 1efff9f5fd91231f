import { Code, ConnectError, createContextKey, type HandlerContext } from "@connectrpc/connect";
import { clientOf, isWorker } from "../access/caller.js";
import { formatBytes } from "../common/message-text.js";

/**
 * Bytes of replies in flight per client. Each reply is at most
 * --max-reply-bytes, but a client can ask for many at once and stop
 * reading: every one of them is built (CPU) and held (memory) until its
 * bytes leave. Reserving a reply's size before it is built, and keeping it
 * reserved until the reply has left (its Node response has closed: every
 * byte handed to the socket, or the call was cut off; see
 * {@link replyEnd}), bounds what one client can make the server hold and
 * compute at once, whatever the protocol.
 */
export interface ReplyBudget {
  /**
   * Reserves `bytes` for the reply of the call `ctx` until it has left
   * ({@link replyEnd}); RESOURCE_EXHAUSTED when the client's replies in
   * flight would exceed the budget. `what` names the call in the message.
   * Replies under {@link UNCOUNTED_REPLY_BYTES} and workers' calls are not
   * counted (workers are trusted, as with the session quota).
   */
  reserve(ctx: HandlerContext, bytes: number, what: string): void;
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
    reserve(ctx, bytes, what) {
      // Small replies first: GetVariable's hot path pays one comparison.
      if (bytes < UNCOUNTED_REPLY_BYTES || isWorker(ctx)) return;
      const client = clientOf(ctx);
      const end = replyEnd(ctx);
      // A call whose reply has left already has nothing left to hold;
      // one without a client address has nothing to count by.
      if (client === "" || end.ended) return;
      const current = held.get(client) ?? 0;
      // A reply alone always fits (its own size is the reply limit's business).
      if (current > 0 && current + bytes > maxBytes) {
        throw new ConnectError(
          `${what}: the reply would be about ${formatBytes(bytes)} while ${formatBytes(current)} of replies to this client are still being sent; at most ${formatBytes(maxBytes)} may be in flight per client (${limitName}): read the replies you asked for before asking for more`,
          Code.ResourceExhausted,
        );
      }
      held.set(client, current + bytes);
      end.onEnd(() => release(client, bytes));
    },
  };
}

/** When a call's reply has left the server. */
export interface ReplyEnd {
  /** Whether it has already. */
  readonly ended: boolean;
  /** Calls `fn` once it has (at once if it has). */
  onEnd(fn: () => void): void;
}

/**
 * What a call's Node response is, for {@link replyEnd}: set by the RPC
 * handler, absent where connect-node's own adapter or an in-memory
 * transport serves the call.
 */
export const nodeResponseKey = createContextKey<
  | {
      readonly writableFinished: boolean;
      readonly destroyed: boolean;
      once(event: "close", fn: () => void): unknown;
    }
  | undefined
>(undefined, { description: "the call's Node response" });

/**
 * When the reply of the call `ctx` belongs to has left: its Node response
 * closed (every byte handed to the socket, or the call was cut off). A
 * Connect unary call's handler context ends as soon as the reply is
 * built, long before a client that stopped reading takes it, so the
 * response is what tells. Without one, the handler context's end.
 */
export function replyEnd(ctx: HandlerContext): ReplyEnd {
  const res = ctx.values.get(nodeResponseKey);
  if (res === undefined) {
    const { signal } = ctx;
    return {
      ended: signal.aborted,
      onEnd: (fn) => {
        if (signal.aborted) fn();
        else signal.addEventListener("abort", fn, { once: true });
      },
    };
  }
  const ended = res.writableFinished || res.destroyed;
  return {
    ended,
    onEnd: (fn) => {
      if (ended) fn();
      else res.once("close", fn);
    },
  };
}
