import { describe, expect, it } from "vitest";
import { clip, formatBytes, misspells, quote } from "./message-text.js";

describe("clip and quote", () => {
  it("keep at most max code points, never half a character, and mark the cut", () => {
    expect(clip("temperature", 4)).toBe("temp…");
    expect(clip("temp", 4)).toBe("temp");
    // Four emoji are eight UTF-16 units: clipped by code point, none split.
    expect(clip("😀😀😀😀", 2)).toBe("😀😀…");
    expect(quote("a".repeat(100))).toBe(`'${"a".repeat(80)}…'`);
  });

  it("make a lone surrogate well-formed, so the message can be sent back", () => {
    expect(clip("a\uD800b")).toBe("a\uFFFDb");
    expect(quote("\uDC00")).toBe("'\uFFFD'");
  });
});

describe("formatBytes", () => {
  it("reads as bytes, KiB or MiB with at most one decimal", () => {
    expect(formatBytes(1000)).toBe("1000 bytes");
    expect(formatBytes(256 * 1024)).toBe("256 KiB");
    expect(formatBytes(16 * 1024 * 1024)).toBe("16 MiB");
    expect(formatBytes(1.1 * 1024 * 1024)).toBe("1.1 MiB");
  });

  it("rounds up, so a figure over a limit never reads as the limit", () => {
    expect(formatBytes(16 * 1024 * 1024 + 1)).toBe("16.1 MiB");
    expect(formatBytes(1025)).toBe("1.1 KiB");
  });
});

describe("misspells", () => {
  it("takes up to two letters inserted, removed or changed, case aside, for the word meant", () => {
    const words = ["memry", "memroy", "Memory2", "MEMORY", "mem", "redis", "memoryyyy", "menory"];
    expect(words.map((w) => [w, misspells(w, "memory")])).toEqual([
      ["memry", true],
      ["memroy", true],
      ["Memory2", true],
      ["MEMORY", false],
      ["mem", false],
      ["redis", false],
      ["memoryyyy", false],
      ["menory", true],
    ]);
  });
});
