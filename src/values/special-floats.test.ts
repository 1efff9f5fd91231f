import { describe, expect, it } from "vitest";
import {
  numberToJson,
  quoteBareSpecialFloats,
  specialFloatFromString,
  specialFloatToString,
} from "./special-floats.js";

describe("special floats", () => {
  it("maps exactly three strings", () => {
    expect(specialFloatFromString("NaN")).toBeNaN();
    expect(specialFloatFromString("Infinity")).toBe(Number.POSITIVE_INFINITY);
    expect(specialFloatFromString("-Infinity")).toBe(Number.NEGATIVE_INFINITY);
    for (const s of ["nan", "inf", "-inf", "+Infinity", "Infinity ", "1"]) {
      expect(specialFloatFromString(s)).toBeUndefined();
    }
    expect(specialFloatToString(Number.NaN)).toBe("NaN");
    expect(specialFloatToString(Number.NEGATIVE_INFINITY)).toBe("-Infinity");
  });

  it("writes numbers as JSON", () => {
    expect(numberToJson(0.7)).toBe("0.7");
    expect(numberToJson(2)).toBe("2");
    expect(numberToJson(-0)).toBe("0");
    expect(numberToJson(1e-7)).toBe("1e-7");
    expect(numberToJson(Number.NaN)).toBe('"NaN"');
    expect(numberToJson(Number.POSITIVE_INFINITY)).toBe('"Infinity"');
  });

  it("quotes bare tokens outside strings only", () => {
    expect(quoteBareSpecialFloats("[NaN, -Infinity, Infinity]")).toBe(
      '["NaN", "-Infinity", "Infinity"]',
    );
    expect(quoteBareSpecialFloats('{"NaN": NaN, "a\\"NaN": 1}')).toBe(
      '{"NaN": "NaN", "a\\"NaN": 1}',
    );
    expect(quoteBareSpecialFloats("NaN")).toBe('"NaN"');
    expect(quoteBareSpecialFloats('[1, "Infinity"]')).toBeUndefined();
    expect(quoteBareSpecialFloats("[-1]")).toBeUndefined();
  });
});
