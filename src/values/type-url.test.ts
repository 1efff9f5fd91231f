import { ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { parseTypeUrl, typeUrlFor } from "./type-url.js";
import { VARIABLE_TYPES } from "./variable-type.js";

describe("type URLs", () => {
  it("builds the exact URLs", () => {
    expect(typeUrlFor("float")).toBe("type.googleapis.com/snakepit.float");
    expect(typeUrlFor("embedding", true)).toBe("type.googleapis.com/snakepit.embedding.binary");
    expect(typeUrlFor("tensor", true)).toBe("type.googleapis.com/snakepit.tensor.binary");
    expect(() => typeUrlFor("string", true)).toThrow(ConnectError);
  });

  it("parses what it builds", () => {
    for (const type of VARIABLE_TYPES) {
      expect(parseTypeUrl(typeUrlFor(type))).toEqual({ type, binary: false });
    }
    expect(parseTypeUrl(typeUrlFor("tensor", true))).toEqual({ type: "tensor", binary: true });
  });

  it("takes the type after the last '/' and '.', like both original sides", () => {
    expect(parseTypeUrl("snakepit.choice").type).toBe("choice");
    expect(parseTypeUrl("module").type).toBe("module");
    expect(parseTypeUrl("dspex.variables/float").type).toBe("float");
    expect(parseTypeUrl("example.com/x.embedding.binary")).toEqual({
      type: "embedding",
      binary: true,
    });
  });

  it.each(["", "type.googleapis.com/snakepit.", "snakepit.Float", "float/", ".binary"])(
    "rejects %j",
    (url) => {
      expect(() => parseTypeUrl(url)).toThrow(/unknown type URL/);
    },
  );
});
