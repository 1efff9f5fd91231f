import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { utf8ByteLength, valueByteSize } from "./value-byte-size.js";

describe("valueByteSize", () => {
  it("counts 8 bytes per number, 1 per boolean, UTF-8 bytes for text", () => {
    expect(valueByteSize("float", 0.7)).toBe(8);
    expect(valueByteSize("integer", 1)).toBe(8);
    expect(valueByteSize("boolean", true)).toBe(1);
    expect(valueByteSize("string", "héllo")).toBe(6);
    expect(valueByteSize("choice", "😀")).toBe(4);
    expect(valueByteSize("module", "")).toBe(0);
    expect(valueByteSize("embedding", new Array(384).fill(0))).toBe(384 * 8);
    expect(valueByteSize("tensor", { shape: [2, 3], data: new Array(6).fill(1) })).toBe(8 * 8);
  });

  it("agrees with TextEncoder on every string", () => {
    const encoder = new TextEncoder();
    fc.assert(
      fc.property(fc.string({ unit: "binary" }), (s) => {
        expect(utf8ByteLength(s)).toBe(encoder.encode(s).byteLength);
      }),
    );
    // Lone surrogates become U+FFFD (3 bytes) in UTF-8.
    for (const s of ["\ud800", "a\udc00", "\ud800\ud800", "\udbff"]) {
      expect(utf8ByteLength(s)).toBe(encoder.encode(s).byteLength);
    }
  });
});
