/**
 * Worker addresses: where the bridge forwards a remote tool's calls. A worker
 * address names a host and a port and nothing else, and must match the
 * operator's allowlist, so a registration can never point the bridge at
 * something it should not talk to (a cloud metadata endpoint, Redis, the
 * bridge itself).
 */
import { isIP } from "node:net";
import { Code, ConnectError } from "@connectrpc/connect";
import { quote } from "../common/message-text.js";

/**
 * A parsed worker address. `host` is canonical, as the connection will use
 * it: lower-case, IPv4 in dotted decimal (whatever spelling was given),
 * IPv6 compressed and without brackets, an IPv4-mapped IPv6 as its IPv4.
 */
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
  const lower = host.toLowerCase();
  if (isIP(lower) === 0 && !HOST_NAME.test(lower)) throw bad("has an invalid host name");
  const h = canonicalHost(lower);
  if (h === undefined) throw bad("has an invalid host name");
  const display = isIP(h) === 6 ? `[${h}]:${n}` : `${h}:${n}`;
  return { host: h, port: n, url: `http://${display}`, display };
}

/**
 * The host as the forwarding transport will connect to it. The transport
 * reads addresses the WHATWG URL way, where `2130706433`, `0177.0.0.1` and
 * `0x7f.1` all mean 127.0.0.1: every check must see that address, not the
 * spelling. Undefined for a host no URL can hold.
 */
export function canonicalHost(host: string): string | undefined {
  let hostname: string;
  try {
    hostname = new URL(`http://${isIP(host) === 6 ? `[${host}]` : host}/`).hostname;
  } catch {
    return undefined;
  }
  if (!hostname.startsWith("[")) return hostname;
  const v6 = hostname.slice(1, -1);
  // An IPv4-mapped IPv6 address reaches the IPv4 host: name it as such.
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(v6);
  if (mapped === null) return v6;
  const hi = Number.parseInt(mapped[1] as string, 16);
  const lo = Number.parseInt(mapped[2] as string, 16);
  return [hi >> 8, hi & 0xff, lo >> 8, lo & 0xff].join(".");
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
  let exact = host;
  if (host !== "*") {
    const name = host.startsWith("*.") ? host.slice(2) : host;
    if (isIP(name) === 0 && !HOST_NAME.test(name)) throw fail("has an invalid host");
    if (host.startsWith("*.") && isIP(name) !== 0) throw fail("puts a wildcard before an IP");
    // Compared with canonical worker hosts, so written the same way.
    if (!host.startsWith("*.")) exact = canonicalHost(host) ?? host;
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
  return { host: exact, ports };
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

/** Hosts that reach this machine whatever the configuration says (`host` canonical). */
export function isLocalHost(host: string, ownHosts: readonly string[]): boolean {
  const h = host.toLowerCase();
  return (
    h === "localhost" ||
    h.endsWith(".localhost") ||
    h === "::" ||
    h === "::1" ||
    // 0.0.0.0/8 is "this host" when connected to.
    /^0\./.test(h) ||
    /^127\./.test(h) ||
    ownHosts.includes(h)
  );
}

/**
 * Ports of services a bridge host or its network commonly runs (Redis next
 * to the bridge, above all). A worker speaks gRPC on a port of its own:
 * these are admitted only by a pattern naming the port itself, never by a
 * range or `*`, so the default loopback allowlist cannot reach them.
 */
const SERVICE_PORTS: ReadonlyMap<number, string> = new Map([
  [22, "SSH"],
  [25, "SMTP"],
  [53, "DNS"],
  [2375, "Docker"],
  [2376, "Docker"],
  [2379, "etcd"],
  [3306, "MySQL"],
  [5432, "PostgreSQL"],
  [5672, "AMQP"],
  [6379, "Redis"],
  [6443, "the Kubernetes API"],
  [8500, "Consul"],
  [9092, "Kafka"],
  [9200, "Elasticsearch"],
  [10250, "the kubelet"],
  [11211, "memcached"],
  [26379, "Redis Sentinel"],
  [27017, "MongoDB"],
]);

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
      const matching = patterns.filter((p) => matchesPattern(address, p));
      if (matching.length === 0) {
        throw new ConnectError(
          `worker_address ${address.display} is not allowed: it matches no --worker-allow pattern (now: ${options.allow.join(", ") || "none"}); ask the operator to allow it`,
          Code.PermissionDenied,
        );
      }
      const service = SERVICE_PORTS.get(address.port);
      const named = matching.some(
        (p) => p.ports.from === address.port && p.ports.to === address.port,
      );
      if (service !== undefined && !named) {
        throw new ConnectError(
          `worker_address ${address.display} is not allowed: port ${address.port} is ${service}'s, which a --worker-allow pattern must name exactly (a range or * never admits it)`,
          Code.PermissionDenied,
        );
      }
      return address;
    },
  };
}
