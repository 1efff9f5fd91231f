/**
 * Worker addresses: where the bridge forwards a remote tool's calls. A worker
 * address names a host and a port and nothing else, and must match the
 * operator's allowlist, so a registration can never point the bridge at
 * something it should not talk to (a cloud metadata endpoint, Redis, the
 * bridge itself).
 */
import { isIP } from "node:net";
import { Code, ConnectError } from "@connectrpc/connect";
import { quote } from "../limits.js";

/** A parsed worker address. `host` is lower-case; IPv6 without brackets. */
export interface WorkerAddress {
  readonly host: string;
  readonly port: number;
  /** `http://host:port`, as the forwarding transport takes it. */
  readonly url: string;
  /** `host:port` (IPv6 in brackets), for logs and the audit trail. */
  readonly display: string;
}

/** One `--worker-allow` entry. */
export interface AddressPattern {
  /** Exact host, `*` (any) or `*.suffix` (any name under suffix). */
  readonly host: string;
  readonly ports: { readonly from: number; readonly to: number };
}

const HOST_NAME =
  /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;

/**
 * Parses `host:port`, `[v6]:port` or `http://host:port[/]`. Refuses user
 * info, paths, queries, other schemes and ports outside 1..65535, each with a
 * message saying what is accepted.
 */
export function parseWorkerAddress(raw: string): WorkerAddress {
  // Credentials in the text are never repeated (messages reach logs).
  const shown = raw.includes("@") ? "" : ` ${quote(raw, 100)}`;
  const bad = (why: string) =>
    new ConnectError(
      `worker_address${shown} ${why}; give the worker's gRPC host:port, e.g. 127.0.0.1:50100`,
      Code.InvalidArgument,
    );
  let text = raw.trim();
  if (text === "") throw bad("is empty");
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(text);
  if (scheme !== null) {
    if (scheme[1]?.toLowerCase() !== "http") throw bad("has a scheme other than http://");
    text = text.slice(scheme[0].length);
    if (text.endsWith("/")) text = text.slice(0, -1);
  }
  if (text.includes("@")) throw bad("carries user info (credentials do not belong in an address)");
  if (/[/?#\s\\]/.test(text)) throw bad("has a path, query or space");
  const { host, port } = splitHostPort(text, bad);
  const n = /^\d{1,5}$/.test(port) ? Number(port) : Number.NaN;
  if (!(n >= 1 && n <= 65_535)) throw bad("needs a port between 1 and 65535");
  const h = host.toLowerCase();
  if (isIP(h) === 0 && !HOST_NAME.test(h)) throw bad("has an invalid host name");
  const display = isIP(h) === 6 ? `[${h}]:${n}` : `${h}:${n}`;
  return { host: h, port: n, url: `http://${display}`, display };
}

function splitHostPort(text: string, bad: (why: string) => Error): { host: string; port: string } {
  if (text.startsWith("[")) {
    const end = text.indexOf("]");
    if (end === -1 || text[end + 1] !== ":") throw bad("is not [ipv6]:port");
    const host = text.slice(1, end);
    if (isIP(host) !== 6) throw bad("has an invalid IPv6 address");
    return { host, port: text.slice(end + 2) };
  }
  const colon = text.lastIndexOf(":");
  if (colon <= 0 || text.indexOf(":") !== colon) throw bad("is not host:port");
  return { host: text.slice(0, colon), port: text.slice(colon + 1) };
}

/**
 * Parses a `--worker-allow` entry: `host:port` where host is an exact name
 * or IP, `*`, or `*.suffix`, and port is a number, a range `a-b` or `*`.
 *
 * @throws Error with a message for the configuration error.
 */
export function parseAddressPattern(raw: string): AddressPattern {
  const text = raw.trim().toLowerCase();
  const fail = (why: string) =>
    new Error(
      `"${raw}" ${why}; write host:port, e.g. 10.0.0.7:50100, *.workers.internal:*, [::1]:*`,
    );
  const { host, port } = splitHostPort(text, fail);
  if (host !== "*") {
    const name = host.startsWith("*.") ? host.slice(2) : host;
    if (isIP(name) === 0 && !HOST_NAME.test(name)) throw fail("has an invalid host");
    if (host.startsWith("*.") && isIP(name) !== 0) throw fail("puts a wildcard before an IP");
  }
  let ports: { from: number; to: number };
  if (port === "*") ports = { from: 1, to: 65_535 };
  else {
    const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(port);
    const from = Number(m?.[1]);
    const to = m?.[2] === undefined ? from : Number(m[2]);
    if (m === null || !(from >= 1 && to <= 65_535 && from <= to)) {
      throw fail("has an invalid port (a number, a range a-b, or *)");
    }
    ports = { from, to };
  }
  return { host, ports };
}

/** Whether an address matches a pattern. */
export function matchesPattern(address: WorkerAddress, pattern: AddressPattern): boolean {
  if (address.port < pattern.ports.from || address.port > pattern.ports.to) return false;
  if (pattern.host === "*") return true;
  if (pattern.host.startsWith("*.")) {
    return isIP(address.host) === 0 && address.host.endsWith(pattern.host.slice(1));
  }
  return address.host === pattern.host;
}

/** Hosts that reach this machine whatever the configuration says. */
export function isLocalHost(host: string, ownHosts: readonly string[]): boolean {
  const h = host.toLowerCase();
  return (
    h === "localhost" ||
    h.endsWith(".localhost") ||
    h === "0.0.0.0" ||
    h === "::" ||
    h === "::1" ||
    /^127\./.test(h) ||
    /^::ffff:127\./.test(h) ||
    ownHosts.includes(h)
  );
}

/** Checks worker addresses against the allowlist and the bridge's own ports. */
export interface WorkerAddressPolicy {
  /**
   * Parses and checks an address.
   *
   * @throws ConnectError INVALID_ARGUMENT (malformed) or PERMISSION_DENIED
   *   (not allowed), naming the setting that decides.
   */
  check(raw: string): WorkerAddress;
}

/**
 * Creates the policy. `ownPorts` is read at each check, since the bridge's
 * ports are known only once it listens (port 0 picks one).
 */
export function createWorkerAddressPolicy(options: {
  readonly allow: readonly string[];
  readonly ownHosts: () => readonly string[];
  readonly ownPorts: () => readonly number[];
}): WorkerAddressPolicy {
  const patterns = options.allow.map(parseAddressPattern);
  return {
    check(raw) {
      const address = parseWorkerAddress(raw);
      const ownHosts = options.ownHosts();
      if (options.ownPorts().includes(address.port) && isLocalHost(address.host, ownHosts)) {
        throw new ConnectError(
          `worker_address ${address.display} is this bridge itself; a tool's calls must go to a worker`,
          Code.PermissionDenied,
        );
      }
      if (!patterns.some((p) => matchesPattern(address, p))) {
        throw new ConnectError(
          `worker_address ${address.display} is not allowed: it matches no --worker-allow pattern (now: ${options.allow.join(", ") || "none"}); ask the operator to allow it`,
          Code.PermissionDenied,
        );
      }
      return address;
    },
  };
}
