import { Code, ConnectError } from "@connectrpc/connect";

/** Longest ListVariables pattern, after collapsing runs of '*'. */
const MAX_PATTERN = 1024;

/** A '?' in a compiled segment; every other entry is a code point. */
const ANY = -1;

/**
 * Counts the character comparisons of a match, for tests that check the
 * bound; production callers leave it out.
 */
export interface GlobSteps {
  count: number;
}

/**
 * A compiled pattern: true when the whole name matches. Pass `steps` to
 * have the comparisons it made added to `steps.count`.
 */
export type GlobMatcher = (name: string, steps?: GlobSteps) => boolean;

/**
 * Compiles a ListVariables pattern: '*' matches any run of characters
 * (including none), '?' exactly one character (a Unicode code point), and
 * everything else itself; the whole name must match. An empty pattern and
 * '*' match everything. Runs of '*' count as one; a pattern longer than
 * 1024 characters after that is refused with INVALID_ARGUMENT.
 *
 * Matching never backtracks across a '*'. The pattern is split at '*' into
 * segments: the first must match at the start of the name, the last at the
 * end, and each one between is placed at its leftmost occurrence after the
 * one before. Leftmost placement is never worse than any other, because a
 * segment placed earlier leaves more of the name for the rest, and a '*'
 * absorbs whatever is skipped. Each start position of the name is tried by
 * one segment at most, so a match makes at most
 * (|name| + 1) × (|pattern| + 1) comparisons, with lengths in code points.
 *
 * @example
 * const matches = compileGlob("model.*");
 * matches("model.temperature"); // true
 * matches("prompt"); // false
 */
export function compileGlob(pattern: string): GlobMatcher {
  // Runs of '*' mean the same as one; collapsing them keeps "***…" patterns
  // small. What is left is bounded: names are short, so a longer pattern
  // cannot match anything and is refused rather than compiled.
  const glob = pattern.replace(/\*+/g, "*");
  if (glob === "" || glob === "*") return () => true;
  if (glob.length > MAX_PATTERN) {
    throw new ConnectError(
      `pattern is ${glob.length} characters long; the limit is ${MAX_PATTERN}`,
      Code.InvalidArgument,
    );
  }
  const segments = glob.split("*").map(compileSegment);
  const first = segments[0] ?? [];
  if (segments.length === 1) {
    return (name, steps) => matchForward(first, name, 0, name.length, steps) === name.length;
  }
  const last = segments[segments.length - 1] ?? [];
  // Collapsing '**' left no empty segment between two stars.
  const middle = segments.slice(1, -1);
  return (name, steps) => {
    let from = matchForward(first, name, 0, name.length, steps);
    if (from < 0) return false;
    // The last segment is pinned to the end; the middle ones must fit
    // between it and the first.
    const to = matchBackward(last, name, name.length, from, steps);
    if (to < 0) return false;
    for (const segment of middle) {
      let start = from;
      let end = matchForward(segment, name, start, to, steps);
      while (end < 0) {
        if (start >= to) return false;
        start += width(name, start);
        end = matchForward(segment, name, start, to, steps);
      }
      from = end;
    }
    return true;
  };
}

/** A segment's code points, with ANY for each '?'. */
function compileSegment(segment: string): number[] {
  const out: number[] = [];
  for (const c of segment) out.push(c === "?" ? ANY : (c.codePointAt(0) ?? ANY));
  return out;
}

/**
 * Matches `segment` at `start` of `name` without passing `limit`: the
 * position after it, or -1. Positions are UTF-16 offsets on code point
 * boundaries; `codePointAt` reads a surrogate pair as one code point, as a
 * RegExp with the `u` flag does.
 */
function matchForward(
  segment: readonly number[],
  name: string,
  start: number,
  limit: number,
  steps: GlobSteps | undefined,
): number {
  let at = start;
  for (const token of segment) {
    if (at >= limit) return -1;
    const c = name.codePointAt(at) ?? ANY;
    if (steps !== undefined) steps.count++;
    if (token !== ANY && token !== c) return -1;
    at += c > 0xffff ? 2 : 1;
  }
  return at;
}

/**
 * Matches `segment` so that it ends at `end` of `name`, without going
 * below `floor`: the position where it starts, or -1.
 */
function matchBackward(
  segment: readonly number[],
  name: string,
  end: number,
  floor: number,
  steps: GlobSteps | undefined,
): number {
  let at = end;
  for (let i = segment.length - 1; i >= 0; i--) {
    if (at <= floor) return -1;
    // A low surrogate right after a high one is the second half of a pair.
    const pair = at - 2 >= floor && isLow(name, at - 1) && isHigh(name, at - 2);
    at -= pair ? 2 : 1;
    const c = name.codePointAt(at) ?? ANY;
    if (steps !== undefined) steps.count++;
    const token = segment[i] ?? ANY;
    if (token !== ANY && token !== c) return -1;
  }
  return at;
}

/** UTF-16 units of the code point at `at`. */
function width(name: string, at: number): number {
  return (name.codePointAt(at) ?? 0) > 0xffff ? 2 : 1;
}

function isHigh(name: string, at: number): boolean {
  const u = name.charCodeAt(at);
  return u >= 0xd800 && u <= 0xdbff;
}

function isLow(name: string, at: number): boolean {
  const u = name.charCodeAt(at);
  return u >= 0xdc00 && u <= 0xdfff;
}
