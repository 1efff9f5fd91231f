import type { RE2JS } from "re2js";
import { describeValue, invalidArgument, truncateText } from "./describe-value.js";
import { loadedPatternEngine, loadPatternEngine, type PatternEngine } from "./pattern-engine.js";

/**
 * Longest `pattern` constraint, in UTF-16 units. Compiling takes time in
 * proportion to the program, and the program grows with the text.
 */
export const MAX_PATTERN_LENGTH = 1000;

/**
 * Largest repeat count (`{n}`, `{n,m}`, `{n,}`) in a `pattern`. RE2 itself
 * allows 1000, and `x{1000}` alone is 1000 instructions.
 */
export const MAX_PATTERN_REPEAT = 256;

/**
 * Largest compiled program of a `pattern`, in RE2 instructions. Checking a
 * value costs up to (value length) × (instructions): on adversarial input
 * RE2's NFA keeps one thread per instruction alive at every character.
 */
export const MAX_PATTERN_INSTRUCTIONS = 1000;

/**
 * Most work one pattern check may take: value length (UTF-16 units) ×
 * program instructions. Longer values are refused without being matched.
 * A 1000-instruction pattern checks values of up to 100 characters, a
 * 10-instruction one up to 10,000 (test/hostile/patterns.test.ts: another
 * caller's Ping stays under 500 ms while a write at this budget is
 * checked, where a 128 KiB value against `(?:a|ab|b){1000}c` held every
 * caller for 9.5 s).
 */
export const PATTERN_CHECK_BUDGET = 100_000;

/**
 * A compiled `pattern` constraint. Matching is RE2 (linear time, no
 * backreferences or lookaround) and unanchored: `test` finds the pattern
 * anywhere in the string; write `^…$` to match the whole string.
 */
export interface CompiledPattern {
  /** The pattern text as given. */
  readonly source: string;
  /** Size of the compiled RE2 program; the cost of a check grows with it. */
  readonly instructions: number;
  /**
   * Longest value (UTF-16 units) this pattern checks within
   * {@link PATTERN_CHECK_BUDGET}; `test` must not be given longer ones.
   */
  readonly maxValueLength: number;
  /**
   * Whether the pattern matches anywhere in `s`. Always true while the
   * pattern is {@link CompiledPattern.deferred}: the check is the server's.
   */
  readonly test: (s: string) => boolean;
  /**
   * True while the pattern engine is still loading (a client that met its
   * first pattern): `instructions` is an estimate, `maxValueLength` is
   * unbounded and `test` accepts everything. The first use after the
   * engine arrives compiles the pattern for real.
   */
  readonly deferred: boolean;
}

/**
 * Compile a `pattern` constraint under the limits above.
 *
 * @example
 * compilePattern("^[a-z]+$").maxValueLength; // 16666 (6 instructions)
 * compilePattern("(?:a|ab|b){1000}c"); // throws "pattern: repeat count 1000 exceeds the limit of 256"
 *
 * Without the pattern engine loaded (see pattern-engine.ts) the pattern is
 * checked for everything its text shows and returned
 * {@link CompiledPattern.deferred}, and the engine starts loading; the
 * server always has the engine, so it always compiles at once.
 *
 * @throws ConnectError with `Code.InvalidArgument` when `v` is not a string,
 *   is longer than {@link MAX_PATTERN_LENGTH}, repeats more than
 *   {@link MAX_PATTERN_REPEAT} times, compiles (or would compile) to more than
 *   {@link MAX_PATTERN_INSTRUCTIONS}, or is not valid RE2 syntax (the last
 *   two, for a deferred pattern, at its first use after the engine loads).
 */
export function compilePattern(v: unknown): CompiledPattern {
  if (typeof v !== "string") {
    throw invalidArgument(`constraint 'pattern' must be a string, got ${describeValue(v)}`);
  }
  if (v.length > MAX_PATTERN_LENGTH) {
    throw invalidArgument(
      `pattern is ${v.length} characters long; the limit is ${MAX_PATTERN_LENGTH}`,
    );
  }
  // Refuse before compiling: compiling `(?:…){1000}` already blocks for
  // tens of milliseconds, and nested repeats multiply.
  const shape = measurePattern(v);
  if (shape.largestRepeat > MAX_PATTERN_REPEAT) {
    throw invalidArgument(
      `pattern: repeat count ${shape.largestRepeat} exceeds the limit of ${MAX_PATTERN_REPEAT}`,
    );
  }
  // The estimate can exceed the real size (RE2 merges `a|b` into `[ab]`),
  // hence the margin; the compiled size below is the one that counts.
  if (shape.estimatedInstructions > 2 * MAX_PATTERN_INSTRUCTIONS) {
    throw invalidArgument(
      `pattern would compile to about ${shape.estimatedInstructions} instructions; the limit is ${MAX_PATTERN_INSTRUCTIONS} (use fewer or smaller repeats)`,
    );
  }
  const engine = loadedPatternEngine();
  return engine === undefined ? deferredPattern(v, shape) : compileWith(engine, v);
}

/** Compiles `source`, already within the text limits, with the engine. */
function compileWith(engine: PatternEngine, v: string): CompiledPattern {
  let re: RE2JS;
  try {
    re = engine.compile(v);
  } catch (e) {
    // re2js reports "error parsing regexp: <reason>: `<fragment>`"; keep the reason.
    const reason = (e instanceof Error ? e.message : String(e)).replace(
      /^error parsing regexp: /,
      "",
    );
    throw invalidArgument(`invalid pattern '${truncateText(v)}': ${truncateText(reason)}`);
  }
  const instructions = re.programSize();
  if (instructions > MAX_PATTERN_INSTRUCTIONS) {
    throw invalidArgument(
      `pattern compiles to ${instructions} instructions; the limit is ${MAX_PATTERN_INSTRUCTIONS} (use fewer or smaller repeats)`,
    );
  }
  return Object.freeze({
    source: v,
    instructions,
    maxValueLength: Math.floor(PATTERN_CHECK_BUDGET / Math.max(instructions, 1)),
    test: (s: string) => matchesAnywhere(re, s),
    deferred: false,
  });
}

/**
 * A pattern whose engine is still loading: accepts every value until the
 * engine is there, then compiles once and behaves as compiled.
 */
function deferredPattern(source: string, shape: PatternShape): CompiledPattern {
  let compiled: CompiledPattern | undefined;
  const current = (): CompiledPattern | undefined => {
    if (compiled === undefined) {
      const engine = loadedPatternEngine();
      if (engine !== undefined) compiled = compileWith(engine, source);
    }
    return compiled;
  };
  // Loading failures (an offline page that never fetched the chunk) leave
  // the pattern deferred; the server still checks every value.
  loadPatternEngine().catch(() => undefined);
  return Object.freeze({
    source,
    get instructions() {
      return current()?.instructions ?? shape.estimatedInstructions;
    },
    get maxValueLength() {
      return current()?.maxValueLength ?? Number.POSITIVE_INFINITY;
    },
    test: (s: string) => current()?.test(s) ?? true,
    get deferred() {
      return current() === undefined;
    },
  });
}

/**
 * Whether `re` matches anywhere in `s`, in time bounded by length ×
 * instructions with a small constant.
 *
 * Not `re.test(s)`: re2js answers that with its lazy DFA, which on
 * adversarial input builds a new state per character at about 600 ns per
 * character × instruction (and keeps up to 8 MiB of states per pattern).
 * Asking for the match position takes re2js's bit-state backtracker or NFA
 * instead, at 100–250 ns. This relies on re2js's choice of engine; the
 * tests pin it.
 */
export function matchesAnywhere(re: RE2JS, s: string): boolean {
  return re.matcher(s).find();
}

/** What {@link measurePattern} finds in a pattern's text. */
export interface PatternShape {
  /** The largest single repeat count, `{n}` → n, `{n,m}` → m, `{n,}` → n. */
  readonly largestRepeat: number;
  /** About how many instructions the pattern compiles to, nested repeats multiplied out. */
  readonly estimatedInstructions: number;
}

// Counts past this say "far too large" as well as any bigger number would,
// and keep the arithmetic exact.
const SATURATE = 1e9;

/**
 * Measure a pattern from its text alone, in one pass, without compiling it.
 * Follows RE2 syntax far enough to find which atom or group each repeat
 * applies to: escapes (`\Q…\E`, `\p{…}`, `\x{…}`), character classes
 * (`[]a]`, `[[:alpha:]]`) and groups (`(?:`, `(?P<name>`, `(?i)`). For an
 * invalid pattern the result is meaningless but still finite; compiling
 * reports the error.
 */
export function measurePattern(source: string): PatternShape {
  // Instructions counted so far in each open group, the outermost first.
  const groups: number[] = [0];
  // Instructions of the atom or group a following repeat would apply to.
  let last = 0;
  let largestRepeat = 0;
  // Sticky, and local so that no lastIndex outlives a call.
  const repeat = /\{(\d{1,9})(,(\d{0,9}))?\}/y;
  const add = (n: number) => {
    const top = groups.length - 1;
    groups[top] = Math.min(SATURATE, (groups[top] ?? 0) + n);
  };
  const atom = () => {
    add(1);
    last = 1;
  };
  let i = 0;
  while (i < source.length) {
    const c = source[i];
    switch (c) {
      case "\\": {
        const next = source[i + 1];
        if (next === "Q") {
          const end = source.indexOf("\\E", i + 2);
          const stop = end === -1 ? source.length : end;
          // Each quoted character is a literal; a repeat applies to the last.
          for (let k = i + 2; k < stop; k++) atom();
          i = end === -1 ? source.length : end + 2;
          continue;
        }
        atom();
        if ((next === "p" || next === "P" || next === "x") && source[i + 2] === "{") {
          const close = source.indexOf("}", i + 3);
          i = close === -1 ? source.length : close + 1;
        } else if (next === "p" || next === "P") {
          i += 3;
        } else {
          i += 2;
        }
        continue;
      }
      case "[":
        atom();
        i = classEnd(source, i);
        continue;
      case "(": {
        // A capturing group, plain or named, compiles to two more instructions.
        const named = source.startsWith("?P<", i + 1) || source.startsWith("?<", i + 1);
        groups.push(source[i + 1] !== "?" || named ? 2 : 0);
        last = 0;
        i++;
        if (source[i] === "?") {
          // Skip the group's flags or name: `(?:`, `(?i:`, `(?P<name>`; a
          // flags-only `(?i)` closes at once as an empty group.
          let k = i + 1;
          while (k < source.length && source[k] !== ":" && source[k] !== ")" && source[k] !== ">") {
            k++;
          }
          i = source[k] === ")" ? k : k + 1;
        }
        continue;
      }
      case ")": {
        // A stray `)` is a syntax error that compiling reports.
        const inner = groups.length > 1 ? (groups.pop() ?? 0) : 0;
        add(inner);
        last = inner;
        i++;
        continue;
      }
      case "|":
      case "*":
      case "+":
      case "?":
        add(1);
        last = 0;
        i++;
        continue;
      case "{": {
        repeat.lastIndex = i;
        const m = repeat.exec(source);
        if (m === null) {
          // Not a repeat: RE2 reads a lone `{` as a literal.
          atom();
          i++;
          continue;
        }
        const min = Number(m[1]);
        const max = m[2] === undefined ? min : m[3] === "" ? undefined : Number(m[3]);
        const count = max ?? min;
        largestRepeat = Math.max(largestRepeat, count);
        // The atom is already counted once; `{n,m}` compiles to m copies, the
        // optional ones with one more instruction each, `{n,}` to n and a loop.
        const copies = Math.max(count, 1);
        const optional = max === undefined ? 1 : Math.max(max - min, 0);
        add(Math.min(SATURATE, last * (copies - 1) + optional));
        last = 0;
        i = repeat.lastIndex;
        continue;
      }
      default:
        atom();
        i++;
    }
  }
  let total = 0;
  for (const n of groups) total = Math.min(SATURATE, total + n);
  return { largestRepeat, estimatedInstructions: total };
}

/** Index just after the character class that opens at `start` (`[`). */
function classEnd(source: string, start: number): number {
  let k = start + 1;
  if (source[k] === "^") k++;
  // A `]` right after `[` or `[^` is a member, not the end.
  if (source[k] === "]") k++;
  while (k < source.length) {
    const c = source[k];
    if (c === "]") return k + 1;
    if (c === "\\") {
      k += 2;
    } else if (c === "[" && source[k + 1] === ":") {
      const close = source.indexOf(":]", k + 2);
      k = close === -1 ? k + 1 : close + 2;
    } else {
      k++;
    }
  }
  return source.length;
}
