/**
 * The access decisions that need the session itself, for the two handlers
 * the table cannot decide alone: InitializeSession (who may create a
 * session, who may reopen one, which owner is recorded, who gets an owner
 * token back) and MintToken (which role, until when).
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { AccessRole } from "../../gen/snakepit/bridge/bridge_pb.js";
import type { SessionRecord } from "../store/session-store.js";
import { type AccessMode, refusal } from "./access-check.js";
import type { Grant } from "./access-grant.js";
import { roleIn } from "./access-grant.js";
import type { AccessTokens, MintedToken } from "./access-tokens.js";
import { covers, fromWireRole, type Role } from "./roles.js";

/**
 * The session metadata key naming the identity that created the session
 * (an identity JWT's `sub`). Only the bridge, and workers, set it.
 */
export const ownerMetadataKey = "owner_subject";

/** What InitializeSession may do for one grant. */
export interface OpenAccess {
  /** The metadata of a session this call creates (the owner recorded). */
  readonly metadata: Record<string, string>;
  readonly checkCreate: () => void;
  readonly checkReopen: (session: SessionRecord) => void;
}

/** Options of {@link createSessionAccess}. */
export interface SessionAccessOptions {
  readonly mode: AccessMode;
  readonly tokens: AccessTokens;
  /** Lifetime of owner tokens, and the longest MintToken grants (ms). */
  readonly tokenTtlMs: number;
  /** Creating a session needs an identity JWT (one is configured, in tokens mode). */
  readonly identityRequired: boolean;
  readonly now: () => number;
}

/** The session-level access decisions; see the module comment. */
export interface SessionAccess {
  /** @throws ConnectError when the request's metadata claims an owner it may not. */
  open(grant: Grant, metadata: Readonly<Record<string, string>>): OpenAccess;
  /** The owner token InitializeSession answers, if the caller gets one. */
  tokenAfterOpen(
    grant: Grant,
    session: SessionRecord,
    created: boolean,
  ): Promise<MintedToken | undefined>;
  /**
   * Mints a token for `session` of `role` (wire form), for `ttlSeconds`
   * (0: the default).
   *
   * @throws ConnectError INVALID_ARGUMENT or PERMISSION_DENIED saying why not.
   */
  mint(
    grant: Grant,
    session: SessionRecord,
    role: AccessRole,
    ttlSeconds: number,
  ): Promise<MintedToken & { readonly role: Role }>;
}

const refuseOpen = refusal("InitializeSession");
const refuseMint = refusal("MintToken");

/** Creates the session-level access decisions. */
export function createSessionAccess(options: SessionAccessOptions): SessionAccess {
  const { tokens, tokenTtlMs, now } = options;
  const ownerToken = (session: SessionRecord) =>
    tokens.mint({
      sessionId: session.id,
      role: "owner",
      expiresAt: now() + tokenTtlMs,
      subject: session.metadata[ownerMetadataKey],
    });
  return {
    open(grant, requested) {
      const metadata = { ...requested };
      if (grant.kind !== "worker" && Object.hasOwn(metadata, ownerMetadataKey)) {
        throw new ConnectError(
          `metadata key '${ownerMetadataKey}' is the bridge's: it records the identity that created the session (send an identity JWT instead)`,
          Code.InvalidArgument,
        );
      }
      if (grant.kind === "identity") metadata[ownerMetadataKey] = grant.subject;
      return {
        metadata,
        checkCreate: () => {
          if (grant.kind === "token") {
            throw refuseOpen(
              Code.PermissionDenied,
              "the session of this access token has ended; a token cannot create it again: open a new session",
              undefined,
              grant.role,
            );
          }
          if (
            options.identityRequired &&
            (grant.kind === "anonymous" || grant.kind === "session-id")
          ) {
            throw refuseOpen(
              Code.Unauthenticated,
              "creating a session on this bridge needs an identity: send your identity provider's JWT as authorization: Bearer <jwt>",
            );
          }
        },
        checkReopen: (session) => {
          const owner = session.metadata[ownerMetadataKey];
          if (grant.kind === "anonymous") {
            throw refuseOpen(
              Code.PermissionDenied,
              "the session exists; reopening it needs an access token for it (authorization: Bearer <token>)",
              "viewer",
            );
          }
          if (grant.kind === "identity" && owner !== grant.subject) {
            throw refuseOpen(
              Code.PermissionDenied,
              "the session was created by another identity: only its owner may reopen it",
            );
          }
        },
      };
    },

    async tokenAfterOpen(grant, session, created) {
      // In session-id mode the id opens the session anyway; a token is
      // answered only when the keys are configured, since one signed with
      // this process's random key fails on every other replica and after a
      // restart, where the id alone would have worked.
      if (options.mode === "session-id" && tokens.ephemeral) return undefined;
      // Who had every right in the session before the call gets them in a
      // token: its creator, a worker, the owner's identity, and in
      // session-id mode whoever named it. A token's holder keeps its token.
      if (created || grant.kind === "worker" || grant.kind === "identity") {
        return ownerToken(session);
      }
      return grant.kind === "session-id" ? ownerToken(session) : undefined;
    },

    async mint(grant, session, wireRole, ttlSeconds) {
      const role = fromWireRole(wireRole);
      if (role === undefined) {
        throw new ConnectError(
          "role must be one of ACCESS_ROLE_VIEWER, ACCESS_ROLE_EDITOR, ACCESS_ROLE_TUNER, ACCESS_ROLE_OWNER",
          Code.InvalidArgument,
        );
      }
      const maxSeconds = Math.floor(tokenTtlMs / 1000);
      if (!Number.isInteger(ttlSeconds) || ttlSeconds < 0 || ttlSeconds > maxSeconds) {
        throw new ConnectError(
          `ttl_seconds must be between 0 (the server's default) and ${maxSeconds} (--token-ttl), got ${ttlSeconds}`,
          Code.InvalidArgument,
        );
      }
      const own = roleIn(grant, session.id);
      if (own === undefined || !covers(own, role)) {
        throw refuseMint(
          Code.PermissionDenied,
          `MintToken: a token of role ${role} needs that role or higher in the session${own === undefined ? "" : `; the caller has ${own}`}`,
          role,
          own,
        );
      }
      const wanted = now() + (ttlSeconds === 0 ? tokenTtlMs : ttlSeconds * 1000);
      // A token never outlives the token that minted it: a share link made
      // from a token expires with it at the latest.
      const expiresAt = grant.kind === "token" ? Math.min(wanted, grant.expiresAt) : wanted;
      const subject = grant.kind === "token" ? grant.subject : session.metadata[ownerMetadataKey];
      const minted = await tokens.mint({ sessionId: session.id, role, expiresAt, subject });
      return { ...minted, role };
    },
  };
}
