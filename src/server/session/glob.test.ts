import { Code, ConnectError } from "@connectrpc/connect";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { compileGlob, type GlobSteps } from "./glob.js";

/**
 * The reference: a table over code points, dp[i][j] true when the first i
 * characters of the name match the first j of the pattern. An empty
 * pattern means "list everything", as '*' does.
 */
function referenceMatch(pattern: string, name: string): boolean {
  const p = pattern === "" ? ["*"] : [...pattern];
  const s = [...name];
  let row = [true];
  for (let j = 1; j <= p.length; j++) row[j] = p[j - 1] === "*" && row[j - 1] === true;
  for (let i = 1; i <= s.length; i++) {
    const next = [false];
    for (let j = 1; j <= p.length; j++) {
      const c = p[j - 1];
      next[j] =
        c === "*"
          ? next[j - 1] === true || row[j] === true
          : (c === "?" || c === s[i - 1]) && row[j - 1] === true;
    }
    row = next;
  }
  return row[p.length] === true;
}

const codePoints = (s: string) => [...s].length;
const bound = (pattern: string, name: string) => (codePoints(name) + 1) * (codePoints(pattern) + 1);

function run(pattern: string, name: string): { matched: boolean; steps: number } {
  const steps: GlobSteps = { count: 0 };
  const matched = compileGlob(pattern)(name, steps);
  return { matched, steps: steps.count };
}

const ofUnits = (units: string[], maxLength: number) =>
  fc.array(fc.constantFrom(...units), { maxLength }).map((a) => a.join(""));

// Astral characters and lone surrogates: '?' must take a surrogate pair as
// one character, and a lone half as one of its own.
const astral = ["😀", "𝄞", "é", "\ud83d", "\ude00"];
const smallPattern = ofUnits(["a", "b", "*", "?"], 12);
const smallName = ofUnits(["a", "b"], 12);
const widePattern = ofUnits(["a", "b", "*", "?", ...astral], 10);
const wideName = ofUnits(["a", "b", ...astral], 10);

/** `*a` k times, then `*b`: the pattern that made the RegExp backtrack. */
const adversarial = (k: number) => `${"*a".repeat(k)}*b`;

describe("compileGlob", () => {
  it.each([
    ["", "anything", true],
    ["*", "", true],
    ["", "", true],
    ["model.*", "model.temperature", true],
    ["model.*", "prompt", false],
    ["?", "", false],
    ["?", "😀", true],
    ["??", "😀", false],
    ["a*b*c", "abxbc", true],
    ["a*b*c", "acb", false],
    ["*ab", "aab", true],
    ["ab*", "a", false],
    ["a*a", "a", false],
    ["x.y", "x.y", true],
    ["x.y", "xzy", false],
    ["[a]", "[a]", true],
    ["(a|b)", "a", false],
    // A surrogate pair is one character: neither half matches on its own,
    // and no segment starts or ends between them.
    ["*\ude00*", "😀", false],
    ["*\ud83d*", "😀", false],
    ["\ud83d*", "😀", false],
    ["*\ude00", "😀", false],
    ["?\ude00", "😀", false],
    ["*?*", "\ud83d", true],
    ["a?b", "a\ude00b", true],
  ])("%j against %j is %s", (pattern, name, expected) => {
    expect(compileGlob(pattern)(name)).toBe(expected);
  });

  it("agrees with the reference on random patterns and names", () => {
    fc.assert(
      fc.property(smallPattern, smallName, (pattern, name) => {
        expect(compileGlob(pattern)(name)).toBe(referenceMatch(pattern, name));
      }),
      { numRuns: 3000 },
    );
  });

  it("agrees with the reference on astral characters and lone surrogates", () => {
    fc.assert(
      fc.property(widePattern, wideName, (pattern, name) => {
        expect(compileGlob(pattern)(name)).toBe(referenceMatch(pattern, name));
      }),
      { numRuns: 3000 },
    );
  });

  it("agrees with the reference on names built from the pattern", () => {
    // Random pairs rarely match; names that are the pattern with its
    // wildcards filled in do, and a small change makes near misses.
    const filled = fc
      .tuple(widePattern, fc.array(wideName, { minLength: 16, maxLength: 16 }), fc.nat(12))
      .map(([pattern, fills, cut]) => {
        let i = 0;
        const name = [...pattern]
          .map((c) => (c === "*" ? (fills[i++ % 16] ?? "") : c === "?" ? "b" : c))
          .join("");
        return { pattern, name: cut % 3 === 0 ? [...name].slice(0, -1).join("") : name };
      });
    fc.assert(
      fc.property(filled, ({ pattern, name }) => {
        expect(compileGlob(pattern)(name)).toBe(referenceMatch(pattern, name));
      }),
      { numRuns: 2000 },
    );
  });

  it("refuses a pattern over the limit with INVALID_ARGUMENT, after collapsing '**'", () => {
    expect(compileGlob(`${"*".repeat(5000)}a`)("a")).toBe(true);
    const e = (() => {
      try {
        compileGlob("?".repeat(1025));
      } catch (caught) {
        return caught;
      }
      return undefined;
    })();
    expect(e).toBeInstanceOf(ConnectError);
    expect((e as ConnectError).code).toBe(Code.InvalidArgument);
    expect((e as ConnectError).rawMessage).toContain("the limit is 1024");
    expect(() => compileGlob("?".repeat(1024))).not.toThrow();
  });
});

describe("compileGlob's work", () => {
  it("stays within (|name| + 1) × (|pattern| + 1) comparisons on random inputs", () => {
    fc.assert(
      fc.property(fc.oneof(smallPattern, widePattern), fc.oneof(smallName, wideName), (p, n) => {
        expect(run(p, n).steps).toBeLessThanOrEqual(bound(p, n));
      }),
      { numRuns: 3000 },
    );
  });

  it.each([1, 12, 64, 511])(
    "stays within the bound for *a×%i*b and its variants against runs of 'a'",
    (k) => {
      const patterns = [
        adversarial(k),
        `${adversarial(k)}*`,
        `${"*a".repeat(k)}*`,
        `*${"a".repeat(k)}b*`,
      ].filter((p) => p.length <= 1024);
      for (const length of [0, 1, 24, 128, 1024]) {
        const name = "a".repeat(length);
        for (const pattern of patterns) {
          const { matched, steps } = run(pattern, name);
          expect(matched).toBe(referenceMatch(pattern, name));
          expect(steps).toBeLessThanOrEqual(bound(pattern, name));
        }
      }
    },
  );

  it("reaches the pattern limit with the largest of that family", () => {
    expect(adversarial(511)).toHaveLength(1024);
  });

  it("does real work on the middle segments, and it grows linearly with the name", () => {
    // '*a×12*b*' cannot be refuted at the end: every 'a' must be placed and
    // then the whole rest scanned for the 'b', once.
    const pattern = `${adversarial(12)}*`;
    const short = run(pattern, "a".repeat(128));
    const long = run(pattern, "a".repeat(1024));
    expect(short.matched).toBe(false);
    expect(short.steps).toBe(128);
    expect(long.steps).toBe(1024);
  });

  it("answers the reported pattern against a 128-character name quickly", () => {
    const pattern = "*a*a*a*a*a*a*a*a*a*a*a*a*b";
    const name = "a".repeat(128);
    const started = performance.now();
    const { matched, steps } = run(pattern, name);
    expect(matched).toBe(false);
    expect(steps).toBeLessThanOrEqual(bound(pattern, name));
    expect(performance.now() - started).toBeLessThan(1000);
    expect(run(pattern, `${name.slice(1)}b`).matched).toBe(true);
  });
});
