import { describe, expect, it } from "vitest";
import { valueByteSize } from "./value-byte-size.js";

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
});
