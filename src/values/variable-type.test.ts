import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { isVariableType, parseVariableType, VARIABLE_TYPES } from "./variable-type.js";

describe("variable types", () => {
  it("lists the eight types of the wire contract", () => {
    expect(VARIABLE_TYPES).toEqual([
      "float",
      "integer",
      "string",
      "boolean",
      "choice",
      "module",
      "embedding",
      "tensor",
    ]);
    expect(Object.isFrozen(VARIABLE_TYPES)).toBe(true);
  });

  it("recognizes exact lowercase names only", () => {
    for (const t of VARIABLE_TYPES) expect(isVariableType(t)).toBe(true);
    for (const s of ["Float", "int", "", "str", "toString", "__proto__"]) {
      expect(isVariableType(s)).toBe(false);
    }
  });

  it("parses known names and rejects others with the list", () => {
    expect(parseVariableType("tensor")).toBe("tensor");
    try {
      parseVariableType("double");
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(ConnectError);
      expect((e as ConnectError).code).toBe(Code.InvalidArgument);
      expect((e as ConnectError).rawMessage).toBe(
        "unknown type 'double': expected one of float, integer, string, boolean, choice, module, embedding, tensor",
      );
    }
  });
});
