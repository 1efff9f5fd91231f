import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { inferType } from "./infer-type.js";

describe("inferType", () => {
  it.each([
    [true, "boolean"],
    [false, "boolean"],
    [0, "integer"],
    [-0, "integer"],
    [3.0, "integer"],
    [-42, "integer"],
    [Number.MAX_SAFE_INTEGER, "integer"],
    [2 ** 53, "float"],
    [0.7, "float"],
    [Number.NaN, "float"],
    [Number.POSITIVE_INFINITY, "float"],
    [Number.NEGATIVE_INFINITY, "float"],
    ["", "string"],
    ["hello", "string"],
    [[0.1, 2, Number.NaN], "embedding"],
  ] as const)("%o → %s", (value, type) => {
    expect(inferType(value)).toBe(type);
  });

  it.each([
    [null, "cannot infer a variable type from null"],
    [undefined, "cannot infer a variable type from undefined"],
    [[], "cannot infer a variable type from an array of 0 items"],
    [[1, "2"], "cannot infer a variable type from an array of 2 items"],
    [{ shape: [1], data: [1] }, "cannot infer a variable type from an object"],
    [new Date(0), "cannot infer a variable type from a Date"],
    [5n, "cannot infer a variable type from 5n (bigint)"],
  ])("rejects %o", (value, message) => {
    try {
      inferType(value);
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(ConnectError);
      expect((e as ConnectError).code).toBe(Code.InvalidArgument);
      expect((e as ConnectError).rawMessage).toBe(message);
    }
  });
});
