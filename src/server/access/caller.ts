/**
 * The two kinds of caller. Public callers (browsers, Workers, anything
 * through Envoy) are anonymous: they hold session ids and may use their
 * sessions' variables and tools. Workers (snakepit Python workers, operators'
 * processes) are trusted: they reach the worker listener, which is bound to
 * an internal address, or present the worker token on the public port. Only
 * workers may register remote tools.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { isIP } from "node:net";
import {
  Code,
  ConnectError,
  type ContextValues,
  createContextKey,
  createContextValues,
  type HandlerContext,
} from "@connectrpc/connect";
import type { ServerTimers } from "../common/timers.js";
import { createLogSampler } from "../observability/log-sampler.js";
import type { Logger } from "../observability/logger.js";

/** Who is calling, as the listener and the request's credentials say. */
export interface Caller {
  readonly kind: "public" | "worker";
  /** A public caller that sent `authorization: Bearer …` that is not the worker token. */
  readonly badToken: boolean;
  /**
   * Who the client is for per-client quotas: its address (the peer's, or
   * behind a trusted proxy the one the proxy appended to x-forwarded-for),
   * grouped by network prefix ({@link clientKey}).
   */
  readonly client: string;
  /**
   * Set when the caller sent a bearer token while its client is cooling
   * down after too many wrong ones: the token was not compared.
   */
  readonly tokenThrottle: TokenThrottleState | undefined;
}

/** Why a client's bearer token went unchecked, for the refusal's message. */
export interface TokenThrottleState {
  /** Milliseconds until its tokens are compared again. */
  readonly waitMs: number;
  readonly maxFailures: number;
  readonly windowMs: number;
}

const anonymous: Caller = Object.freeze({
  kind: "public",
  badToken: false,
  client: "",
  tokenThrottle: undefined,
});

/** Where a handler finds its {@link Caller}; public unless a listener says otherwise. */
export const callerKey = createContextKey<Caller>(anonymous, { description: "bridge caller" });

/**
 * Returns the `contextValues` function of a listener. On the worker
 * listener every caller is a worker. On the public port a caller is a
 * worker only with the right bearer token, compared in constant time (as
 * digests, so not even the token's length leaks). A client that sent too
 * many wrong tokens has its tokens ignored for a cool-down
 * ({@link TokenThrottleOptions}), so guessing costs it minutes per handful.
 */
export function callerResolver(options: {
  readonly listener: "public" | "worker";
  readonly workerToken: string;
  /** Peer addresses whose x-forwarded-for is believed (e.g. Envoy's). */
  readonly trustedProxies: readonly string[];
  /** Prefix lengths clients are grouped by (default /32 and /64). */
  readonly clientPrefix?: ClientPrefix;
  /** How wrong tokens are throttled per client. */
  readonly tokenThrottle?: TokenThrottleOptions;
  /**
   * The throttle itself, when another check shares it (the access check
   * counts wrong access tokens in it); made from `tokenThrottle` if absent.
   */
  readonly throttle?: TokenThrottle;
  /** Told (sampled) when a client starts a cool-down. */
  readonly logger?: Logger;
  /** Times the log sampler's windows (default: Node's timers). */
  readonly timers?: ServerTimers;
}): (req: CallerRequest) => ContextValues {
  const prefix = options.clientPrefix ?? defaultClientPrefix;
  const peerClient = peerClientOf(options);
  const clientOf = (req: CallerRequest): string => {
    const peer = req.socket.remoteAddress ?? "";
    const direct = peerClient(peer);
    if (direct !== undefined) return direct;
    const header = req.headers["x-forwarded-for"];
    const forwarded = (Array.isArray(header) ? header.join(",") : (header ?? "")).split(",");
    // The proxy appended the address it saw last; earlier entries are the client's say.
    const last = forwarded.at(-1)?.trim() ?? "";
    return clientKey(last === "" ? peer : last, prefix);
  };
  if (options.listener === "worker") {
    return (req) =>
      createContextValues().set(callerKey, {
        kind: "worker",
        badToken: false,
        client: clientOf(req),
        tokenThrottle: undefined,
      });
  }
  const expected = options.workerToken === "" ? undefined : digest(options.workerToken);
  const throttle = options.throttle ?? createTokenThrottle(options.tokenThrottle);
  const throttled =
    options.logger === undefined
      ? undefined
      : createLogSampler(options.logger, {
          level: "warn",
          msg: "wrong worker tokens: a client's tokens go unchecked for a while",
          ...(options.timers === undefined ? {} : { timers: options.timers }),
        });
  return (req) => {
    const client = clientOf(req);
    const header = req.headers.authorization;
    const auth = Array.isArray(header) ? header[0] : header;
    let caller: Caller = { kind: "public", badToken: false, client, tokenThrottle: undefined };
    if (auth !== undefined && /^bearer /i.test(auth)) {
      const waiting = throttle.check(client);
      if (waiting !== undefined) {
        caller = { ...caller, tokenThrottle: waiting };
      } else if (isJws(auth.slice(7).trim())) {
        // An access or identity token (a JWT): never the worker token,
        // which cannot have that form (config-values.ts). The access check
        // verifies it, and counts it here when it is wrong.
      } else if (
        expected !== undefined &&
        timingSafeEqual(digest(auth.slice(7).trim()), expected)
      ) {
        throttle.succeeded(client);
        caller = { ...caller, kind: "worker" };
      } else {
        if (throttle.failed(client)) throttled?.report({ client, ...throttle.settings });
        caller = { ...caller, badToken: true };
      }
    }
    return createContextValues().set(callerKey, caller);
  };
}

/** Whether a bearer value has the form of a JWS in compact form: three base64url parts. */
export function isJws(value: string): boolean {
  return /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(value);
}

/** How {@link callerResolver} throttles wrong worker tokens. */
export interface TokenThrottleOptions {
  /** Wrong tokens one client may send within `windowMs` (default 10). */
  readonly maxFailures?: number;
  /** Default one minute. */
  readonly windowMs?: number;
  /** How long its tokens then go unchecked (default one minute). */
  readonly coolDownMs?: number;
  /**
   * Clients counted at once (default 10,000; about 100 bytes each): the
   * least recently seen is forgotten first, so the counters stay bounded
   * whatever number of addresses guess.
   */
  readonly maxClients?: number;
  /** The clock (tests replace it). */
  readonly now?: () => number;
}

interface Strikes {
  failures: number;
  /** When the window of these failures began. */
  since: number;
  /** 0, or when the cool-down ends. */
  until: number;
}

/** Wrong-token counters per client; see {@link TokenThrottleOptions}. */
export type TokenThrottle = ReturnType<typeof createTokenThrottle>;

/** Wrong-token counters per client; see {@link TokenThrottleOptions}. */
export function createTokenThrottle(options: TokenThrottleOptions = {}) {
  const settings = {
    maxFailures: options.maxFailures ?? 10,
    windowMs: options.windowMs ?? 60_000,
    coolDownMs: options.coolDownMs ?? 60_000,
  };
  const maxClients = options.maxClients ?? 10_000;
  const now = options.now ?? Date.now;
  // In order of last failure, so the first entries are the stalest.
  const clients = new Map<string, Strikes>();
  const stale = (s: Strikes, t: number) =>
    s.until === 0 ? t - s.since >= settings.windowMs : t >= s.until;
  return {
    settings,
    /** The client's cool-down, if it is in one. */
    check(client: string): TokenThrottleState | undefined {
      const s = clients.get(client);
      if (s === undefined || s.until === 0) return undefined;
      const waitMs = s.until - now();
      const { maxFailures, windowMs } = settings;
      return waitMs > 0 ? { waitMs, maxFailures, windowMs } : undefined;
    },
    /** Counts a wrong token; true when it starts the client's cool-down. */
    failed(client: string): boolean {
      const t = now();
      const previous = clients.get(client);
      clients.delete(client);
      const s =
        previous === undefined || stale(previous, t)
          ? { failures: 0, since: t, until: 0 }
          : previous;
      s.failures++;
      if (s.failures >= settings.maxFailures) s.until = t + settings.coolDownMs;
      clients.set(client, s);
      // Forget from the stalest end: any over the cap, and those whose
      // time ran out, so entries do not wait for the cap to go.
      for (const [key, oldest] of clients) {
        if (key === client || (clients.size <= maxClients && !stale(oldest, t))) break;
        clients.delete(key);
      }
      // (Only a client out of its cool-down gets here: see check.)
      return s.failures === settings.maxFailures;
    },
    /** The right token: the client's count starts over. */
    succeeded(client: string): void {
      clients.delete(client);
    },
  };
}

/** What {@link callerResolver} reads of a request. */
export interface CallerRequest {
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly socket: { readonly remoteAddress?: string | undefined };
}

/** Every address in one spelling: IPv6 in full, IPv4-mapped as IPv4. */
const exactAddress: ClientPrefix = Object.freeze({ v4: 32, v6: 128 });

/**
 * The client a connection's peer address is, or undefined for a trusted
 * proxy (whose connections carry many clients, named by x-forwarded-for):
 * what per-connection limits count by, and where {@link callerResolver}
 * starts.
 */
export function peerClientOf(options: {
  readonly trustedProxies: readonly string[];
  readonly clientPrefix?: ClientPrefix;
}): (address: string) => string | undefined {
  const proxies = new Set(options.trustedProxies.map((a) => clientKey(a, exactAddress)));
  const prefix = options.clientPrefix ?? defaultClientPrefix;
  // Every call asks this of its connection's peer: the answer depends on
  // the address only, so the few addresses a server sees at a time are
  // parsed once, not twice per call. Bounded: cleared when full.
  const known = new Map<string, string | undefined>();
  return (address) => {
    const hit = known.get(address);
    if (hit !== undefined || known.has(address)) return hit;
    const client = proxies.has(clientKey(address, exactAddress))
      ? undefined
      : clientKey(address, prefix);
    if (known.size >= PEER_CLIENTS_KNOWN) known.clear();
    known.set(address, client);
    return client;
  };
}

/** How many peer addresses {@link peerClientOf} keeps the answer for. */
const PEER_CLIENTS_KNOWN = 4096;

/** Prefix lengths by which addresses are grouped into clients. */
export interface ClientPrefix {
  readonly v4: number;
  readonly v6: number;
}

/** One client per IPv4 address and per IPv6 /64 (what one host can hold at will). */
export const defaultClientPrefix: ClientPrefix = Object.freeze({ v4: 32, v6: 64 });

/**
 * The client an address belongs to: the address itself when the prefix is
 * the whole address, else its network, e.g. `2001:db8:0:1::/64` or
 * `10.1.2.0/24`. Text that is not an IP address is its own client.
 */
export function clientKey(address: string, prefix: ClientPrefix = defaultClientPrefix): string {
  const a = normalizeAddress(address);
  const family = isIP(a);
  if (family === 4) {
    if (prefix.v4 >= 32) return a;
    const n = a.split(".").reduce((acc, part) => acc * 256 + Number(part), 0);
    const masked = prefix.v4 === 0 ? 0 : n - (n % 2 ** (32 - prefix.v4));
    const bytes = [24, 16, 8, 0].map((shift) => Math.floor(masked / 2 ** shift) % 256);
    return `${bytes.join(".")}/${prefix.v4}`;
  }
  if (family !== 6) return a;
  const groups = ipv6Groups(a);
  if (prefix.v6 >= 128) return groups.map((g) => g.toString(16)).join(":");
  const kept = groups.map((g, i) => {
    const bits = Math.min(16, Math.max(0, prefix.v6 - i * 16));
    return bits === 16 ? g : bits === 0 ? 0 : g & (0xffff << (16 - bits)) & 0xffff;
  });
  // Trailing zero groups written as "::" (the network's usual spelling).
  let end = kept.length;
  while (end > 0 && kept[end - 1] === 0) end--;
  const head = kept.slice(0, end).map((g) => g.toString(16));
  return `${head.join(":")}${end < 8 ? "::" : ""}/${prefix.v6}`;
}

/** The eight 16-bit groups of an IPv6 address (`isIP(a) === 6`). */
function ipv6Groups(a: string): number[] {
  let text = a.split("%", 1)[0] as string;
  // An embedded IPv4 tail (::ffff:1.2.3.4, 64:ff9b::1.2.3.4): two groups.
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4 !== null) {
    const [b0, b1, b2, b3] = v4.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, v4.index)}${((b0 << 8) | b1).toString(16)}:${((b2 << 8) | b3).toString(16)}`;
  }
  const [left, right] = text.includes("::") ? text.split("::") : [text, undefined];
  const parse = (part: string | undefined) =>
    part === undefined || part === "" ? [] : part.split(":").map((g) => Number.parseInt(g, 16));
  const l = parse(left);
  const r = parse(right);
  const zeros = right === undefined ? [] : new Array<number>(8 - l.length - r.length).fill(0);
  return [...l, ...zeros, ...r];
}

function normalizeAddress(address: string): string {
  const a = address.trim().toLowerCase();
  return a.startsWith("::ffff:") && a.includes(".") ? a.slice(7) : a;
}

function digest(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}

/**
 * Refuses a worker-only operation to a public caller: UNAUTHENTICATED for
 * a wrong token, PERMISSION_DENIED otherwise, each saying how to call it.
 */
export function requireWorker(ctx: HandlerContext, operation: string): void {
  const caller = ctx.values.get(callerKey);
  if (caller.kind === "worker") return;
  const throttle = caller.tokenThrottle;
  if (throttle !== undefined) {
    throw new ConnectError(
      `${operation}: too many wrong worker tokens from this client (${throttle.maxFailures} within ${Math.round(throttle.windowMs / 1000)} s), so its tokens are not checked for now; wait ${Math.ceil(throttle.waitMs / 1000)} s, then send the right one`,
      Code.ResourceExhausted,
    );
  }
  if (caller.badToken) {
    throw new ConnectError(
      `${operation}: the bearer token is not this bridge's worker token`,
      Code.Unauthenticated,
    );
  }
  throw new ConnectError(
    `${operation} is for workers: call it on the bridge's worker listener (--worker-port) or send the worker token as authorization: Bearer <token>`,
    Code.PermissionDenied,
  );
}

/** Whether the call comes from a worker. */
export function isWorker(ctx: HandlerContext): boolean {
  return ctx.values.get(callerKey).kind === "worker";
}

/** The calling client's address (see {@link Caller.client}). */
export function clientOf(ctx: HandlerContext): string {
  return ctx.values.get(callerKey).client;
}
