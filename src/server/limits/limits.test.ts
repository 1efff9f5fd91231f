import { describe, expect, it } from "vitest";
import { metadataBytes } from "./limits.js";

describe("metadataBytes", () => {
  it("counts keys and values as UTF-8", () => {
    expect(metadataBytes({})).toBe(0);
    expect(metadataBytes({ owner: "zoë", a: "" })).toBe(5 + 4 + 1);
  });
});
