import { Code } from "@connectrpc/connect";
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import { thrownBy } from "../../test/support/errors.js";
import { checkValue, validateValue } from "./check-value.js";
import { parseConstraints } from "./constraints.js";
import { loadPatternEngine } from "./pattern-engine.js";
import { MAX_TENSOR_DIMENSIONS, type VariableType } from "./variable-type.js";

// Exact pattern checks, as the server makes them (pattern-engine.test.ts
// covers a client's first pattern, met before the engine has loaded).
beforeAll(async () => {
  await loadPatternEngine();
});

type Case = readonly [
  type: VariableType,
  constraints: Record<string, unknown>,
  input: unknown,
  expected: { value: unknown } | { error: string },
];

const cases: readonly Case[] = [
  // float
  ["float", {}, 0.7, { value: 0.7 }],
  ["float", {}, 3, { value: 3 }],
  ["float", {}, -0, { value: -0 }],
  ["float", {}, "NaN", { value: Number.NaN }],
  ["float", {}, "Infinity", { value: Number.POSITIVE_INFINITY }],
  ["float", {}, "-Infinity", { value: Number.NEGATIVE_INFINITY }],
  ["float", {}, "inf", { error: "cannot convert 'inf' (string) to float" }],
  ["float", {}, "1.5", { error: "cannot convert '1.5' (string) to float" }],
  ["float", {}, true, { error: "cannot convert true (boolean) to float" }],
  ["float", {}, null, { error: "cannot convert null to float" }],
  ["float", {}, [1], { error: "cannot convert an array of 1 item to float" }],
  ["float", { min: 0, max: 2 }, 2, { value: 2 }],
  ["float", { min: 0, max: 2 }, 0, { value: 0 }],
  ["float", { min: 0, max: 2 }, 2.5, { error: "value 2.5 is above maximum 2" }],
  ["float", { min: 0, max: 2 }, -1, { error: "value -1 is below minimum 0" }],
  ["float", { min: 0.5 }, 0.25, { error: "value 0.25 is below minimum 0.5" }],
  ["float", { max: 1 }, 1e300, { error: "value 1e+300 is above maximum 1" }],
  // Strict by default with bounds: NaN and ±Infinity are refused, an
  // infinity beyond a bound with the usual message.
  [
    "float",
    { min: 0, max: 2 },
    Number.NaN,
    { error: "value NaN is not a finite number; set constraint 'allow_non_finite' to true" },
  ],
  [
    "float",
    { min: 0, max: 2 },
    Number.POSITIVE_INFINITY,
    { error: "value Infinity is above maximum 2" },
  ],
  ["float", { min: 0, max: 2 }, "-Infinity", { error: "value -Infinity is below minimum 0" }],
  ["float", { min: 0 }, "Infinity", { error: "value Infinity is not a finite number" }],
  ["float", { max: 0 }, "NaN", { error: "value NaN is not a finite number" }],
  [
    "float",
    { allow_non_finite: false },
    "-Infinity",
    { error: "value -Infinity is not a finite number" },
  ],
  ["float", { allow_non_finite: false }, 1e300, { value: 1e300 }],
  // allow_non_finite: true keeps the original's rule: special values bypass the bounds.
  ["float", { min: 0, max: 2, allow_non_finite: true }, Number.NaN, { value: Number.NaN }],
  [
    "float",
    { min: 0, max: 2, allow_non_finite: true },
    "Infinity",
    { value: Number.POSITIVE_INFINITY },
  ],
  [
    "float",
    { min: 0, max: 2, allow_non_finite: true },
    "-Infinity",
    { value: Number.NEGATIVE_INFINITY },
  ],
  [
    "float",
    { min: 0, max: 2, allow_non_finite: true },
    2.5,
    { error: "value 2.5 is above maximum 2" },
  ],
  // integer
  ["integer", {}, 42, { value: 42 }],
  ["integer", {}, 3.0, { value: 3 }],
  ["integer", {}, -0, { value: 0 }],
  ["integer", {}, 7n, { value: 7 }],
  ["integer", {}, 2.5, { error: "must be an integer, got 2.5" }],
  ["integer", {}, Number.NaN, { error: "must be an integer, got NaN" }],
  ["integer", {}, Number.POSITIVE_INFINITY, { error: "must be an integer, got Infinity" }],
  ["integer", {}, 2 ** 60, { error: "outside the safe range" }],
  ["integer", {}, 2n ** 60n, { error: "outside the safe range" }],
  ["integer", {}, "5", { error: "cannot convert '5' (string) to integer" }],
  ["integer", {}, "x", { error: "cannot convert 'x' (string) to integer" }],
  ["integer", {}, true, { error: "cannot convert true (boolean) to integer" }],
  ["integer", { min: 1, max: 1000 }, 1000, { value: 1000 }],
  ["integer", { min: 1, max: 1000 }, 1001, { error: "value 1001 is above maximum 1000" }],
  ["integer", { min: 1, max: 1000 }, 0, { error: "value 0 is below minimum 1" }],
  // string
  ["string", {}, "", { value: "" }],
  ["string", {}, "héllo 🌍", { value: "héllo 🌍" }],
  ["string", {}, 42, { error: "cannot convert 42 (number) to string" }],
  ["string", {}, { a: 1 }, { error: "cannot convert an object to string" }],
  ["string", { min_length: 5 }, "abc", { error: "length 3 is below min_length 5" }],
  ["string", { min_length: 3 }, "abc", { value: "abc" }],
  ["string", { max_length: 10 }, "abcdefghijkl", { error: "length 12 is above max_length 10" }],
  ["string", { max_length: 2 }, "😀😀", { value: "😀😀" }], // 2 code points, 4 UTF-16 units
  ["string", { max_length: 2 }, "😀😀😀", { error: "length 3 is above max_length 2" }],
  ["string", { min_length: 2 }, "😀", { error: "length 1 is below min_length 2" }],
  ["string", { pattern: "^a+$" }, "aaa", { value: "aaa" }],
  ["string", { pattern: "^a+$" }, "aab", { error: "does not match pattern '^a+$'" }],
  ["string", { pattern: "b" }, "aaabccc", { value: "aaabccc" }], // unanchored
  ["string", { pattern: "\\d{3}" }, "tel 555-1234", { value: "tel 555-1234" }],
  ["string", { pattern: "\\d{3}" }, "tel 55", { error: "does not match pattern '\\d{3}'" }],
  ["string", { enum: ["a", "b", "c"] }, "b", { value: "b" }],
  ["string", { enum: ["a", "b", "c"] }, "d", { error: "must be one of [a, b, c], got 'd'" }],
  ["string", { enum: [] }, "anything", { value: "anything" }],
  // boolean
  ["boolean", {}, true, { value: true }],
  ["boolean", {}, false, { value: false }],
  ["boolean", {}, "true", { value: true }],
  ["boolean", {}, "false", { value: false }],
  ["boolean", {}, "True", { value: true }],
  ["boolean", {}, "FALSE", { value: false }],
  ["boolean", {}, 1, { value: true }],
  ["boolean", {}, 0, { value: false }],
  ["boolean", {}, 2, { error: "cannot convert 2 (number) to boolean" }],
  ["boolean", {}, 0.5, { error: "cannot convert 0.5 (number) to boolean" }],
  ["boolean", {}, "yes", { error: "cannot convert 'yes' (string) to boolean" }],
  ["boolean", {}, null, { error: "cannot convert null to boolean" }],
  // choice
  ["choice", {}, "anything", { value: "anything" }],
  ["choice", { choices: ["fast", "slow"] }, "fast", { value: "fast" }],
  ["choice", { choices: ["fast", "slow"] }, "medium", { error: "must be one of [fast, slow]" }],
  ["choice", { choices: [] }, "medium", { value: "medium" }],
  ["choice", { choices: ["1"] }, 1, { error: "cannot convert 1 (number) to choice" }],
  // module
  ["module", {}, "Predict", { value: "Predict" }],
  [
    "module",
    { allowed_modules: ["Predict", "ChainOfThought"] },
    "ChainOfThought",
    {
      value: "ChainOfThought",
    },
  ],
  [
    "module",
    { allowed_modules: ["Predict", "ChainOfThought"] },
    "ReAct",
    {
      error: "must be one of [Predict, ChainOfThought]",
    },
  ],
  ["module", {}, false, { error: "cannot convert false (boolean) to module" }],
  // embedding
  ["embedding", {}, [0.1, 0.2, 3], { value: [0.1, 0.2, 3] }],
  ["embedding", {}, [], { value: [] }],
  ["embedding", {}, ["NaN", "Infinity", -0], { value: [Number.NaN, Number.POSITIVE_INFINITY, -0] }],
  ["embedding", {}, new Float32Array([0.5, 1.5]), { value: [0.5, 1.5] }],
  ["embedding", {}, [1, "x", 3], { error: "element 1: cannot convert 'x' (string) to float" }],
  ["embedding", {}, [1, null], { error: "element 1: cannot convert null to float" }],
  ["embedding", {}, "0.1,0.2", { error: "cannot convert '0.1,0.2' (string) to embedding" }],
  ["embedding", {}, { 0: 1, length: 1 }, { error: "cannot convert an object to embedding" }],
  ["embedding", { dimensions: 3 }, [1, 2, 3], { value: [1, 2, 3] }],
  ["embedding", { dimensions: 384 }, [1, 2, 3], { error: "must have 384 dimensions, got 3" }],
  // tensor
  ["tensor", {}, { shape: [2], data: [1, 2] }, { value: { shape: [2], data: [1, 2] } }],
  [
    "tensor",
    {},
    { data: [1, 2, 3, 4], shape: [2, 2] },
    {
      value: { shape: [2, 2], data: [1, 2, 3, 4] },
    },
  ],
  ["tensor", {}, { shape: [], data: [5] }, { value: { shape: [], data: [5] } }],
  ["tensor", {}, { shape: [0, 3], data: [] }, { value: { shape: [0, 3], data: [] } }],
  [
    "tensor",
    {},
    { shape: [2], data: ["NaN", "-Infinity"] },
    {
      value: { shape: [2], data: [Number.NaN, Number.NEGATIVE_INFINITY] },
    },
  ],
  [
    "tensor",
    {},
    { shape: [2, 3], data: [1, 2, 3, 4, 5] },
    {
      error: "shape [2,3] needs 6 values, got 5",
    },
  ],
  [
    "tensor",
    {},
    {
      shape: [2, 3],
      data: [
        [1, 2, 3],
        [4, 5, 6],
      ],
    },
    {
      value: { shape: [2, 3], data: [1, 2, 3, 4, 5, 6] },
    },
  ],
  [
    "tensor",
    {},
    { shape: [2, 2], data: [[1, 2, 3], [4]] },
    {
      error: "tensor data nesting does not match shape [2,2]",
    },
  ],
  [
    "tensor",
    {},
    { shape: [2, 1, 2], data: [[[1, 2]], [[3, 4]]] },
    {
      value: { shape: [2, 1, 2], data: [1, 2, 3, 4] },
    },
  ],
  [
    "tensor",
    {},
    { shape: [2], data: [1, "x"] },
    {
      error: "tensor data element 1: cannot convert 'x' (string) to float",
    },
  ],
  [
    "tensor",
    {},
    { shape: [2, -1], data: [] },
    {
      error: "tensor shape must be an array of non-negative integers, item 1 is -1 (number)",
    },
  ],
  ["tensor", {}, { shape: [1.5], data: [1] }, { error: "non-negative integers, item 0 is 1.5" }],
  [
    "tensor",
    {},
    { shape: [1], data: [1], dtype: "float32" },
    {
      error: "tensor has unexpected key 'dtype': expected only shape and data",
    },
  ],
  ["tensor", {}, { data: [1] }, { error: "tensor is missing 'shape'" }],
  ["tensor", {}, { shape: [1] }, { error: "tensor is missing 'data'" }],
  ["tensor", {}, { shape: [1], data: "1" }, { error: "tensor data must be an array of numbers" }],
  ["tensor", {}, [1, 2], { error: "cannot convert an array of 2 items to tensor" }],
  ["tensor", {}, new Map(), { error: "cannot convert a Map to tensor" }],
  [
    "tensor",
    { shape: [2, 3] },
    { shape: [2, 3], data: [1, 2, 3, 4, 5, 6] },
    {
      value: { shape: [2, 3], data: [1, 2, 3, 4, 5, 6] },
    },
  ],
  [
    "tensor",
    { shape: [2, 3] },
    { shape: [2, 2], data: [1, 2, 3, 4] },
    {
      error: "shape [2,2] does not match required shape [2,3]",
    },
  ],
  [
    "tensor",
    { shape: [2, 3] },
    { shape: [3, 2], data: [1, 2, 3, 4, 5, 6] },
    {
      error: "shape [3,2] does not match required shape [2,3]",
    },
  ],
];

const errorOf = (fn: () => unknown) => thrownBy(fn);

describe("validateValue / checkValue", () => {
  it.each(cases)("%s %j: %o → %o", (type, raw, input, expected) => {
    const constraints = parseConstraints(type, raw);
    const result = checkValue(type, input, constraints);
    if ("value" in expected) {
      // toEqual tells -0 from 0 and equates NaN with NaN, as the contract needs.
      expect(result).toEqual({ ok: true, value: expected.value });
      expect(validateValue(type, input, constraints)).toEqual(expected.value);
    } else {
      expect(result.ok).toBe(false);
      if (!result.ok) expect(result.message).toContain(expected.error);
      const error = errorOf(() => validateValue(type, input, constraints));
      expect(error.code).toBe(Code.InvalidArgument);
      expect(error.rawMessage).toContain(expected.error);
    }
  });

  it("prefixes messages with the variable name", () => {
    const c = parseConstraints("float", { min: 0, max: 2 });
    const error = errorOf(() => validateValue("float", 2.5, c, "temperature"));
    expect(error.rawMessage).toBe("variable 'temperature': value 2.5 is above maximum 2");
    expect(checkValue("integer", 2.5, undefined, "n")).toEqual({
      ok: false,
      message: "variable 'n': must be an integer, got 2.5",
    });
  });

  it("rejects constraints parsed for another type", () => {
    const c = parseConstraints("integer", { min: 0 });
    const result = checkValue("float", 1, c);
    expect(result).toEqual({
      ok: false,
      message: "constraints for type integer cannot check a value of type float",
    });
  });

  it(`accepts tensors of ${MAX_TENSOR_DIMENSIONS} dimensions, flat or nested to mirror the shape`, () => {
    const shape = new Array<number>(MAX_TENSOR_DIMENSIONS).fill(1);
    let nested: unknown = [7];
    for (let i = 1; i < MAX_TENSOR_DIMENSIONS; i++) nested = [nested];
    expect(validateValue("tensor", { shape, data: [7] })).toEqual({ shape, data: [7] });
    expect(validateValue("tensor", { shape, data: nested })).toEqual({ shape, data: [7] });
  });

  it.each([MAX_TENSOR_DIMENSIONS + 1, 100_000])("refuses a tensor of %d dimensions", (n) => {
    const shape = new Array<number>(n).fill(1);
    const error = errorOf(() => validateValue("tensor", { shape, data: [1] }, undefined, "t"));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toBe(
      `variable 't': tensor shape must have at most ${MAX_TENSOR_DIMENSIONS} dimensions, got ${n}`,
    );
  });

  it("never modifies its input and returns fresh arrays", () => {
    const input = { shape: [2], data: ["NaN", 1] };
    const out = validateValue("tensor", input);
    expect(input.data[0]).toBe("NaN");
    expect(out.data).not.toBe(input.data);
    expect(out.shape).not.toBe(input.shape);
    const emb = [1, 2];
    expect(validateValue("embedding", emb)).not.toBe(emb);
  });

  it("keeps messages short for huge values", () => {
    const big = "x".repeat(100_000);
    const message = errorOf(() => validateValue("integer", big)).rawMessage;
    expect(message.length).toBeLessThan(150);
    expect(message).toContain("cannot convert 'xxx");
    const manyChoices = Array.from({ length: 1000 }, (_, i) => `c${i}`);
    const c = parseConstraints("choice", { choices: manyChoices });
    const m2 = errorOf(() => validateValue("choice", big, c)).rawMessage;
    expect(m2).toContain("must be one of [c0, c1,");
    expect(m2).toContain("980 more");
    expect(m2.length).toBeLessThan(400);
  });

  it("evaluates patterns with RE2, unanchored: a catastrophic pattern finishes", () => {
    const c = parseConstraints("string", { pattern: "(a+)+$" });
    const evil = `${"a".repeat(10_000)}!`;
    // A backtracking engine would not return here in our lifetime; RE2 is linear.
    const result = checkValue("string", evil, c);
    expect(result).toEqual({ ok: false, message: "does not match pattern '(a+)+$'" });
    // Unanchored: the match may start anywhere.
    expect(checkValue("string", `!${"a".repeat(10_000)}`, c).ok).toBe(true);
  });

  it("evaluates anchored catastrophic patterns with RE2", () => {
    const c = parseConstraints("string", { pattern: "^(a+)+$" });
    const evil = `${"a".repeat(10_000)}!`;
    const result = checkValue("string", evil, c);
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.message).toBe("does not match pattern '^(a+)+$'");
    expect(checkValue("string", "a".repeat(10_000), c).ok).toBe(true);
  });

  it("matches patterns on code points, not UTF-16 units", () => {
    const c = parseConstraints("string", { pattern: "^.$" });
    expect(checkValue("string", "😀", c).ok).toBe(true);
  });
});

const arbitraryInputs: Record<VariableType, fc.Arbitrary<unknown>> = {
  float: fc.oneof(fc.double(), fc.constantFrom("NaN", "Infinity", "-Infinity")),
  integer: fc.oneof(
    fc.maxSafeInteger(),
    fc.integer().map((n) => n * 1.0),
  ),
  string: fc.string({ unit: "binary" }),
  boolean: fc.oneof(fc.boolean(), fc.constantFrom("true", "false", "TRUE", 0, 1)),
  choice: fc.string(),
  module: fc.string(),
  embedding: fc.array(fc.oneof(fc.double(), fc.constantFrom("NaN", "Infinity"))),
  tensor: fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }).chain((shape) =>
    fc
      .array(fc.double(), {
        minLength: shape.reduce((a, b) => a * b, 1),
        maxLength: shape.reduce((a, b) => a * b, 1),
      })
      .map((data) => ({ shape, data })),
  ),
};

describe("validation is idempotent", () => {
  it.each(Object.keys(arbitraryInputs) as VariableType[])("%s", (type) => {
    fc.assert(
      fc.property(arbitraryInputs[type], (input) => {
        const once = validateValue(type, input);
        const twice = validateValue(type, once);
        expect(twice).toStrictEqual(once);
      }),
    );
  });
});
