import { describe, expect, it } from "vitest";
import { MAX_JSON_DEPTH, nestsDeeperThan } from "./json-depth.js";

/** An array nested `levels` deep around 1, as JSON.parse builds it. */
const nestedArray = (levels: number): unknown =>
  JSON.parse(`${"[".repeat(levels)}1${"]".repeat(levels)}`);

describe("nestsDeeperThan", () => {
  it.each([
    [1, 0],
    ["[]", 0],
    [[], 1],
    [{}, 1],
    [[[1]], 2],
    [{ a: [{ b: [] }] }, 4],
    [[1, [2, [3]], { x: null }], 3],
  ])("%j nests exactly %d levels", (value, levels) => {
    expect(nestsDeeperThan(value, levels)).toBe(false);
    if (levels > 0) expect(nestsDeeperThan(value, levels - 1)).toBe(true);
  });

  it(`accepts ${MAX_JSON_DEPTH} levels by default, not one more`, () => {
    expect(nestsDeeperThan(nestedArray(MAX_JSON_DEPTH))).toBe(false);
    expect(nestsDeeperThan(nestedArray(MAX_JSON_DEPTH + 1))).toBe(true);
    expect(nestsDeeperThan({ deep: nestedArray(MAX_JSON_DEPTH) })).toBe(true);
  });

  it("measures values far deeper than the stack allows a recursive walk", () => {
    const deep = nestedArray(300_000);
    expect(() => JSON.stringify(deep)).toThrow(RangeError);
    expect(nestsDeeperThan(deep)).toBe(true);
  });

  it("finds the one deep branch of a wide value", () => {
    const wide = Array.from({ length: 100_000 }, (_, i) => (i === 99_999 ? nestedArray(70) : i));
    expect(nestsDeeperThan(wide)).toBe(true);
    wide[99_999] = 0;
    expect(nestsDeeperThan(wide)).toBe(false);
  });
});
