/**
 * Parsers of configuration values: each turns one raw string from a flag or
 * environment variable into a value, or throws a message saying what is
 * accepted (the caller prefixes the flag or variable).
 */
import { isIP } from "node:net";
import { parseAddressPattern } from "../tools/worker-address.js";

const MiB = 1024 * 1024;

// connect-node rejects read limits above 2^32 - 1 bytes.
const maxBytesLimit = 0xffff_ffff;

/** A non-empty string, trimmed. */
export function nonEmpty(raw: string): string {
  if (raw.trim() === "") throw new Error("must not be empty");
  return raw.trim();
}

/** A whole number in `min..max`. */
export function integer(raw: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const t = raw.trim();
  if (!/^[+]?\d+$/.test(t)) throw new Error(`"${raw}" is not a whole number`);
  const n = Number(t);
  if (n < min || n > max) throw new Error(`${n} is out of range ${min}..${max}`);
  return n;
}

/** A TCP port, or null for "off". */
export function portOrOff(raw: string): number | null {
  if (raw.trim().toLowerCase() === "off") return null;
  return integer(raw, 0, 65_535);
}

const units: Readonly<Record<string, number>> = {
  "": 1,
  b: 1,
  kib: 1024,
  mib: MiB,
  gib: 1024 * MiB,
};

/** A size: bytes, or a number with KiB, MiB or GiB; at least `min`. */
export function bytes(raw: string, min = 1): number {
  const m = /^\s*(\d+)\s*([a-z]*)\s*$/i.exec(raw);
  const unit = units[(m?.[2] ?? "").toLowerCase()];
  if (m === null || unit === undefined) {
    throw new Error(`"${raw}" is not a size; use bytes or a number with KiB, MiB or GiB`);
  }
  const n = Number(m[1]) * unit;
  if (n < min || n > maxBytesLimit) {
    throw new Error(`${n} bytes is out of range ${min}..${maxBytesLimit}`);
  }
  return n;
}

/** true/false, 1/0, yes/no, on/off. */
export function boolean(raw: string): boolean {
  const t = raw.trim().toLowerCase();
  if (["true", "1", "yes", "on"].includes(t)) return true;
  if (["false", "0", "no", "off"].includes(t)) return false;
  throw new Error(`"${raw}" is not a boolean; use true or false`);
}

/** The non-empty items of a comma-separated list, trimmed, each checked by `check`. */
export function list(raw: string, check: (item: string) => void = () => {}): string[] {
  const out: string[] = [];
  for (const part of raw.split(",")) {
    const item = part.trim();
    if (item === "") continue;
    check(item);
    out.push(item);
  }
  return out;
}

/** A list of host:port patterns (see worker-address.ts). */
export function workerAllowList(raw: string): string[] {
  return list(raw, (p) => parseAddressPattern(p));
}

/** A list of IP addresses. */
export function ipList(raw: string): string[] {
  return list(raw, (a) => {
    if (isIP(a) === 0) throw new Error(`"${a}" is not an IP address`);
  });
}

/** A list of exact origins (`scheme://host[:port]`), or "*". */
export function origins(raw: string): string[] {
  return list(raw, (o) => {
    if (o === "*") return;
    let parsed: URL | undefined;
    try {
      parsed = new URL(o);
    } catch {
      // Not a URL at all: reported below with the same message as a URL with a path.
    }
    if (parsed === undefined || !/^https?:$/.test(parsed.protocol) || parsed.origin !== o) {
      throw new Error(
        `"${o}" is not an origin; write scheme://host[:port] without path or trailing slash, e.g. http://localhost:5173`,
      );
    }
  });
}

/** 1 to 64 printable ASCII characters without spaces. */
export function keyPrefix(raw: string): string {
  const t = raw.trim();
  if (!/^[\x21-\x7e]{1,64}$/.test(t)) {
    throw new Error("must be 1 to 64 printable ASCII characters without spaces");
  }
  return t;
}

const makeToken = "make one with openssl rand -base64 32";

/**
 * A bearer token: at least 32 printable ASCII characters that do not look
 * made by hand, never shown back. Length alone lets `aaaa…` through; what
 * `openssl rand` makes has dozens of distinct characters, no period and
 * no long runs, so these checks refuse only tokens a guesser would try
 * first (the odds of a random one failing them are negligible).
 */
export function token(raw: string): string {
  const t = raw.trim();
  if (t.length < 32) throw new Error(`must be at least 32 characters; ${makeToken}`);
  if (!/^[\x21-\x7e]+$/.test(t)) throw new Error("must be printable ASCII without spaces");
  const weakness = tokenWeakness(t);
  if (weakness !== undefined)
    throw new Error(`must not be easy to guess, but ${weakness}; ${makeToken}`);
  return t;
}

/** Why `t` looks made by hand (never quoting it), or undefined. */
function tokenWeakness(t: string): string | undefined {
  const distinct = new Set(t).size;
  if (distinct < 8) {
    return `it has ${distinct} distinct character${distinct === 1 ? "" : "s"} (at least 8 needed)`;
  }
  // The shortest p with t[i] === t[i - p] throughout: a unit repeated.
  for (let p = 1; p <= t.length / 2; p++) {
    let repeats = true;
    for (let i = p; i < t.length && repeats; i++) repeats = t[i] === t[i - p];
    if (repeats) return `it repeats a ${p}-character pattern`;
  }
  // Steps of -1, 0 or +1 between neighbours: abcd…, 1234…, aabb….
  let steps = 0;
  for (let i = 1; i < t.length; i++) {
    if (Math.abs(t.charCodeAt(i) - t.charCodeAt(i - 1)) <= 1) steps++;
  }
  if (steps * 2 > t.length - 1) return "it is mostly runs like abcd or 1234";
  return undefined;
}

/** A list of request header names (RFC 9110 tokens), lower-cased; at least one. */
export function headerNames(raw: string): string[] {
  const out = list(raw.toLowerCase(), (h) => {
    if (!/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(h)) throw new Error(`"${h}" is not a header name`);
  });
  if (out.length === 0) throw new Error("names no header");
  return out;
}
