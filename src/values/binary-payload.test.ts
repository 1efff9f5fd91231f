import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  BINARY_DTYPE,
  BINARY_FORMAT,
  binaryMetadataJson,
  decodeFloat32Le,
  encodeFloat32Le,
} from "./binary-payload.js";

describe("f32le payload", () => {
  it("has a fixed metadata layout", () => {
    expect(BINARY_FORMAT).toBe("f32le");
    expect(BINARY_DTYPE).toBe("float32");
    expect(binaryMetadataJson([2, 3])).toBe('{"format":"f32le","dtype":"float32","shape":[2,3]}');
    expect(binaryMetadataJson([])).toBe('{"format":"f32le","dtype":"float32","shape":[]}');
  });

  it("is little-endian IEEE-754 float32", () => {
    expect([...encodeFloat32Le([1, -0, Number.POSITIVE_INFINITY])]).toEqual([
      0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0x80, 0x00, 0x00, 0x80, 0x7f,
    ]);
    const nan = encodeFloat32Le([Number.NaN]);
    expect(nan[3] === 0x7f || nan[3] === 0xff).toBe(true);
    expect(decodeFloat32Le(nan)[0]).toBeNaN();
  });

  it("round-trips every float32 bit-exactly", () => {
    fc.assert(
      fc.property(fc.array(fc.float()), (data) => {
        expect(decodeFloat32Le(encodeFloat32Le(data))).toEqual(data);
      }),
    );
  });

  it("rounds float64 to the nearest float32", () => {
    fc.assert(
      fc.property(fc.array(fc.double()), (data) => {
        expect(decodeFloat32Le(encodeFloat32Le(data))).toEqual(data.map(Math.fround));
      }),
    );
  });
});
