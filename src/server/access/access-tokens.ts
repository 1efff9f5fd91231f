/**
 * Access tokens: capabilities the bridge signs, each naming one session, a
 * role and an expiry. A token is a JWT (JWS compact form, HS256) with the
 * header `typ: "ub+jwt"` and the key id of the key that signed it; its
 * claims are `sid` (the session), `role`, `iat`, `exp` and, when the
 * session's owner was identified by an external JWT, `sub`.
 *
 * Keys rotate: the first key signs, every key verifies, so a new key is
 * put first and the old one stays until the tokens it signed have expired
 * (at most `--token-ttl`). Signing and verifying is jose's; the HMAC
 * comparison is WebCrypto's, in constant time.
 */
import { createHash, createSecretKey, type KeyObject, randomBytes } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { decodeProtectedHeader, errors, type JWTPayload, jwtVerify, SignJWT } from "jose";
import { isRole, type Role } from "./roles.js";

/** The `typ` header of this bridge's tokens, which tells them from external JWTs. */
export const accessTokenType = "ub+jwt";

/** Who the tokens say issued them. */
const issuer = "unified-bridge";

/** What a verified access token grants. */
export interface AccessClaims {
  readonly sessionId: string;
  readonly role: Role;
  /** Epoch milliseconds. */
  readonly expiresAt: number;
  /** The identity the session's owner proved (an external JWT's `sub`), if any. */
  readonly subject: string | undefined;
}

/** What {@link AccessTokens.mint} makes. */
export interface MintedToken {
  readonly token: string;
  /** Epoch milliseconds. */
  readonly expiresAt: number;
}

/** Mints and verifies access tokens with a key ring. */
export interface AccessTokens {
  mint(grant: {
    readonly sessionId: string;
    readonly role: Role;
    /** Epoch milliseconds; whole seconds are kept. */
    readonly expiresAt: number;
    readonly subject?: string | undefined;
  }): Promise<MintedToken>;
  /**
   * The claims of a token this bridge signed, still valid.
   *
   * @throws ConnectError UNAUTHENTICATED saying what is wrong with it.
   */
  verify(token: string): Promise<AccessClaims>;
  /** Whether a key of this ring signed `token`'s header (its signature not checked). */
  isOurs(token: string): boolean;
  /** Whether the keys were made at start-up because none were configured. */
  readonly ephemeral: boolean;
}

interface RingKey {
  readonly kid: string;
  /** A KeyObject made once: jose would import raw bytes again on every call. */
  readonly secret: KeyObject;
}

/** Verified tokens remembered at once (a few hundred bytes each). */
const CACHE_ENTRIES = 4096;

/**
 * Creates the key ring from `keys` (the first signs). No keys: one random
 * key for this process only ({@link AccessTokens.ephemeral}), so tokens
 * die with it and no other replica accepts them.
 */
export function createAccessTokens(options: {
  readonly keys: readonly string[];
  readonly now?: () => number;
}): AccessTokens {
  const now = options.now ?? Date.now;
  const ephemeral = options.keys.length === 0;
  const source = ephemeral ? [randomBytes(32).toString("base64url")] : options.keys;
  const ring: RingKey[] = source.map((key) => ({
    kid: keyId(key),
    secret: createSecretKey(Buffer.from(key, "utf8")),
  }));
  const byKid = new Map(ring.map((k) => [k.kid, k]));
  const signer = ring[0] as RingKey;
  // Verifying costs an HMAC and some parsing on every call: a token seen
  // before is looked up instead, until it expires. Oldest first out.
  const cache = new Map<string, AccessClaims>();

  const verifyUncached = async (token: string): Promise<AccessClaims> => {
    const kid = headerOf(token)?.kid;
    const key = typeof kid === "string" ? byKid.get(kid) : undefined;
    if (key === undefined) {
      throw unauthenticated(
        "the access token was signed with a key this bridge does not hold (rotated out, or another deployment's): get a new token",
      );
    }
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, key.secret, {
        algorithms: ["HS256"],
        issuer,
        typ: accessTokenType,
        requiredClaims: ["exp", "sid", "role"],
        currentDate: new Date(now()),
      }));
    } catch (e) {
      throw unauthenticated(reasonOf(e, now()), e);
    }
    const { sid, role, exp, sub } = payload;
    if (typeof sid !== "string" || sid === "" || !isRole(role) || typeof exp !== "number") {
      throw unauthenticated("the access token's claims are not those of this bridge's tokens");
    }
    return {
      sessionId: sid,
      role,
      expiresAt: exp * 1000,
      subject: typeof sub === "string" && sub !== "" ? sub : undefined,
    };
  };

  return {
    ephemeral,
    async mint(grant) {
      const exp = Math.floor(grant.expiresAt / 1000);
      const jwt = new SignJWT({ sid: grant.sessionId, role: grant.role })
        .setProtectedHeader({ alg: "HS256", typ: accessTokenType, kid: signer.kid })
        .setIssuer(issuer)
        .setIssuedAt(Math.floor(now() / 1000))
        .setExpirationTime(exp);
      if (grant.subject !== undefined) jwt.setSubject(grant.subject);
      return { token: await jwt.sign(signer.secret), expiresAt: exp * 1000 };
    },
    async verify(token) {
      const cached = cache.get(token);
      if (cached !== undefined) {
        if (cached.expiresAt > now()) return cached;
        cache.delete(token);
      }
      const claims = await verifyUncached(token);
      if (cache.size >= CACHE_ENTRIES) {
        const oldest = cache.keys().next().value;
        if (oldest !== undefined) cache.delete(oldest);
      }
      cache.set(token, claims);
      return claims;
    },
    isOurs(token) {
      const header = headerOf(token);
      return header?.typ === accessTokenType && typeof header.kid === "string";
    },
  };
}

/**
 * A key's id: a digest of it, so the header names the key without telling
 * anything about it, and operators need not name keys.
 */
function keyId(key: string): string {
  return createHash("sha256")
    .update(`unified-bridge token key\0${key}`)
    .digest("base64url")
    .slice(0, 12);
}

function headerOf(token: string): { kid?: unknown; typ?: unknown } | undefined {
  try {
    return decodeProtectedHeader(token);
  } catch {
    // Not a JWS at all: the caller reports it as a malformed token.
    return undefined;
  }
}

/** What is wrong with a token jose refused, in words a caller can act on. */
function reasonOf(e: unknown, now: number): string {
  if (e instanceof errors.JWTExpired) {
    const exp = e.payload.exp;
    const ago =
      typeof exp === "number" ? ` ${Math.max(0, Math.round(now / 1000 - exp))} s ago` : "";
    return `the access token expired${ago}: get a new one (MintToken from an owner, or the app that gave it)`;
  }
  if (e instanceof errors.JWSSignatureVerificationFailed) {
    return "the access token's signature does not match: it was altered, or not signed by this bridge";
  }
  if (e instanceof errors.JWTClaimValidationFailed) {
    return `the access token's claims are not valid (${e.claim}: ${e.reason})`;
  }
  if (e instanceof errors.JOSEAlgNotAllowed) {
    return "the access token is not signed with HS256, the only algorithm this bridge signs with";
  }
  return "the bearer token is not a well-formed access token (a JWT in JWS compact form)";
}

/** An UNAUTHENTICATED refusal. */
export function unauthenticated(message: string, cause?: unknown): ConnectError {
  return new ConnectError(message, Code.Unauthenticated, undefined, undefined, cause);
}
