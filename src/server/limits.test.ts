import { describe, expect, it } from "vitest";
import { formatBytes, metadataBytes } from "./limits.js";

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

describe("metadataBytes", () => {
  it("counts keys and values as UTF-8", () => {
    expect(metadataBytes({})).toBe(0);
    expect(metadataBytes({ owner: "zoë", a: "" })).toBe(5 + 4 + 1);
  });
});
