/**
 * What the front checks in a request's authority before any handler sees
 * it: connect-node builds the request URL from it with `new URL`, which
 * throws on a malformed one (see `connectNodeAuthority` in edge-compat.ts,
 * which also holds the other header the front evens out, the deadline:
 * `clampDeadline`).
 */
import { isIP } from "node:net";
import { Code, ConnectError } from "@connectrpc/connect";

/**
 * RFC 3986 `host [":" port]` without user info: a registered name, an IPv4
 * address, or an IP literal in brackets. Percent-encoding is allowed in a
 * name, since the URL parser decides whether it is valid.
 */
const authorityPattern = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]+)(?::[0-9]{0,5})?$/;

/**
 * The authority to build the request URL with (what connect-node's
 * adapter passes to `new URL`, which throws on a malformed one), or an
 * error for a malformed one. A request without any authority (HTTP/1.0
 * without `Host`; an HTTP/2 request without `:authority` or `host`) is
 * legal and gets `fallback()`, the listener's own address (asked for only
 * then: reading a socket's local address is a system call).
 */
export function checkAuthority(
  authority: string | undefined,
  fallback: () => string,
): { ok: true; authority: string } | { ok: false; error: ConnectError } {
  if (authority === undefined || authority === "") return { ok: true, authority: fallback() };
  // Node's own HTTP/2 client sends an IPv6 peer's address unbracketed
  // (`::1:50051`): read as the address and port it means.
  const bare = bareIpv6(authority);
  if (bare !== undefined) return { ok: true, authority: bare };
  if (authorityPattern.test(authority) && URL.canParse(`http://${authority}/`)) {
    return { ok: true, authority };
  }
  return {
    ok: false,
    error: new ConnectError(
      "the request's Host header (HTTP/2: :authority) is not a valid host[:port]; send the server's name or address, e.g. bridge.example:50051",
      Code.InvalidArgument,
    ),
  };
}

/** The address a request came in on, as an authority (`host:port`). */
export function ownAuthority(socket: {
  readonly localAddress?: string | undefined;
  readonly localPort?: number | undefined;
}): string {
  const { localAddress = "localhost", localPort } = socket;
  const host = localAddress.includes(":") ? `[${localAddress}]` : localAddress;
  return localPort === undefined ? host : `${host}:${localPort}`;
}

/** `::1:8080` → `[::1]:8080`, `::1` → `[::1]`; undefined for anything else. */
function bareIpv6(authority: string): string | undefined {
  // An IPv6 address has two colons at least: a name or an IPv4 address,
  // with or without a port (every request's case), need no parsing here.
  const first = authority.indexOf(":");
  if (first === -1 || authority.indexOf(":", first + 1) === -1) return undefined;
  if (isIP(authority) === 6) return `[${authority}]`;
  const colon = authority.lastIndexOf(":");
  const port = authority.slice(colon + 1);
  const host = authority.slice(0, colon);
  return /^[0-9]{1,5}$/.test(port) && isIP(host) === 6 ? `[${host}]:${port}` : undefined;
}
