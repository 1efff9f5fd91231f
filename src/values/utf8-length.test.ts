import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { utf8Length } from "./utf8-length.js";

describe("utf8Length", () => {
  const encoder = new TextEncoder();

  it("agrees with TextEncoder on every string", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary" }), (s) => {
        expect(utf8Length(s)).toBe(encoder.encode(s).byteLength);
      }),
    );
  });

  it("counts a lone surrogate as U+FFFD's 3 bytes, a pair as 4", () => {
    for (const [s, n] of [
      ["\ud800", 3],
      ["a\udc00", 4],
      ["\ud800\ud800", 6],
      ["\udbff", 3],
      ["\ud800a", 4],
      ["😀", 4],
    ] as const) {
      expect(utf8Length(s)).toBe(n);
      expect(encoder.encode(s).byteLength).toBe(n);
    }
  });
});
