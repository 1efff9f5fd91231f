import { type CallOptions, Code, ConnectError } from "@connectrpc/connect";
import { sleep, systemTimers, type TimerProvider } from "./timers.js";

/**
 * What a failed write says about the stored state: `"refused"` (the server
 * answered and changed nothing) or `"unknown"` (the request may have reached
 * the server and been applied: the connection failed after sending, a
 * deadline passed, the caller cancelled). A write that resolves was applied.
 */
export type FailedWrite = "refused" | "unknown";

/**
 * A write whose outcome the client cannot know: it may or may not have been
 * applied. Still a `ConnectError` (`instanceof ConnectError` holds, and
 * `ConnectError.from` returns it as is), with `Code.Unavailable` for a
 * connection that failed, `Code.DeadlineExceeded` / `Code.Canceled` for a
 * deadline or a cancellation, `Code.Unknown` for a batch reply that leaves
 * one of its writes unmentioned, and never `Code.Aborted`, which means a
 * server's refusal (a version conflict). The transport's own error is the
 * `cause`. Read the variable again to learn whether the write applied
 * before writing again.
 */
export class OutcomeUnknownError extends ConnectError {
  /** Tells this error apart from any other `ConnectError`. */
  readonly outcome = "unknown" as const;

  constructor(message: string, code: Code, cause: ConnectError) {
    super(message, code, cause.metadata, undefined, cause);
    // The name stays "ConnectError": connect's instanceof check for errors
    // from another copy of the library accepts only that name.
  }

  // ConnectError's own check would also accept every plain ConnectError.
  static override [Symbol.hasInstance](value: unknown): boolean {
    return (
      value instanceof ConnectError &&
      (value as Partial<Pick<OutcomeUnknownError, "outcome">>).outcome === "unknown"
    );
  }
}

/**
 * Which kind of failure a write of a SessionContext ended with.
 *
 * @example
 * ```ts
 * try {
 *   await ctx.set("counter", n + 1, { expectedVersion: v });
 * } catch (e) {
 *   if (writeOutcome(e) === "unknown") n = await ctx.get("counter", { bypassCache: true });
 *   else if (ConnectError.from(e).code === Code.Aborted) { ... someone else wrote first: re-read, retry }
 *   else throw e;
 * }
 * ```
 */
export function writeOutcome(error: unknown): FailedWrite {
  return error instanceof OutcomeUnknownError ? "unknown" : "refused";
}

/**
 * Codes that, even in a server's own reply, do not prove that nothing
 * changed: the server (or a proxy in front of it) may have failed after
 * storing the write.
 */
const UNCERTAIN = new Set<Code>([
  Code.Unknown,
  Code.Internal,
  Code.Unavailable,
  Code.DataLoss,
  Code.DeadlineExceeded,
  Code.Canceled,
]);

/**
 * Whether connect decoded this error from a reply of the server (its error
 * body or status trailers) rather than raising it itself. The one place
 * that reads connect's `isWireError` (set by the Connect, gRPC and gRPC-Web
 * protocol code shared by connect-node and connect-web, so by Node,
 * browsers and Workers alike); `write-outcomes.test.ts` pins it.
 */
export function fromServerReply(error: ConnectError): boolean {
  return error.isWireError;
}

/**
 * Turns the failure of a sent write into what it says about the stored
 * state: a refusal from the server is rethrown unchanged, anything else
 * becomes an {@link OutcomeUnknownError} naming `what()` was being written
 * (a function: the text is made only when a write fails, not on every
 * write).
 *
 * Why: connect-node reports a connection reset after the request was sent
 * (`read ECONNRESET`, `socket hang up`) as `Code.Aborted`, the code of a
 * version conflict; a compare-and-swap loop would retry a write that was
 * applied, and count it twice.
 */
export function classifyWriteFailure(reason: unknown, what: () => string): ConnectError {
  const error = ConnectError.from(reason);
  if (error instanceof OutcomeUnknownError) return error;
  if (fromServerReply(error) && !UNCERTAIN.has(error.code)) return error;
  const code =
    error.code === Code.DeadlineExceeded || error.code === Code.Canceled
      ? error.code
      : Code.Unavailable;
  return new OutcomeUnknownError(
    `${what()}: the outcome is unknown (${error.rawMessage}): the request may have reached the server and been applied; read it again to learn whether it was, before writing again`,
    code,
    error,
  );
}

/** Awaits a sent write, turning its failure with {@link classifyWriteFailure}. */
export async function sentWrite<T>(what: () => string, call: Promise<T>): Promise<T> {
  try {
    return await call;
  } catch (reason) {
    throw classifyWriteFailure(reason, what);
  }
}

/**
 * Pauses before each resend of a write whose outcome is unknown: three
 * resends, short enough to stay within a typical call deadline.
 */
const RESEND_BACKOFF_MS = [50, 150, 400] as const;

/** A new idempotency key: a random UUID from the runtime's Web Crypto. */
export function newIdempotencyKey(): string {
  return globalThis.crypto.randomUUID();
}

/**
 * Sends a write that may be sent again, and sends it again while its
 * outcome is unknown because the connection failed (up to three times, 50,
 * 150 and 400 ms apart, never past the call's deadline or its
 * cancellation). Only for writes whose repeat changes nothing more than
 * the first did: a keyed write ({@link sentKeyedWrite}), or one that is
 * idempotent by itself (taking a lock one already holds). Only when every
 * resend failed does the caller see the {@link OutcomeUnknownError}.
 * `call.timeoutMs` bounds the whole write, resends included.
 */
export async function sentRepeatable<T>(
  what: () => string,
  call: CallOptions,
  send: (call: CallOptions) => Promise<T>,
  timers: TimerProvider = systemTimers,
): Promise<T> {
  const deadline =
    call.timeoutMs === undefined ? Number.POSITIVE_INFINITY : timers.now() + call.timeoutMs;
  for (let attempt = 0; ; attempt++) {
    const left = deadline - timers.now();
    const options =
      call.timeoutMs === undefined ? call : { ...call, timeoutMs: Math.max(1, Math.floor(left)) };
    try {
      return await send(options);
    } catch (reason) {
      const error = classifyWriteFailure(reason, what);
      const pause = RESEND_BACKOFF_MS[attempt];
      // Only a failed connection is worth a resend: a deadline or a
      // cancellation is the caller's limit, and a refusal is an answer.
      const resend =
        error instanceof OutcomeUnknownError &&
        error.code === Code.Unavailable &&
        pause !== undefined &&
        call.signal?.aborted !== true &&
        timers.now() + pause < deadline;
      if (!resend) throw error;
      await sleep(timers, pause, call.signal).catch(() => {
        throw error;
      });
    }
  }
}

/**
 * Sends a write under one idempotency key (`key`, a new one by default),
 * resent with the same key as {@link sentRepeatable} says. The server
 * applies a key once and answers a repeat with the first result, so the
 * caller sees the write applied exactly once.
 */
export function sentKeyedWrite<T>(
  what: () => string,
  call: CallOptions,
  send: (key: string, call: CallOptions) => Promise<T>,
  timers: TimerProvider = systemTimers,
  key: string = newIdempotencyKey(),
): Promise<T> {
  return sentRepeatable(what, call, (options) => send(key, options), timers);
}
