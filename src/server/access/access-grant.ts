/**
 * What the access check found a caller may do, for the handlers that
 * decide more than the table can: InitializeSession (create, or reopen)
 * and MintToken (which role, until when).
 */
import { createContextKey, type HandlerContext } from "@connectrpc/connect";
import type { Role } from "./roles.js";

/** The rights the access check granted one call. */
export type Grant =
  /** A worker (worker listener or worker token): any session, any right. */
  | { readonly kind: "worker" }
  /** session-id mode without a token: the session id opens everything, as it always did. */
  | { readonly kind: "session-id" }
  /** tokens mode without a token: may create a new session, nothing else. */
  | { readonly kind: "anonymous" }
  /** An external identity (a verified JWT's subject). */
  | { readonly kind: "identity"; readonly subject: string }
  /** An access token's rights in its session. */
  | {
      readonly kind: "token";
      readonly sessionId: string;
      readonly role: Role;
      /** Epoch milliseconds. */
      readonly expiresAt: number;
      readonly subject: string | undefined;
    };

/**
 * Where a handler finds its {@link Grant}. Unset (routes served without
 * the bridge's interceptors) it is session-id's: the id opens everything.
 */
export const grantKey = createContextKey<Grant>(
  { kind: "session-id" },
  { description: "access grant" },
);

/** The grant of a call. */
export function grantOf(ctx: HandlerContext): Grant {
  return ctx.values.get(grantKey);
}

/**
 * The role a grant holds in `sessionId`: owner for workers and the
 * session id alone (session-id mode), the token's role in its session,
 * undefined otherwise.
 */
export function roleIn(grant: Grant, sessionId: string): Role | undefined {
  switch (grant.kind) {
    case "worker":
    case "session-id":
      return "owner";
    case "token":
      return grant.sessionId === sessionId ? grant.role : undefined;
    default:
      return undefined;
  }
}
