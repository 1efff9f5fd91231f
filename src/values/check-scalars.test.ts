import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { codePointLength } from "./check-scalars.js";

describe("codePointLength", () => {
  it("counts surrogate pairs once and lone surrogates once", () => {
    expect(codePointLength("")).toBe(0);
    expect(codePointLength("abc")).toBe(3);
    expect(codePointLength("😀a😀")).toBe(3);
    expect(codePointLength("\ud800")).toBe(1);
    expect(codePointLength("\udc00\ud800")).toBe(2);
  });

  it("agrees with the string iterator", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary" }), (s) => {
        expect(codePointLength(s)).toBe([...s].length);
      }),
    );
  });
});
