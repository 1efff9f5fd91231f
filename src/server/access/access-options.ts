/**
 * The access settings taken together, at startup: keys read from their
 * file, settings that need one another, and the identity key file checked,
 * so a bad setting stops the server with one message instead of failing
 * calls later.
 */
import type { AccessMode } from "./access-check.js";
import { loadIdentityVerifier } from "./identity.js";
import { readTokenKeyFile } from "./token-keys.js";

/** The access fields of the server config. */
export interface AccessSettings {
  access: AccessMode;
  tokenKeys: string[];
  tokenKeyFile: string;
  tokenTtlSeconds: number;
  jwtPublicKey: string;
  jwtIssuer: string;
  jwtAudience: string;
}

/**
 * Completes `config` in place (the keys of `tokenKeyFile` become
 * `tokenKeys`) and checks the settings together.
 *
 * @param name How messages name a setting, e.g. `--token-key / UB_TOKEN_KEY`.
 * @throws Error saying which settings to change.
 */
export function resolveAccessSettings(
  config: AccessSettings,
  name: (key: keyof AccessSettings) => string,
): void {
  if (config.tokenKeys.length > 0 && config.tokenKeyFile !== "") {
    throw new Error(
      `${name("tokenKeys")} and ${name("tokenKeyFile")} are both set; give the token keys by one of them only`,
    );
  }
  if (config.tokenKeyFile !== "") {
    try {
      config.tokenKeys = readTokenKeyFile(config.tokenKeyFile);
    } catch (e) {
      throw new Error(`${name("tokenKeyFile")}: ${(e as Error).message}`, { cause: e });
    }
  }
  if (config.access === "tokens" && config.tokenKeys.length === 0) {
    throw new Error(
      `${name("access")} is tokens, which needs a key to sign them: set ${name("tokenKeys")} or ${name("tokenKeyFile")} (openssl rand -base64 32), the same on every replica`,
    );
  }
  if (config.jwtPublicKey === "" && (config.jwtIssuer !== "" || config.jwtAudience !== "")) {
    throw new Error(
      `${name(config.jwtIssuer !== "" ? "jwtIssuer" : "jwtAudience")} checks identity JWTs, which need ${name("jwtPublicKey")}`,
    );
  }
  if (config.jwtPublicKey !== "") {
    try {
      loadIdentityVerifier({
        publicKeyFile: config.jwtPublicKey,
        issuer: config.jwtIssuer,
        audience: config.jwtAudience,
      });
    } catch (e) {
      throw new Error(`${name("jwtPublicKey")}: ${(e as Error).message}`, { cause: e });
    }
  }
}
