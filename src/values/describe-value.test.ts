import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import {
  describeValue,
  formatList,
  formatNumber,
  formatShape,
  invalidArgument,
  truncateText,
} from "./describe-value.js";

describe("message helpers", () => {
  it.each([
    ["abc", "'abc' (string)"],
    [42, "42 (number)"],
    [-0, "-0 (number)"],
    [Number.NaN, "NaN (number)"],
    [true, "true (boolean)"],
    [null, "null"],
    [undefined, "undefined"],
    [[1], "an array of 1 item"],
    [[1, 2], "an array of 2 items"],
    [{}, "an object"],
    [Object.create(null), "an object"],
    [new Uint8Array(2), "a Uint8Array"],
    [() => 1, "a function"],
    [Symbol("s"), "a symbol"],
  ])("describes %o as %s", (value, text) => {
    expect(describeValue(value)).toBe(text);
  });

  it("truncates long text without splitting a surrogate pair", () => {
    expect(truncateText("x".repeat(60))).toBe("x".repeat(60));
    expect(truncateText("x".repeat(61))).toBe(`${"x".repeat(60)}…`);
    const emoji = `${"x".repeat(59)}😀tail`;
    expect(truncateText(emoji)).toBe(`${"x".repeat(59)}…`);
  });

  it("formats numbers, lists and shapes", () => {
    expect(formatNumber(2)).toBe("2");
    expect(formatNumber(2.5)).toBe("2.5");
    expect(formatList(["a", "b"])).toBe("[a, b]");
    expect(formatList(Array.from({ length: 22 }, (_, i) => String(i)))).toBe(
      "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, … 2 more]",
    );
    expect(formatShape([2, 3])).toBe("[2,3]");
    expect(formatShape([])).toBe("[]");
  });

  it("builds InvalidArgument errors, named when a name is given", () => {
    expect(invalidArgument("bad").code).toBe(Code.InvalidArgument);
    expect(invalidArgument("bad").rawMessage).toBe("bad");
    expect(invalidArgument("bad", "temperature").rawMessage).toBe("variable 'temperature': bad");
  });
});
