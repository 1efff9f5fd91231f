/**
 * The access roles, lowest first: each holds every right of the roles
 * before it. Tokens carry a role's name; the wire carries the
 * `AccessRole` enum, whose numbers are the same order.
 */
import { AccessRole } from "../../gen/snakepit/bridge/bridge_pb.js";

/** A caller's rights in one session. */
export type Role = "viewer" | "editor" | "tuner" | "owner";

/** Every role, lowest first. */
export const roles: readonly Role[] = Object.freeze(["viewer", "editor", "tuner", "owner"]);

const rank: Readonly<Record<Role, number>> = { viewer: 1, editor: 2, tuner: 3, owner: 4 };

/** Whether `value` names a role. */
export function isRole(value: unknown): value is Role {
  return typeof value === "string" && Object.hasOwn(rank, value);
}

/** Whether `granted` includes every right of `required`. */
export function covers(granted: Role, required: Role): boolean {
  return rank[granted] >= rank[required];
}

/** The higher of two roles. */
export function higher(a: Role, b: Role): Role {
  return rank[a] >= rank[b] ? a : b;
}

/** The wire form of a role (none: UNSPECIFIED). */
export function toWireRole(role: Role | undefined): AccessRole {
  return role === undefined ? AccessRole.UNSPECIFIED : (rank[role] as AccessRole);
}

/** A role from its wire form; undefined for UNSPECIFIED and unknown numbers. */
export function fromWireRole(role: AccessRole): Role | undefined {
  return roles[role - 1];
}
