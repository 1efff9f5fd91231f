import { create } from "@bufbuild/protobuf";
import { type Any, AnySchema } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { thrownBy } from "../../test/support/errors.js";
import { validateValue } from "./check-value.js";
import { decodeValue } from "./decode-value.js";
import { MAX_JSON_DEPTH } from "./json-depth.js";
import { MAX_TENSOR_DIMENSIONS } from "./variable-type.js";

const utf8 = new TextEncoder();

function anyOf(typeUrl: string, value: string | Uint8Array): Any {
  return create(AnySchema, {
    typeUrl,
    value: typeof value === "string" ? utf8.encode(value) : value,
  });
}

const url = (type: string) => `type.googleapis.com/snakepit.${type}`;

const errorOf = (fn: () => unknown) => thrownBy(fn, Code.InvalidArgument);

describe("decodeValue: JSON form", () => {
  it.each([
    ["float", "0.7", 0.7],
    ["float", "1.0", 1], // Python writes floats as 1.0
    ["float", "3", 3],
    ["float", '"NaN"', Number.NaN],
    ["float", '"Infinity"', Number.POSITIVE_INFINITY],
    ["float", '"-Infinity"', Number.NEGATIVE_INFINITY],
    ["float", '"inf"', "inf"], // not ours: left for validation to reject
    ["integer", "42", 42],
    ["integer", '"NaN"', "NaN"], // special strings are only numbers where floats belong
    ["string", '"NaN"', "NaN"],
    ["string", '"héllo"', "héllo"],
    ["boolean", "true", true],
    ["choice", '"fast"', "fast"],
    ["module", '"Predict"', "Predict"],
    ["embedding", '[0.1,"NaN","-Infinity",2]', [0.1, Number.NaN, Number.NEGATIVE_INFINITY, 2]],
    [
      "tensor",
      '{"shape":[2],"data":["Infinity",1]}',
      { shape: [2], data: [Number.POSITIVE_INFINITY, 1] },
    ],
    ["tensor", '{"shape":[1,2],"data":[["NaN",1]]}', { shape: [1, 2], data: [[Number.NaN, 1]] }],
  ] as const)("%s %s", (type, json, value) => {
    expect(decodeValue(anyOf(url(type), json))).toEqual({ type, value });
  });

  it("accepts the bare NaN/Infinity tokens Python's json.dumps writes, where floats belong", () => {
    expect(decodeValue(anyOf(url("float"), "NaN")).value).toBeNaN();
    expect(decodeValue(anyOf(url("float"), "-Infinity")).value).toBe(Number.NEGATIVE_INFINITY);
    expect(decodeValue(anyOf(url("embedding"), "[NaN, Infinity, -Infinity, 1.5]")).value).toEqual([
      Number.NaN,
      Number.POSITIVE_INFINITY,
      Number.NEGATIVE_INFINITY,
      1.5,
    ]);
    expect(decodeValue(anyOf(url("tensor"), '{"shape": [2], "data": [NaN, 1.0]}')).value).toEqual({
      shape: [2],
      data: [Number.NaN, 1],
    });
    // Not for other types, and never inside strings.
    expect(errorOf(() => decodeValue(anyOf(url("string"), "NaN"))).rawMessage).toContain(
      "string value is not valid JSON",
    );
    expect(errorOf(() => decodeValue(anyOf(url("float"), '"NaN" x'))).rawMessage).toContain(
      "float value is not valid JSON",
    );
  });

  it("reads the type from the text after the last dot", () => {
    expect(decodeValue(anyOf("snakepit.integer", "1")).type).toBe("integer");
    expect(decodeValue(anyOf("type.googleapis.com/unified_bridge.float", "1")).type).toBe("float");
    expect(decodeValue(anyOf("dspex.variables/float", "1")).type).toBe("float");
  });

  it.each([
    [undefined, "value is required"],
    [create(AnySchema), "value is required"],
    [anyOf(url("floaty"), "1"), "unknown type URL 'type.googleapis.com/snakepit.floaty'"],
    [anyOf("type.googleapis.com/google.protobuf.StringValue", '"x"'), "unknown type URL"],
    [anyOf(url("float"), ""), "float value is not valid JSON"],
    [anyOf(url("float"), "{"), "float value is not valid JSON"],
    [anyOf(url("string"), new Uint8Array([0x22, 0xff, 0x22])), "string value is not valid UTF-8"],
    [
      anyOf(url("float.binary"), "{}"),
      "the binary form is only for embedding and tensor, not float",
    ],
  ])("rejects %o", (any, message) => {
    expect(errorOf(() => decodeValue(any)).rawMessage).toContain(message);
  });

  it("lists the known types in the unknown type URL message", () => {
    expect(errorOf(() => decodeValue(anyOf("x.y/z", "1"))).rawMessage).toBe(
      "unknown type URL 'x.y/z': expected type.googleapis.com/snakepit.<type> with <type> one of float, integer, string, boolean, choice, module, embedding, tensor",
    );
  });

  it("ignores a binary payload for the JSON form", () => {
    expect(decodeValue(anyOf(url("embedding"), "[1]"), new Uint8Array([1, 2, 3])).value).toEqual([
      1,
    ]);
  });
});

describe("decodeValue: binary form", () => {
  const meta = (shape: number[], extra = "") =>
    `{"format":"f32le","dtype":"float32","shape":${JSON.stringify(shape)}${extra}}`;
  const f32 = (...values: number[]) => new Uint8Array(new Float32Array(values).buffer);

  it("decodes little-endian float32 for embeddings and tensors", () => {
    const payload = new Uint8Array([0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0]); // 1, -2
    expect(decodeValue(anyOf(url("embedding.binary"), meta([2])), payload)).toEqual({
      type: "embedding",
      value: [1, -2],
    });
    expect(decodeValue(anyOf(url("tensor.binary"), meta([1, 2])), payload)).toEqual({
      type: "tensor",
      value: { shape: [1, 2], data: [1, -2] },
    });
  });

  it("reads payloads at any byte offset", () => {
    const backing = new Uint8Array(9);
    backing.set([0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0], 1);
    const unaligned = backing.subarray(1);
    expect(decodeValue(anyOf(url("embedding.binary"), meta([2])), unaligned).value).toEqual([
      1, -2,
    ]);
  });

  it("accepts an empty tensor with no payload", () => {
    expect(decodeValue(anyOf(url("tensor.binary"), meta([0, 4]))).value).toEqual({
      shape: [0, 4],
      data: [],
    });
  });

  it.each([
    [
      url("embedding.binary"),
      meta([3]),
      f32(1, 2),
      "binary payload has 8 bytes, expected 12 (float32, shape [3])",
    ],
    [
      url("tensor.binary"),
      meta([2, 2]),
      f32(1, 2, 3, 4, 5),
      "binary payload has 20 bytes, expected 16 (float32, shape [2,2])",
    ],
    [
      url("tensor.binary"),
      meta([1]),
      undefined,
      "binary payload has 0 bytes, expected 4 (float32, shape [1])",
    ],
    [
      url("embedding.binary"),
      meta([2, 1]),
      f32(1, 2),
      "binary embedding metadata must have a 1-dimensional shape, got [2,1]",
    ],
    [
      url("tensor.binary"),
      '{"format":"f32le","dtype":"float64","shape":[1]}',
      f32(1, 2),
      "binary dtype 'float64' (string) is not supported: expected 'float32'",
    ],
    [
      url("tensor.binary"),
      '{"format":"f32le","shape":[-1]}',
      f32(),
      "binary metadata 'shape' must be an array of non-negative integers, got an array of 1 item",
    ],
    [
      url("tensor.binary"),
      '{"format":"f32le"}',
      f32(),
      "binary metadata 'shape' must be an array of non-negative integers, got undefined",
    ],
    [
      url("tensor.binary"),
      '{"format":"f64le","shape":[1]}',
      f32(1),
      "binary payload format 'f64le' is not supported: expected 'f32le' (pickle and Erlang term payloads are never decoded)",
    ],
  ])("rejects %s %s", (typeUrl, metadata, payload, message) => {
    expect(errorOf(() => decodeValue(anyOf(typeUrl, metadata), payload)).rawMessage).toBe(message);
  });

  describe("never decodes pickle or Erlang terms", () => {
    // pickle protocol 4: PROTO 4, FRAME, EMPTY_LIST, ... (the original's binary payload)
    const pickle = new Uint8Array([0x80, 0x04, 0x95, 0x15, 0, 0, 0, 0, 0, 0, 0, 0x5d, 0x94, 0x28]);
    // Erlang external term format: version 131, LIST_EXT ...
    const erlang = new Uint8Array([0x83, 0x6c, 0, 0, 0, 2, 0x61, 1, 0x61, 2, 0x6a]);
    const refused = "(pickle and Erlang term payloads are never decoded)";

    it.each([
      // The metadata the original Python side wrote.
      [
        '{"shape":[3],"dtype":"float32","binary_format":"pickle","type":"embedding"}',
        pickle,
        "'pickle'",
      ],
      [
        '{"shape":[2],"dtype":"float32","binary_format":"erlang_binary"}',
        erlang,
        "'erlang_binary'",
      ],
      // No format named: the payload is sniffed only to name it.
      ['{"shape":[3],"dtype":"float32"}', pickle, "'pickle'"],
      ['{"shape":[2]}', erlang, "'erlang term'"],
      ['{"shape":[1]}', new Uint8Array([1, 2, 3, 4]), "'unknown'"],
      // Metadata that is not even JSON.
      ["\x80\x04", pickle, "'pickle'"],
      ["[1,2]", erlang, "'erlang term'"],
    ])("metadata %s", (metadata, payload, format) => {
      const message = errorOf(() =>
        decodeValue(anyOf(url("embedding.binary"), metadata), payload),
      ).rawMessage;
      expect(message).toBe(
        `binary payload format ${format} is not supported: expected 'f32le' ${refused}`,
      );
    });
  });
});

describe("decodeValue: nesting", () => {
  const nested = (levels: number, inner = "1") =>
    `${"[".repeat(levels)}${inner}${"]".repeat(levels)}`;

  it.each([
    ["embedding", nested(MAX_JSON_DEPTH + 1)],
    ["embedding", nested(200_000)],
    ["float", nested(200_000)],
    ["tensor", `{"shape":[1],"data":${nested(200_000)}}`],
    ["string", `{"a":${nested(MAX_JSON_DEPTH)}}`],
  ])("refuses %s JSON nesting deeper than the limit", (type, text) => {
    expect(errorOf(() => decodeValue(anyOf(url(type), text))).rawMessage).toBe(
      `${type} value nests deeper than ${MAX_JSON_DEPTH} levels`,
    );
  });

  it("takes a tensor nested to mirror a shape of the most dimensions allowed", () => {
    const shape = new Array<number>(MAX_TENSOR_DIMENSIONS).fill(1);
    const text = `{"shape":[${shape.join(",")}],"data":${nested(MAX_TENSOR_DIMENSIONS, '"NaN"')}}`;
    const { value } = decodeValue(anyOf(url("tensor"), text));
    expect(validateValue("tensor", value)).toEqual({ shape, data: [Number.NaN] });
  });

  it("refuses binary metadata nesting deeper than the limit", () => {
    const meta = `{"format":"f32le","shape":[1],"x":${nested(MAX_JSON_DEPTH)}}`;
    const any = anyOf(url("embedding.binary"), meta);
    expect(errorOf(() => decodeValue(any, new Uint8Array(4))).rawMessage).toBe(
      `binary metadata nests deeper than ${MAX_JSON_DEPTH} levels`,
    );
  });
});
