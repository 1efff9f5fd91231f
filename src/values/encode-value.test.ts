import { Code } from "@connectrpc/connect";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { thrownBy } from "../../test/support/errors.js";
import { validateValue } from "./check-value.js";
import { decodeValue } from "./decode-value.js";
import { encodeValue } from "./encode-value.js";
import type { VariableType, VariableValue } from "./variable-type.js";

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

const errorOf = (fn: () => unknown) => thrownBy(fn, Code.InvalidArgument);

describe("encodeValue: exact bytes", () => {
  it.each([
    ["float", 0.7, "0.7"],
    ["float", 1, "1"],
    ["float", 1e21, "1e+21"],
    ["float", -0, "0"], // JSON has no -0: the JSON form sends it as 0
    ["float", Number.NaN, '"NaN"'],
    ["float", Number.POSITIVE_INFINITY, '"Infinity"'],
    ["float", Number.NEGATIVE_INFINITY, '"-Infinity"'],
    ["integer", 42, "42"],
    ["integer", -7, "-7"],
    ["string", 'héllo "q"\n', '"héllo \\"q\\"\\n"'],
    ["string", "", '""'],
    ["choice", "fast", '"fast"'],
    ["module", "ChainOfThought", '"ChainOfThought"'],
    ["boolean", true, "true"],
    ["boolean", false, "false"],
    ["embedding", [0.1, 0.2], "[0.1,0.2]"],
    ["embedding", [], "[]"],
    ["embedding", [1, Number.NaN, Number.NEGATIVE_INFINITY], '[1,"NaN","-Infinity"]'],
    ["tensor", { shape: [2, 2], data: [1, 2, 3, 4] }, '{"shape":[2,2],"data":[1,2,3,4]}'],
    ["tensor", { data: [1, 2], shape: [2] }, '{"shape":[2],"data":[1,2]}'],
    ["tensor", { shape: [1], data: [Number.NaN] }, '{"shape":[1],"data":["NaN"]}'],
  ] as const)("%s %o → %s", (type, value, json) => {
    const { any, binary } = encodeValue(type, value as VariableValue);
    expect(any.typeUrl).toBe(`type.googleapis.com/snakepit.${type}`);
    expect(text(any.value)).toBe(json);
    expect(binary).toBeUndefined();
  });

  it("encodes strings as UTF-8", () => {
    expect([...encodeValue("string", "é").any.value]).toEqual([0x22, 0xc3, 0xa9, 0x22]);
  });

  it("normalizes before encoding", () => {
    expect(text(encodeValue("integer", 3.0).any.value)).toBe("3");
    expect(text(encodeValue("float", "NaN" as unknown as number).any.value)).toBe('"NaN"');
    expect(text(encodeValue("boolean", "TRUE" as unknown as boolean).any.value)).toBe("true");
  });

  it("rejects invalid values", () => {
    expect(errorOf(() => encodeValue("integer", 2.5)).rawMessage).toBe(
      "must be an integer, got 2.5",
    );
    expect(errorOf(() => encodeValue("string", 42)).rawMessage).toBe(
      "cannot convert 42 (number) to string",
    );
  });
});

describe("encodeValue: binary form", () => {
  it("writes metadata and little-endian float32", () => {
    const { any, binary } = encodeValue("embedding", [1, -2], { binary: true });
    expect(any.typeUrl).toBe("type.googleapis.com/snakepit.embedding.binary");
    expect(text(any.value)).toBe('{"format":"f32le","dtype":"float32","shape":[2]}');
    // 1.0f = 0x3f800000, -2.0f = 0xc0000000, little-endian
    expect([...(binary ?? [])]).toEqual([0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0]);
  });

  it("writes the tensor shape", () => {
    const { any, binary } = encodeValue(
      "tensor",
      { shape: [2, 1], data: [0.5, 0.25] },
      { binary: true },
    );
    expect(any.typeUrl).toBe("type.googleapis.com/snakepit.tensor.binary");
    expect(text(any.value)).toBe('{"format":"f32le","dtype":"float32","shape":[2,1]}');
    expect(binary?.byteLength).toBe(8);
  });

  it("switches to binary above the threshold, and not at it", () => {
    expect(encodeValue("embedding", [1, 2, 3], { binaryThreshold: 3 }).binary).toBeUndefined();
    expect(encodeValue("embedding", [1, 2, 3, 4], { binaryThreshold: 3 }).binary).toHaveLength(16);
    expect(
      encodeValue("tensor", { shape: [4], data: [1, 2, 3, 4] }, { binaryThreshold: 3 }).binary,
    ).toHaveLength(16);
    expect(
      encodeValue("embedding", [1, 2, 3, 4], { binary: false, binaryThreshold: 3 }).binary,
    ).toBeUndefined();
    // The threshold never applies to types without a binary form.
    expect(encodeValue("string", "long text", { binaryThreshold: 0 }).binary).toBeUndefined();
  });

  it("refuses the binary form for other types", () => {
    expect(errorOf(() => encodeValue("float", 1, { binary: true })).rawMessage).toBe(
      "the binary form is only for embedding and tensor, not float",
    );
  });
});

/** Values as they are after normalization, for every type. */
const normalizedValues: Record<VariableType, fc.Arbitrary<VariableValue>> = {
  float: fc.double(),
  integer: fc.maxSafeInteger(),
  string: fc.string({ unit: "binary" }),
  boolean: fc.boolean(),
  choice: fc.string({ unit: "grapheme" }),
  module: fc.string(),
  embedding: fc.array(fc.double()),
  tensor: fc.array(fc.integer({ min: 0, max: 5 }), { maxLength: 4 }).chain((shape) => {
    const n = shape.reduce((a, b) => a * b, 1);
    return fc.array(fc.double(), { minLength: n, maxLength: n }).map((data) => ({ shape, data }));
  }),
};

/** What the JSON form gives back: the same value, except that -0 becomes 0. */
function jsonImage(value: VariableValue): VariableValue {
  const fix = (n: number) => (Object.is(n, -0) ? 0 : n);
  if (typeof value === "number") return fix(value);
  if (Array.isArray(value)) return value.map(fix);
  if (typeof value === "object") return { shape: value.shape, data: value.data.map(fix) };
  return value;
}

describe("encode → decode → validate is the identity", () => {
  it.each(Object.keys(normalizedValues) as VariableType[])("JSON form: %s", (type) => {
    fc.assert(
      fc.property(normalizedValues[type], (value) => {
        const { any, binary } = encodeValue(type, value);
        const decoded = decodeValue(any, binary);
        expect(decoded.type).toBe(type);
        expect(validateValue(type, decoded.value)).toEqual(jsonImage(value));
      }),
    );
  });

  const float32 = fc.float(); // float32 values, including NaN, ±Infinity and -0

  it("binary form keeps float32 embeddings bit-exact, -0 included", () => {
    fc.assert(
      fc.property(fc.array(float32), (data) => {
        const { any, binary } = encodeValue("embedding", data, { binary: true });
        const decoded = decodeValue(any, binary);
        expect(validateValue("embedding", decoded.value)).toEqual(data);
      }),
    );
  });

  it("binary form keeps float32 tensors bit-exact", () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 4 }).chain((shape) => {
          const n = shape.reduce((a, b) => a * b, 1);
          return fc.array(float32, { minLength: n, maxLength: n }).map((data) => ({ shape, data }));
        }),
        (tensor) => {
          const { any, binary } = encodeValue("tensor", tensor, { binary: true });
          expect(validateValue("tensor", decodeValue(any, binary).value)).toEqual(tensor);
        },
      ),
    );
  });

  it("binary form rounds float64 data to float32", () => {
    const { any, binary } = encodeValue("embedding", [0.1], { binary: true });
    expect(decodeValue(any, binary).value).toEqual([Math.fround(0.1)]);
  });

  it("round-trips a tensor of 10^5 floats in both forms", () => {
    const n = 100_000;
    const data = Array.from({ length: n }, (_, i) => Math.fround(Math.sin(i) * 1e3));
    data[7] = -0;
    data[8] = Number.NaN;
    data[9] = Number.NEGATIVE_INFINITY;
    const tensor = { shape: [100, 1000], data };

    const bin = encodeValue("tensor", tensor, { binaryThreshold: 1024 });
    expect(bin.any.typeUrl).toBe("type.googleapis.com/snakepit.tensor.binary");
    expect(bin.binary?.byteLength).toBe(4 * n);
    const fromBinary = validateValue("tensor", decodeValue(bin.any, bin.binary).value);
    expect(fromBinary).toEqual(tensor);
    expect(Object.is(fromBinary.data[7], -0)).toBe(true);

    const json = encodeValue("tensor", tensor);
    const fromJson = validateValue("tensor", decodeValue(json.any).value);
    expect(fromJson.data[8]).toBeNaN();
    expect(fromJson).toEqual(jsonImage(tensor));
  });
});
