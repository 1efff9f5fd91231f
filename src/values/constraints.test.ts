import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { thrownBy } from "../../test/support/errors.js";
import { constraintsFromJson, noConstraints, parseConstraints } from "./constraints.js";
import { MAX_JSON_DEPTH } from "./json-depth.js";
import { MAX_TENSOR_DIMENSIONS, type VariableType } from "./variable-type.js";

const errorOf = (fn: () => unknown) => thrownBy(fn, Code.InvalidArgument);

describe("parseConstraints", () => {
  it.each([undefined, null, "", "  ", "null", "{}", {}])("%j means no constraints", (input) => {
    const c = parseConstraints("float", input);
    expect(c).toEqual({ type: "float", json: "{}", raw: {}, rules: {} });
    expect(c).toBe(noConstraints("float"));
  });

  it("accepts JSON text and objects alike, with canonical (sorted) JSON", () => {
    const fromText = parseConstraints("float", '{"max": 2.0, "min": 0}');
    const fromObject = parseConstraints("float", { min: 0, max: 2 });
    expect(fromText.json).toBe('{"max":2,"min":0}');
    expect(fromObject.json).toBe(fromText.json);
    expect(fromText.raw).toEqual({ max: 2, min: 0 });
    expect(fromText.rules).toEqual({ min: 0, max: 2, finiteOnly: true });
  });

  it("treats null entries as absent", () => {
    const c = parseConstraints("integer", { min: null, max: 5 });
    expect(c.json).toBe('{"max":5}');
    expect(c.rules.min).toBeUndefined();
  });

  it("is immutable", () => {
    const input = { choices: ["a", "b"] };
    const c = parseConstraints("choice", input);
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.raw)).toBe(true);
    expect(Object.isFrozen(c.raw.choices)).toBe(true);
    input.choices.push("c");
    expect(c.raw.choices).toEqual(["a", "b"]);
    expect(c.rules.allowed?.set.has("c")).toBe(false);
  });

  const allowed: Record<VariableType, Record<string, unknown>> = {
    float: { min: -1.5, max: 1.5, allow_non_finite: true },
    integer: { min: 1, max: 10 },
    string: { min_length: 1, max_length: 5, pattern: "^[a-z]+$", enum: ["ab", "cd"] },
    boolean: {},
    choice: { choices: ["fast", "slow"] },
    module: { allowed_modules: ["Predict", "ChainOfThought"] },
    embedding: { dimensions: 384 },
    tensor: { shape: [2, 3] },
  };

  it.each(Object.entries(allowed))("accepts every allowed key of %s", (type, raw) => {
    const c = parseConstraints(type as VariableType, raw);
    expect(c.raw).toEqual(raw);
    expect(JSON.parse(c.json)).toEqual(raw);
  });

  it.each([
    [
      "float",
      "max_length",
      "constraint 'max_length' is not allowed for type float: allowed are min, max, allow_non_finite",
    ],
    [
      "integer",
      "pattern",
      "constraint 'pattern' is not allowed for type integer: allowed are min, max",
    ],
    [
      "string",
      "min",
      "constraint 'min' is not allowed for type string: allowed are min_length, max_length, pattern, enum",
    ],
    ["boolean", "min", "type boolean takes no constraints, got 'min'"],
    ["choice", "enum", "constraint 'enum' is not allowed for type choice: allowed are choices"],
    [
      "module",
      "choices",
      "constraint 'choices' is not allowed for type module: allowed are allowed_modules",
    ],
    [
      "embedding",
      "shape",
      "constraint 'shape' is not allowed for type embedding: allowed are dimensions",
    ],
    [
      "tensor",
      "dimensions",
      "constraint 'dimensions' is not allowed for type tensor: allowed are shape",
    ],
  ] as const)("rejects unknown keys for %s (%s)", (type, key, message) => {
    expect(errorOf(() => parseConstraints(type, { [key]: 1 })).rawMessage).toBe(message);
  });

  it("rejects unknown keys even when null", () => {
    expect(errorOf(() => parseConstraints("boolean", '{"x": null}')).rawMessage).toContain(
      "takes no constraints",
    );
  });

  it.each([
    ["float", { min: "0" }, "constraint 'min' must be a finite number, got '0' (string)"],
    ["float", { max: Number.NaN }, "constraint 'max' must be a finite number, got NaN (number)"],
    ["integer", { max: true }, "constraint 'max' must be a finite number, got true (boolean)"],
    ["float", { min: 3, max: 1 }, "constraint 'min' (3) is greater than 'max' (1)"],
    [
      "string",
      { min_length: -1 },
      "constraint 'min_length' must be a non-negative integer, got -1 (number)",
    ],
    ["string", { max_length: 1.5 }, "constraint 'max_length' must be a non-negative integer"],
    [
      "string",
      { min_length: 5, max_length: 2 },
      "constraint 'min_length' (5) is greater than 'max_length' (2)",
    ],
    ["string", { pattern: 5 }, "constraint 'pattern' must be a string, got 5 (number)"],
    [
      "string",
      { enum: "abc" },
      "constraint 'enum' must be an array of strings, got 'abc' (string)",
    ],
    [
      "string",
      { enum: ["a", 2] },
      "constraint 'enum' must be an array of strings, item 1 is 2 (number)",
    ],
    [
      "choice",
      { choices: [null] },
      "constraint 'choices' must be an array of strings, item 0 is null",
    ],
    ["module", { allowed_modules: {} }, "constraint 'allowed_modules' must be an array of strings"],
    [
      "embedding",
      { dimensions: 0 },
      "constraint 'dimensions' must be a positive integer, got 0 (number)",
    ],
    [
      "embedding",
      { dimensions: 2.5 },
      "constraint 'dimensions' must be a positive integer, got 2.5 (number)",
    ],
    ["embedding", { dimensions: "384" }, "constraint 'dimensions' must be a positive integer"],
    [
      "tensor",
      { shape: 6 },
      "constraint 'shape' must be an array of non-negative integers, got 6 (number)",
    ],
    [
      "tensor",
      { shape: [2, -3] },
      "constraint 'shape' must be an array of non-negative integers, item 1 is -3 (number)",
    ],
  ] as const)("rejects wrongly typed values: %s %j", (type, raw, message) => {
    expect(errorOf(() => parseConstraints(type, raw)).rawMessage).toContain(message);
  });

  it(`accepts a shape of ${MAX_TENSOR_DIMENSIONS} dimensions and refuses more`, () => {
    const shape = (n: number) => new Array<number>(n).fill(2);
    const most = shape(MAX_TENSOR_DIMENSIONS);
    expect(parseConstraints("tensor", { shape: most }).rules.shape).toEqual(most);
    for (const n of [MAX_TENSOR_DIMENSIONS + 1, 100_000]) {
      expect(errorOf(() => parseConstraints("tensor", { shape: shape(n) })).rawMessage).toBe(
        `constraint 'shape' must have at most ${MAX_TENSOR_DIMENSIONS} dimensions, got ${n}`,
      );
    }
  });

  it("refuses constraints text nesting deeper than the JSON limit", () => {
    const deep = (n: number) => `{"min":${"[".repeat(n)}1${"]".repeat(n)}}`;
    for (const n of [MAX_JSON_DEPTH, 200_000]) {
      expect(errorOf(() => parseConstraints("float", deep(n))).rawMessage).toBe(
        `constraints nest deeper than ${MAX_JSON_DEPTH} levels`,
      );
    }
    expect(errorOf(() => parseConstraints("float", deep(MAX_JSON_DEPTH - 1))).rawMessage).toBe(
      "constraint 'min' must be a finite number, got an array of 1 item",
    );
  });

  it("allows min == max and min_length == max_length", () => {
    expect(parseConstraints("float", { min: 1, max: 1 }).rules).toEqual({
      min: 1,
      max: 1,
      finiteOnly: true,
    });
    expect(parseConstraints("string", { min_length: 2, max_length: 2 }).json).toBe(
      '{"max_length":2,"min_length":2}',
    );
  });

  it.each([
    ['"abc"', "constraints must be a JSON object, got 'abc' (string)"],
    ["[1]", "constraints must be a JSON object, got an array of 1 item"],
    ["42", "constraints must be a JSON object, got 42 (number)"],
    ["{min: 1}", "constraints are not valid JSON"],
  ])("rejects constraints text %s", (text, message) => {
    expect(errorOf(() => parseConstraints("float", text)).rawMessage).toContain(message);
  });

  it("rejects non-plain objects", () => {
    const input = new Map([["min", 1]]) as unknown as Record<string, unknown>;
    expect(errorOf(() => parseConstraints("float", input)).rawMessage).toBe(
      "constraints must be a JSON object, got a Map",
    );
  });

  describe("pattern", () => {
    it.each([
      ["(", "invalid pattern '(': missing closing ): `(`"],
      ["[z-a]", "invalid pattern '[z-a]': invalid character class range"],
      ["a{2,1}", "invalid pattern 'a{2,1}': invalid repeat count"],
      ["x**", "invalid pattern 'x**': invalid nested repetition operator"],
      // RE2 has no backreferences and no lookaround: rejected, never treated as literals.
      ["(a)\\1", "invalid pattern '(a)\\1': invalid escape sequence"],
      ["(?=a)", "invalid pattern '(?=a)': invalid or unsupported Perl syntax"],
    ])("rejects %s at parse time", (pattern, message) => {
      expect(errorOf(() => parseConstraints("string", { pattern })).rawMessage).toContain(message);
    });

    it("compiles once and tests unanchored", () => {
      const c = parseConstraints("string", '{"pattern":"b+"}');
      expect(c.rules.pattern?.source).toBe("b+");
      expect(c.rules.pattern?.test("abbc")).toBe(true);
      expect(c.rules.pattern?.test("ac")).toBe(false);
    });
  });

  describe("allow_non_finite", () => {
    it.each([
      [{ min: 0 }, true],
      [{ max: 0 }, true],
      [{ min: 0, max: 1, allow_non_finite: false }, true],
      [{ allow_non_finite: false }, true],
      [{ min: 0, max: 1, allow_non_finite: true }, undefined],
      [{ allow_non_finite: true }, undefined],
      [{ min: 0, allow_non_finite: null }, true],
    ])("%j refuses non-finite values: %s", (raw, finiteOnly) => {
      expect(parseConstraints("float", raw).rules.finiteOnly).toBe(finiteOnly);
    });

    it("keeps snakepit's JSON as it is: the default is not written out", () => {
      expect(parseConstraints("float", '{"min":0,"max":1}').json).toBe('{"max":1,"min":0}');
      expect(parseConstraints("float", { max: 1, allow_non_finite: true }).json).toBe(
        '{"allow_non_finite":true,"max":1}',
      );
    });

    it("is a float constraint only, and a boolean", () => {
      expect(errorOf(() => parseConstraints("float", { allow_non_finite: 1 })).rawMessage).toBe(
        "constraint 'allow_non_finite' must be true or false, got 1 (number)",
      );
      expect(
        errorOf(() => parseConstraints("integer", { allow_non_finite: true })).rawMessage,
      ).toBe("constraint 'allow_non_finite' is not allowed for type integer: allowed are min, max");
    });
  });

  it("drops empty allowed lists from the rules but keeps them in the JSON", () => {
    const c = parseConstraints("choice", { choices: [] });
    expect(c.json).toBe('{"choices":[]}');
    expect(c.rules.allowed).toBeUndefined();
  });
});

describe("constraintsFromJson", () => {
  it("parses each distinct type and text once and keeps refusing bad ones", () => {
    const a = constraintsFromJson("float", '{"min":0,"max":2}');
    expect(constraintsFromJson("float", '{"min":0,"max":2}')).toBe(a);
    expect(constraintsFromJson("integer", '{"min":0,"max":2}')).not.toBe(a);
    expect(a.raw).toEqual({ min: 0, max: 2 });
    for (let i = 0; i < 2; i++) {
      expect(errorOf(() => constraintsFromJson("string", '{"pattern":"("}')).rawMessage).toContain(
        "invalid pattern",
      );
    }
  });
});
