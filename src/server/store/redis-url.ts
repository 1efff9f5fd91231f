/**
 * Redis URLs as `--store` accepts them: `redis://[user:password@]host[:port][/db]`
 * (`rediss://` for TLS), or a Redis Cluster as
 * `redis+cluster://[user:password@]host[:port][,host[:port]…]`
 * (`rediss+cluster://` for TLS), checked strictly at startup, put in one
 * canonical form and shown only with the password replaced.
 *
 * Messages never repeat what comes before the `@`: a mistyped URL is still
 * likely to hold a real password.
 */
import { isIP } from "node:net";

/** A Redis URL that passed {@link parseRedisUrl}. */
export interface RedisUrl {
  /**
   * Canonical form: lower-case scheme (ioredis turns TLS on only for a
   * lower-case `rediss://`), explicit port, the user info as written, the
   * database only when one was given.
   */
  readonly url: string;
  /** The same with the password replaced by `***`: safe to log and print. */
  readonly redacted: string;
  /** The password as written (percent-encoded), "" when there is none. */
  readonly password: string;
  /** For a Redis Cluster URL: how to reach it (absent for one server). */
  readonly cluster?: RedisClusterAddress;
}

/** A Redis Cluster as a `redis+cluster://` URL names it. */
export interface RedisClusterAddress {
  /** The nodes to discover the cluster from (any of them will do; more survive one being down). */
  readonly nodes: readonly { readonly host: string; readonly port: number }[];
  /** Decoded, "" for the default user. */
  readonly username: string;
  /** Decoded, "" for none. */
  readonly password: string;
  readonly tls: boolean;
}

const defaultPort = 6379;
// Redis's `databases` setting is an int; 16 unless configured otherwise.
const maxDb = 0x7fff_ffff;
const clusterForm = "redis+cluster://[user:password@]host[:port][,host[:port]…]";
const form = `redis://[user:password@]host[:port][/db] (rediss:// for TLS), or ${clusterForm} for a Redis Cluster`;
// RFC 3986 userinfo characters, ":" excluded (it separates user and password).
const userChars = /^(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*$/;
const passwordChars = /^(?:[A-Za-z0-9\-._~!$&'()*+,;=:]|%[0-9A-Fa-f]{2})*$/;
const hostName =
  /^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?$/;

/**
 * Checks a Redis URL and returns its canonical and redacted forms.
 *
 * @throws Error saying what is wrong, without the user info.
 *
 * @example
 * ```ts
 * parseRedisUrl("redis://app:s3cret@redis.internal/2").redacted;
 * // "redis://app:***@redis.internal:6379/2"
 * ```
 */
export function parseRedisUrl(raw: string): RedisUrl {
  const text = raw.trim();
  const schemeMatch = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/(.*)$/s.exec(text);
  if (schemeMatch === null) {
    // A bare word ("redis", "postgres") is safe to repeat; anything else may hold a secret.
    const shown = /^[A-Za-z0-9_.-]{1,32}$/.test(text) ? `"${text}" is not a URL; ` : "";
    throw new Error(`${shown}write ${form}`);
  }
  const scheme = (schemeMatch[1] as string).toLowerCase();
  const clustered = scheme === "redis+cluster" || scheme === "rediss+cluster";
  if (scheme !== "redis" && scheme !== "rediss" && !clustered) {
    throw new Error(
      `scheme "${scheme}:" is not redis:, rediss:, redis+cluster: or rediss+cluster:; write ${form}`,
    );
  }
  const rest = schemeMatch[2] as string;
  const at = rest.lastIndexOf("@");
  const userInfo = at === -1 ? undefined : rest.slice(0, at);
  const hostPart = at === -1 ? rest : rest.slice(at + 1);

  let user = "";
  let password = "";
  if (userInfo !== undefined) {
    const colon = userInfo.indexOf(":");
    if (colon === -1) {
      throw new Error(
        "the part before @ has no password; write user:password@ (or :password@ for the default user)",
      );
    }
    user = userInfo.slice(0, colon);
    password = userInfo.slice(colon + 1);
    if (password === "") {
      throw new Error("the password before @ is empty; leave out user:password@ to send none");
    }
    if (!userChars.test(user) || !passwordChars.test(password) || !decodes(user, password)) {
      throw new Error(
        "the user and password must be percent-encoded UTF-8 (@ as %40, / as %2F, ? as %3F, # as %23, % as %25, a space as %20, and : in the user as %3A)",
      );
    }
  }

  const query = hostPart.search(/[?#]/);
  if (query !== -1) {
    throw new Error(
      `"${hostPart.slice(query)}": query and fragment are not accepted; write ${form}`,
    );
  }
  const slash = hostPart.indexOf("/");
  const authority = slash === -1 ? hostPart : hostPart.slice(0, slash);
  const path = slash === -1 ? "" : hostPart.slice(slash + 1);

  if (clustered && slash !== -1) {
    throw new Error(`path "/${path}": a Redis Cluster has database 0 only; write ${clusterForm}`);
  }
  const addresses = (clustered ? authority.split(",") : [authority]).map(hostAndPortOf);
  let db: number | undefined;
  if (path !== "") {
    db = /^\d{1,10}$/.test(path) ? Number(path) : -1;
    if (db < 0 || db > maxDb) {
      throw new Error(
        `path "/${path}" is not a database number; write /0 to /15 (Redis has 16 unless configured otherwise) or nothing`,
      );
    }
  }

  const hostAndPort = addresses
    .map(({ host, port }) => `${host.includes(":") ? `[${host}]` : host}:${port}`)
    .join(",");
  const tail = `${hostAndPort}${db === undefined ? "" : `/${db}`}`;
  const cluster: { cluster?: RedisClusterAddress } = clustered
    ? {
        cluster: {
          nodes: addresses,
          username: decodeURIComponent(user),
          password: decodeURIComponent(password),
          tls: scheme === "rediss+cluster",
        },
      }
    : {};
  if (userInfo === undefined) {
    const url = `${scheme}://${tail}`;
    return { url, redacted: url, password: "", ...cluster };
  }
  return {
    url: `${scheme}://${user}:${password}@${tail}`,
    redacted: `${scheme}://${user}:***@${tail}`,
    password,
    ...cluster,
  };
}

/** One `host[:port]` of a URL, checked. */
function hostAndPortOf(authority: string): { host: string; port: number } {
  let host: string;
  let portText: string | undefined;
  if (authority.startsWith("[")) {
    const close = authority.indexOf("]");
    host = close === -1 ? "" : authority.slice(1, close);
    if (close === -1 || isIP(host) !== 6) {
      throw new Error(`host "${authority}" is not a bracketed IPv6 address`);
    }
    const after = authority.slice(close + 1);
    if (after !== "" && !after.startsWith(":")) {
      throw new Error(`"${after}" after the IPv6 address is not :port`);
    }
    portText = after === "" ? undefined : after.slice(1);
  } else {
    const colon = authority.indexOf(":");
    host = colon === -1 ? authority : authority.slice(0, colon);
    portText = colon === -1 ? undefined : authority.slice(colon + 1);
    if (portText?.includes(":")) {
      throw new Error(`host "${authority}": write an IPv6 address in brackets, e.g. [::1]:6379`);
    }
    if (host === "") throw new Error(`the URL has no host; write ${form}`);
    if (!hostName.test(host)) {
      throw new Error(`host "${host}" is not a host name or IP address`);
    }
  }

  let port = defaultPort;
  if (portText !== undefined) {
    port = /^\d{1,5}$/.test(portText) ? Number(portText) : 0;
    if (port < 1 || port > 65_535) {
      throw new Error(`port "${portText}" is not a number in 1..65535`);
    }
  }

  return { host, port };
}

/** Whether the percent-encoding decodes (ioredis decodes it and would throw otherwise). */
function decodes(...parts: string[]): boolean {
  try {
    for (const part of parts) decodeURIComponent(part);
    return true;
  } catch {
    // URIError: a %XX sequence that is not UTF-8; reported by the caller.
    return false;
  }
}
