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
  /**
   * The client's address: the peer's, or behind a trusted proxy the one the
   * proxy appended to x-forwarded-for. Per-client quotas count by it.
   */
  readonly client: string;
}

const anonymous: Caller = Object.freeze({ kind: "public", badToken: false, client: "" });

/** Where a handler finds its {@link Caller}; public unless a listener says otherwise. */
export const callerKey = createContextKey<Caller>(anonymous, { description: "bridge caller" });

/**
 * Returns the `contextValues` function of a listener. On the worker
 * listener every caller is a worker. On the public port a caller is a
 * worker only with the right bearer token, compared in constant time (as
 * digests, so not even the token's length leaks).
 */
export function callerResolver(options: {
  readonly listener: "public" | "worker";
  readonly workerToken: string;
  /** Peer addresses whose x-forwarded-for is believed (e.g. Envoy's). */
  readonly trustedProxies: readonly string[];
}): (req: CallerRequest) => ContextValues {
  const proxies = new Set(options.trustedProxies.map(normalizeAddress));
  const clientOf = (req: CallerRequest): string => {
    const peer = normalizeAddress(req.socket.remoteAddress ?? "");
    if (!proxies.has(peer)) return peer;
    const header = req.headers["x-forwarded-for"];
    const forwarded = (Array.isArray(header) ? header.join(",") : (header ?? "")).split(",");
    // The proxy appended the address it saw last; earlier entries are the client's say.
    const last = forwarded.at(-1)?.trim() ?? "";
    return last === "" ? peer : normalizeAddress(last);
  };
  if (options.listener === "worker") {
    return (req) =>
      createContextValues().set(callerKey, {
        kind: "worker",
        badToken: false,
        client: clientOf(req),
      });
  }
  const expected = options.workerToken === "" ? undefined : digest(options.workerToken);
  return (req) => {
    const client = clientOf(req);
    const header = req.headers.authorization;
    const auth = Array.isArray(header) ? header[0] : header;
    let caller: Caller = { kind: "public", badToken: false, client };
    if (auth !== undefined && /^bearer /i.test(auth)) {
      const ok = expected !== undefined && timingSafeEqual(digest(auth.slice(7).trim()), expected);
      caller = ok ? { kind: "worker", badToken: false, client } : { ...caller, badToken: true };
    }
    return createContextValues().set(callerKey, caller);
  };
}

/** What {@link callerResolver} reads of a request. */
export interface CallerRequest {
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly socket: { readonly remoteAddress?: string | undefined };
}

function normalizeAddress(address: string): string {
  const a = address.trim().toLowerCase();
  return a.startsWith("::ffff:") && a.includes(".") ? a.slice(7) : a;
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

/** The calling client's address (see {@link Caller.client}). */
export function clientOf(ctx: HandlerContext): string {
  return ctx.values.get(callerKey).client;
}
