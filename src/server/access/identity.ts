/**
 * External identity: JWTs from an identity provider, verified with a public
 * key the operator configured (`--jwt-public-key`: a PEM public key or
 * certificate, or a JWKS file), never fetched over the network. A verified
 * JWT's `sub` becomes the owner of the sessions it creates, and only that
 * subject may reopen them.
 */
import { createPublicKey, type KeyObject } from "node:crypto";
import { closeSync, openSync, readSync } from "node:fs";
import { createLocalJWKSet, errors, type JSONWebKeySet, jwtVerify } from "jose";
import { unauthenticated } from "./access-tokens.js";

/** Verifies identity JWTs. */
export interface IdentityVerifier {
  /**
   * The subject of a valid JWT.
   *
   * @throws ConnectError UNAUTHENTICATED saying what is wrong with it.
   */
  verify(token: string): Promise<string>;
}

/** Options of {@link loadIdentityVerifier}. */
export interface IdentityOptions {
  /** A PEM public key or certificate, or a JWKS (JSON) file. */
  readonly publicKeyFile: string;
  /** The `iss` every JWT must carry; empty: not checked. */
  readonly issuer: string;
  /** An `aud` every JWT must carry; empty: not checked. */
  readonly audience: string;
  readonly now?: () => number;
}

// A key or a key set is a few kilobytes: more is the wrong file.
const MAX_KEY_FILE_BYTES = 256 * 1024;

/**
 * Reads the key file (synchronously, at start-up) and returns the verifier.
 *
 * @throws Error naming the file and what is wrong with it.
 */
export function loadIdentityVerifier(options: IdentityOptions): IdentityVerifier {
  const now = options.now ?? Date.now;
  const text = readKeyFile(options.publicKeyFile);
  const key = parseKey(text, options.publicKeyFile);
  const verifyOptions = {
    ...(options.issuer === "" ? {} : { issuer: options.issuer }),
    ...(options.audience === "" ? {} : { audience: options.audience }),
    requiredClaims: ["sub", "exp"],
  };
  return {
    async verify(token) {
      try {
        const currentDate = new Date(now());
        const { payload } =
          key.kind === "jwks"
            ? await jwtVerify(token, key.set, { ...verifyOptions, currentDate })
            : await jwtVerify(token, key.key, {
                ...verifyOptions,
                algorithms: key.algorithms,
                currentDate,
              });
        if (typeof payload.sub !== "string" || payload.sub === "" || payload.sub.length > 256) {
          throw unauthenticated("the identity token's sub must be 1 to 256 characters");
        }
        return payload.sub;
      } catch (e) {
        if (e instanceof Error && e.name === "ConnectError") throw e;
        throw unauthenticated(reasonOf(e), e);
      }
    },
  };
}

type ParsedKey =
  | { readonly kind: "jwks"; readonly set: ReturnType<typeof createLocalJWKSet> }
  | { readonly kind: "pem"; readonly key: KeyObject; readonly algorithms: string[] };

function parseKey(text: string, file: string): ParsedKey {
  const trimmed = text.trim();
  if (trimmed.startsWith("{")) {
    let jwks: JSONWebKeySet;
    try {
      jwks = JSON.parse(trimmed) as JSONWebKeySet;
    } catch (e) {
      throw new Error(`${file}: not valid JSON (${(e as Error).message}); expected a JWKS`);
    }
    if (!Array.isArray(jwks.keys) || jwks.keys.length === 0) {
      throw new Error(`${file}: a JWKS needs a non-empty "keys" array`);
    }
    if (jwks.keys.some((k) => k.kty === "oct" || "d" in k)) {
      throw new Error(`${file}: holds a secret or private key; give the public keys only`);
    }
    return { kind: "jwks", set: createLocalJWKSet(jwks) };
  }
  let key: KeyObject;
  try {
    key = createPublicKey(trimmed);
  } catch (e) {
    throw new Error(
      `${file}: neither a PEM public key or certificate nor a JWKS (${(e as Error).message})`,
    );
  }
  return { kind: "pem", key, algorithms: algorithmsOf(key, file) };
}

/** The JWS algorithms a public key verifies (never HMAC, never none). */
function algorithmsOf(key: KeyObject, file: string): string[] {
  switch (key.asymmetricKeyType) {
    case "rsa":
      return ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"];
    case "rsa-pss":
      return ["PS256", "PS384", "PS512"];
    case "ed25519":
      return ["EdDSA", "Ed25519"];
    case "ec": {
      const curve = key.asymmetricKeyDetails?.namedCurve;
      const alg = { prime256v1: "ES256", secp384r1: "ES384", secp521r1: "ES512" }[curve ?? ""];
      if (alg !== undefined) return [alg];
      break;
    }
  }
  throw new Error(
    `${file}: a ${key.asymmetricKeyType ?? "unknown"} key; use RSA, EC (P-256, P-384, P-521) or Ed25519`,
  );
}

function readKeyFile(file: string): string {
  let fd: number;
  try {
    fd = openSync(file, "r");
  } catch (e) {
    throw new Error(`cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  try {
    const buffer = Buffer.alloc(MAX_KEY_FILE_BYTES + 1);
    const length = readSync(fd, buffer, 0, buffer.length, null);
    if (length > MAX_KEY_FILE_BYTES) {
      throw new Error(`${file} is over ${MAX_KEY_FILE_BYTES} bytes; it must hold public keys only`);
    }
    return buffer.toString("utf8", 0, length);
  } finally {
    closeSync(fd);
  }
}

function reasonOf(e: unknown): string {
  if (e instanceof errors.JWTExpired) return "the identity token expired: sign in again";
  if (e instanceof errors.JWTClaimValidationFailed) {
    return `the identity token's ${e.claim} claim is not accepted (${e.reason})`;
  }
  if (e instanceof errors.JWSSignatureVerificationFailed || e instanceof errors.JWKSNoMatchingKey) {
    return "the identity token's signature does not verify with the configured public key";
  }
  if (e instanceof errors.JOSEAlgNotAllowed || e instanceof errors.JOSENotSupported) {
    return "the identity token's algorithm does not fit the configured public key";
  }
  return "the bearer token is not a well-formed identity token (a JWT in JWS compact form)";
}
