import { Code } from "@connectrpc/connect";
import { RE2JS } from "re2js";
import { describe, expect, it } from "vitest";
import { thrownBy } from "../../test/support/errors.js";
import { checkValue } from "./check-value.js";
import {
  compilePattern,
  MAX_PATTERN_INSTRUCTIONS,
  MAX_PATTERN_LENGTH,
  MAX_PATTERN_REPEAT,
  matchesAnywhere,
  measurePattern,
  PATTERN_CHECK_BUDGET,
} from "./compile-pattern.js";
import { parseConstraints } from "./constraints.js";
import { providePatternEngine } from "./pattern-engine.js";

// As on the server: the engine is there before the first parse (the
// deferred form a client may see first is pattern-engine.test.ts's).
providePatternEngine(RE2JS);

const refusal = (pattern: string) =>
  thrownBy(() => parseConstraints("string", { pattern }), Code.InvalidArgument).rawMessage;

describe("pattern limits at parse time", () => {
  it("refuses a repeat count over the limit, naming it", () => {
    // Valid RE2, and 9.5 s of matching against a 128 KiB value without the limit.
    expect(refusal("(?:a|ab|b){1000}c")).toBe(
      `pattern: repeat count 1000 exceeds the limit of ${MAX_PATTERN_REPEAT}`,
    );
    expect(refusal("x{2,300}")).toContain("repeat count 300 exceeds the limit of 256");
    expect(refusal("x{257,}")).toContain("repeat count 257 exceeds the limit of 256");
    expect(refusal("(?P<n>a){999}")).toContain("repeat count 999");
  });

  it("refuses nested repeats that multiply beyond the program limit, before compiling", () => {
    // Each count is allowed; together they would compile to ~40,000 instructions.
    expect(refusal("(?:(?:ab){200}){100}")).toBe(
      `pattern would compile to about 40000 instructions; the limit is ${MAX_PATTERN_INSTRUCTIONS} (use fewer or smaller repeats)`,
    );
  });

  it("refuses a compiled program over the limit", () => {
    expect(refusal("[a-z]{0,256}[a-z]{0,256}")).toMatch(
      /^pattern compiles to 1026 instructions; the limit is 1000 /,
    );
  });

  it("refuses a pattern text over the length limit", () => {
    expect(refusal("a".repeat(MAX_PATTERN_LENGTH + 1))).toBe(
      `pattern is ${MAX_PATTERN_LENGTH + 1} characters long; the limit is ${MAX_PATTERN_LENGTH}`,
    );
    expect(compilePattern("[a-z]".repeat(MAX_PATTERN_LENGTH / 5)).instructions).toBe(
      MAX_PATTERN_LENGTH / 5 + 2,
    );
  });

  it.each([
    "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
    "^[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\\.[a-zA-Z]{2,}$",
    "^.{0,255}$",
    "[a-z]{1,256}",
    "(?:a|ab|b){100}c",
    "(?:a|b|c|d|e|f|g|h){100}", // estimated high, compiles small: the compiled size decides
  ])("accepts the everyday or borderline pattern %s", (pattern) => {
    const p = compilePattern(pattern);
    expect(p.instructions).toBeLessThanOrEqual(MAX_PATTERN_INSTRUCTIONS);
    expect(p.maxValueLength).toBe(Math.floor(PATTERN_CHECK_BUDGET / p.instructions));
  });
});

describe("pattern work per check", () => {
  it("checks values up to budget / instructions and refuses longer ones unmatched", () => {
    const c = parseConstraints("string", { pattern: "(?:a|ab|b){100}c" });
    const pattern = c.rules.pattern;
    if (pattern === undefined) throw new Error("no pattern");
    expect(pattern.instructions).toBe(603);
    expect(pattern.maxValueLength).toBe(165);
    expect(checkValue("string", `${"a".repeat(164)}c`, c).ok).toBe(true);
    expect(checkValue("string", "a".repeat(166), c, "word")).toEqual({
      ok: false,
      message:
        "variable 'word': length 166 is too long to check against pattern '(?:a|ab|b){100}c': it compiles to 603 instructions, so values may have at most 165 characters (the limit is 100000 characters × instructions)",
    });
  });

  it("leaves small patterns room for long values", () => {
    const c = parseConstraints("string", { pattern: "^[a-z]+$" });
    expect(c.rules.pattern?.maxValueLength).toBe(16_666);
    expect(checkValue("string", "a".repeat(16_666), c).ok).toBe(true);
  });
});

describe("re2js, as relied on", () => {
  // programSize() is re2js's public "cost" figure; the limits above assume it
  // counts instructions, one per repeated copy.
  it("reports a program size that grows by one per repeated atom", () => {
    const size = (p: string) => RE2JS.compile(p).programSize();
    expect(size("a{100}") - size("a{10}")).toBe(90);
    expect(size("(?:a|ab|b){20}") - size("(?:a|ab|b){10}")).toBe(60);
    // RE2's own repeat limit is 1000; ours is lower, so ours decides.
    expect(() => RE2JS.compile("a{1001}")).toThrow(/invalid repeat count/);
  });

  // re2js's lazy DFA costs ~600 ns per character × instruction on input that
  // makes a new state per character, several times its backtracker or NFA.
  // Whether a call builds it is the pinned engine choice, not a timing.
  it("matches without building the lazy DFA, which test() would build", () => {
    const lazyDfa = (re: RE2JS) => (re.re2() as unknown as { lazyDFA: unknown }).lazyDFA;
    const input = `c${"ab".repeat(500)}`;
    const ours = RE2JS.compile("a[ab]{50}c");
    expect(matchesAnywhere(ours, input)).toBe(false);
    expect(matchesAnywhere(ours, `${input}bc`)).toBe(true);
    expect(lazyDfa(ours)).toBeNull();
    const theirs = RE2JS.compile("a[ab]{50}c");
    expect(theirs.test(input)).toBe(false);
    expect(lazyDfa(theirs)).not.toBeNull();
  });
});

describe("measurePattern", () => {
  it.each([
    ["x{5}", 5],
    ["\\d{3}-\\d{4}", 4],
    ["\\p{Greek}{7}", 7],
    ["\\pL{8}", 8],
    ["\\x{41}{9}", 9],
    ["(?i:ab){12}", 12],
    ["x{2,30}", 30],
    ["x{40,}", 40],
    // Not repeats: escaped braces, braces in classes or quoted, malformed counts.
    ["\\{1000\\}", 0],
    ["[{1000}]", 0],
    ["[]{1000}]", 0],
    ["[[:alpha:]{]", 0],
    ["\\Q{1000}\\E", 0],
    ["a{,5}", 0],
    ["a{x}", 0],
  ])("finds the largest repeat of %s: %d", (pattern, largest) => {
    expect(measurePattern(pattern).largestRepeat).toBe(largest);
  });

  it.each([
    "^[a-z]+$",
    "(?:a|ab|b){100}c",
    "[a-z]{1,255}x",
    "(?:(?:ab){10}){10}",
    "(x)(x)(x)(x){50}",
    "(?P<n>ab){100}",
    "(?:a{0,10}){20}",
    "\\Qa{10}\\E{20}",
    "😀{100}",
  ])("estimates %s close to its compiled size", (pattern) => {
    const real = RE2JS.compile(pattern).programSize();
    const estimate = measurePattern(pattern).estimatedInstructions;
    expect(estimate).toBeLessThanOrEqual(real);
    expect(estimate).toBeGreaterThanOrEqual(real - 3);
  });

  it("stays finite on hostile or invalid text", () => {
    expect(measurePattern("((((((((((a{999}){999}){999}){999}){999}").estimatedInstructions).toBe(
      1e9,
    );
    expect(measurePattern("(((").estimatedInstructions).toBe(6);
    expect(measurePattern(")))[\\").largestRepeat).toBe(0);
    expect(measurePattern("x{99999999999}").largestRepeat).toBe(0);
  });
});
