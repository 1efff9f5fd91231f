/**
 * Access refusals as a typed error: the bridge refuses a call it does not
 * allow with UNAUTHENTICATED or PERMISSION_DENIED and an `AccessDenied`
 * detail naming the role the call needed; the client turns such an error
 * into an {@link AccessError} carrying that role, so an app can say "ask
 * the owner for edit rights" without reading the message.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { AccessDeniedSchema, AccessRole } from "../gen/snakepit/bridge/bridge_pb.js";

/** A caller's rights in one session, lowest first, each holding those before it. */
export type AccessRoleName = "viewer" | "editor" | "tuner" | "owner";

/** Every role, lowest first. */
export const accessRoles: readonly AccessRoleName[] = Object.freeze([
  "viewer",
  "editor",
  "tuner",
  "owner",
]);

/** A role's wire form. */
export function wireRole(role: AccessRoleName): AccessRole {
  return (accessRoles.indexOf(role) + 1) as AccessRole;
}

/** A role from its wire form; undefined for none. */
export function roleName(role: AccessRole): AccessRoleName | undefined {
  return role === AccessRole.UNSPECIFIED ? undefined : accessRoles[role - 1];
}

/** Marks access errors, also across copies of this module. */
const brand = Symbol.for("unified-bridge.AccessError");

/**
 * The bridge refused a call for lack of access: no token or a bad one
 * (`code` UNAUTHENTICATED), or a token whose role or session does not
 * allow the call (PERMISSION_DENIED).
 *
 * @example
 * ```ts
 * try {
 *   await ctx.set("temperature", 0.9);
 * } catch (e) {
 *   if (e instanceof AccessError && e.requiredRole !== undefined) {
 *     showNotice(`Changing this needs the ${e.requiredRole} role`);
 *   }
 * }
 * ```
 */
export class AccessError extends ConnectError {
  // (name stays "ConnectError": connect tells its errors by their name
  // across copies of the package, and `ConnectError.from` must keep this
  // one as it is.)

  /** The role the call needed; undefined when no role would do (another session's token). */
  readonly requiredRole: AccessRoleName | undefined;
  /** The role the token granted; undefined without a valid token. */
  readonly grantedRole: AccessRoleName | undefined;
  /** The RPC refused, e.g. "SetVariable". */
  readonly method: string;

  constructor(
    error: ConnectError,
    detail: { requiredRole: AccessRole; grantedRole: AccessRole; method: string },
  ) {
    super(error.rawMessage, error.code, error.metadata, undefined, error);
    this.details.push(...error.details);
    this.requiredRole = roleName(detail.requiredRole);
    this.grantedRole = roleName(detail.grantedRole);
    this.method = detail.method;
    // It is the server's answer, as the error it replaces was: callers that
    // tell refusals from broken connections (fromServerReply) see it so.
    this.isWireError = error.isWireError;
    this[brand] = true;
  }

  /**
   * `instanceof AccessError` holds for access errors only: ConnectError's
   * own check, which this class would inherit, holds for any ConnectError.
   */
  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === "object" && value !== null && brand in value;
  }

  private readonly [brand]: true;
}

/**
 * `error` as an {@link AccessError} when it is an access refusal with its
 * detail, else `error` unchanged.
 */
export function asAccessError(error: unknown): unknown {
  if (
    !(error instanceof ConnectError) ||
    error instanceof AccessError ||
    (error.code !== Code.PermissionDenied && error.code !== Code.Unauthenticated)
  ) {
    return error;
  }
  const detail = error.findDetails(AccessDeniedSchema)[0];
  return detail === undefined ? error : new AccessError(error, detail);
}
