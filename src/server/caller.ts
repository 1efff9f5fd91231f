/**
 * The two kinds of caller. Public callers (browsers, Workers, anything
 * through Envoy) are anonymous: they hold session ids and may use their
 * sessions' variables and tools. Workers (snakepit Python workers, operators'
 * processes) are trusted: they reach the worker listener, which is bound to
 * an internal address, or present the worker token on the public port. Only
 * workers may register remote tools.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import {
  Code,
  ConnectError,
  type ContextValues,
  createContextKey,
  createContextValues,
  type HandlerContext,
} from "@connectrpc/connect";

/** Who is calling, as the listener and the request's credentials say. */
export interface Caller {
  readonly kind: "public" | "worker";
  /** A public caller that sent `authorization: Bearer …` that is not the worker token. */
  readonly badToken: boolean;
}

const anonymous: Caller = Object.freeze({ kind: "public", badToken: false });
const worker: Caller = Object.freeze({ kind: "worker", badToken: false });
const wrongToken: Caller = Object.freeze({ kind: "public", badToken: true });

/** Where a handler finds its {@link Caller}; public unless a listener says otherwise. */
export const callerKey = createContextKey<Caller>(anonymous, { description: "bridge caller" });

/**
 * Returns the `contextValues` function of a listener. On the worker
 * listener every caller is a worker. On the public port a caller is a
 * worker only with the right bearer token, compared in constant time (as
 * digests, so not even the token's length leaks).
 */
export function callerResolver(
  listener: "public" | "worker",
  workerToken: string,
): (req: { headers: Readonly<Record<string, string | string[] | undefined>> }) => ContextValues {
  if (listener === "worker") return () => createContextValues().set(callerKey, worker);
  const expected = workerToken === "" ? undefined : digest(workerToken);
  return (req) => {
    const values = createContextValues();
    const header = req.headers.authorization;
    const auth = Array.isArray(header) ? header[0] : header;
    if (auth === undefined || !/^bearer /i.test(auth)) return values;
    const ok = expected !== undefined && timingSafeEqual(digest(auth.slice(7).trim()), expected);
    return values.set(callerKey, ok ? worker : wrongToken);
  };
}

function digest(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}

/**
 * Refuses a worker-only operation to a public caller: UNAUTHENTICATED for
 * a wrong token, PERMISSION_DENIED otherwise, each saying how to call it.
 */
export function requireWorker(ctx: HandlerContext, operation: string): void {
  const caller = ctx.values.get(callerKey);
  if (caller.kind === "worker") return;
  if (caller.badToken) {
    throw new ConnectError(
      `${operation}: the bearer token is not this bridge's worker token`,
      Code.Unauthenticated,
    );
  }
  throw new ConnectError(
    `${operation} is for workers: call it on the bridge's worker listener (--worker-port) or send the worker token as authorization: Bearer <token>`,
    Code.PermissionDenied,
  );
}

/** Whether the call comes from a worker. */
export function isWorker(ctx: HandlerContext): boolean {
  return ctx.values.get(callerKey).kind === "worker";
}
