/**
 * The access token a SessionContext sends: given once (`token`), fetched
 * from the app (`getToken`, fetched again shortly before it expires), or
 * the owner token the bridge answered when the context created its
 * session. Every call, unary or streaming, carries it as
 * `authorization: Bearer <token>`, and access refusals come back as
 * {@link AccessError}s.
 */
import { Code, ConnectError, type StreamResponse, type Transport } from "@connectrpc/connect";
import { type AccessRoleName, accessRoles, asAccessError } from "./access-error.js";
import type { TimerProvider } from "./timers.js";

/** What a token says about itself (read without verifying: the bridge verifies). */
export interface TokenClaims {
  readonly sessionId: string | undefined;
  readonly role: AccessRoleName | undefined;
  /** Epoch milliseconds; undefined when the token does not say. */
  readonly expiresAt: number | undefined;
}

/**
 * The claims of a bridge access token (a JWT), decoded without checking
 * its signature: for choosing what to show, never for deciding access,
 * which the bridge does on every call.
 */
export function tokenClaims(token: string): TokenClaims {
  const none = { sessionId: undefined, role: undefined, expiresAt: undefined };
  const payload = token.split(".")[1];
  if (payload === undefined) return none;
  let claims: { sid?: unknown; role?: unknown; exp?: unknown };
  // By hand, not jose's decodeJwt: that adds 0.5 KiB gzipped to a browser
  // bundle (measured with test/client/bundle.test.ts) for three claims.
  try {
    const base64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    claims = JSON.parse(new TextDecoder().decode(bytes)) as typeof claims;
  } catch {
    // Not a JWT the client can read: the bridge will say what is wrong.
    return none;
  }
  const role = accessRoles.find((r) => r === claims.role);
  return {
    sessionId: typeof claims.sid === "string" ? claims.sid : undefined,
    role,
    expiresAt: typeof claims.exp === "number" ? claims.exp * 1000 : undefined,
  };
}

/** Where a context's token comes from. */
export interface TokenSource {
  /** The token to send now, fetched again first when it is about to expire. */
  current(): Promise<string | undefined>;
  /** The last token known. */
  readonly token: string | undefined;
  /** Takes the owner token the bridge answered, unless the app gives the tokens. */
  adopt(token: string): void;
}

/** Options of {@link createTokenSource}. */
export interface TokenSourceOptions {
  readonly token?: string | undefined;
  readonly getToken?: (() => Promise<string>) | undefined;
  /** A token from `getToken` is fetched again when less than this is left (ms). */
  readonly refreshBeforeMs: number;
  readonly timers: TimerProvider;
}

/** Creates the token source of a context. */
export function createTokenSource(options: TokenSourceOptions): TokenSource {
  const { getToken, refreshBeforeMs, timers } = options;
  let token = options.token;
  let expiresAt = token === undefined ? undefined : tokenClaims(token).expiresAt;
  // Calls made while a token is fetched share the fetch.
  let fetching: Promise<string> | undefined;

  const fetch = (): Promise<string> => {
    if (getToken === undefined) throw new Error("unreachable: no getToken");
    fetching ??= getToken()
      .then((fresh) => {
        if (typeof fresh !== "string" || fresh === "") {
          throw new ConnectError("getToken resolved to no token", Code.Unauthenticated);
        }
        token = fresh;
        expiresAt = tokenClaims(fresh).expiresAt;
        return fresh;
      })
      .catch((reason: unknown) => {
        throw reason instanceof ConnectError
          ? reason
          : new ConnectError(
              `getToken failed: ${reason instanceof Error ? reason.message : String(reason)}`,
              Code.Unauthenticated,
              undefined,
              undefined,
              reason,
            );
      })
      .finally(() => {
        fetching = undefined;
      });
    return fetching;
  };

  return {
    async current() {
      if (getToken === undefined) return token;
      const fresh =
        token !== undefined &&
        (expiresAt === undefined || expiresAt - timers.now() > refreshBeforeMs);
      return fresh ? token : fetch();
    },
    get token() {
      return token;
    },
    adopt(answered) {
      if (options.token !== undefined || getToken !== undefined || answered === "") return;
      token = answered;
      expiresAt = tokenClaims(answered).expiresAt;
    },
  };
}

/**
 * Wraps `transport` so that every call carries the source's token (a call
 * given its own `authorization` header keeps it) and access refusals
 * become {@link AccessError}s.
 */
export function withAccessToken(transport: Transport, source: TokenSource): Transport {
  const withToken = async (header: HeadersInit | undefined): Promise<HeadersInit | undefined> => {
    const token = await source.current();
    if (token === undefined) return header;
    const headers = new Headers(header);
    if (!headers.has("authorization")) headers.set("authorization", `Bearer ${token}`);
    return headers;
  };
  return {
    unary: async (method, signal, timeoutMs, header, input, contextValues) => {
      const headers = await withToken(header);
      return transport
        .unary(method, signal, timeoutMs, headers, input, contextValues)
        .catch((reason: unknown) => {
          throw asAccessError(reason);
        });
    },
    stream: async (method, signal, timeoutMs, header, input, contextValues) => {
      const headers = await withToken(header);
      return transport.stream(method, signal, timeoutMs, headers, input, contextValues).then(
        (response) =>
          ({
            ...response,
            message: accessErrors(response.message),
          }) as StreamResponse<typeof method.input, typeof method.output>,
        (reason: unknown) => {
          throw asAccessError(reason);
        },
      );
    },
  };
}

async function* accessErrors<T>(messages: AsyncIterable<T>): AsyncIterable<T> {
  try {
    yield* messages;
  } catch (reason) {
    throw asAccessError(reason);
  }
}
