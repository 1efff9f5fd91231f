/**
 * What the front checks and evens out in a request's head before any
 * handler sees it, for headers that the libraries behind it would
 * otherwise trip over: a malformed authority (connect-node builds the
 * request URL with `new URL`, which throws), and a deadline longer than a
 * Node timer can hold (Node fires such a timer after 1 ms, so a client
 * asking for 11,000 years would get DEADLINE_EXCEEDED at once).
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
 * legal and gets `fallback`, the listener's own address.
 */
export function checkAuthority(
  authority: string | undefined,
  fallback: string,
): { ok: true; authority: string } | { ok: false; error: ConnectError } {
  if (authority === undefined || authority === "") return { ok: true, authority: fallback };
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

/** The longest delay a Node timer holds: 2^31 − 1 ms, about 24.8 days. */
export const maxTimerMs = 2 ** 31 - 1;

const grpcUnitMs: Readonly<Record<string, number>> = {
  H: 3_600_000,
  M: 60_000,
  S: 1000,
  m: 1,
  u: 0.001,
  n: 0.000_001,
};

/**
 * Clamps a `grpc-timeout` or `connect-timeout-ms` longer than
 * {@link maxTimerMs} to that (`596H`, `2147483647`): the deadline the
 * client asked for is beyond any call's life, and the protocols' own
 * parsers still judge malformed values.
 */
export function clampDeadline(headers: Record<string, string | string[] | undefined>): void {
  const grpc = headers["grpc-timeout"];
  if (typeof grpc === "string") {
    const m = /^(\d{1,8})([HMSmun])$/.exec(grpc);
    if (m !== null && Number(m[1]) * (grpcUnitMs[m[2] as string] ?? 0) > maxTimerMs) {
      headers["grpc-timeout"] = `${Math.floor(maxTimerMs / 3_600_000)}H`;
    }
  }
  const connect = headers["connect-timeout-ms"];
  if (typeof connect === "string" && /^\d{1,10}$/.test(connect) && Number(connect) > maxTimerMs) {
    headers["connect-timeout-ms"] = String(maxTimerMs);
  }
}

/** `::1:8080` → `[::1]:8080`, `::1` → `[::1]`; undefined for anything else. */
function bareIpv6(authority: string): string | undefined {
  if (isIP(authority) === 6) return `[${authority}]`;
  const colon = authority.lastIndexOf(":");
  const port = authority.slice(colon + 1);
  const host = authority.slice(0, colon);
  return /^[0-9]{1,5}$/.test(port) && isIP(host) === 6 ? `[${host}]:${port}` : undefined;
}
