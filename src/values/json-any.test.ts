import { create, fromJson, toBinary } from "@bufbuild/protobuf";
import {
  type Any,
  AnySchema,
  anyPack,
  anyUnpack,
  ListValueSchema,
  StringValueSchema,
  StructSchema,
  ValueSchema,
} from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { thrownBy } from "../../test/support/errors.js";
import { encodeValue } from "./encode-value.js";
import { convertJsonAny, decodeJsonAny, encodeJsonAny, type JsonValue } from "./json-any.js";
import { MAX_JSON_DEPTH } from "./json-depth.js";

const STRING_VALUE = "type.googleapis.com/google.protobuf.StringValue";
const utf8 = new TextEncoder();
const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

function anyOf(typeUrl: string, value: string | Uint8Array): Any {
  return create(AnySchema, {
    typeUrl,
    value: typeof value === "string" ? utf8.encode(value) : value,
  });
}

function packed(s: string): Uint8Array {
  return toBinary(StringValueSchema, create(StringValueSchema, { value: s }));
}

const errorOf = (fn: () => unknown) => thrownBy(fn, Code.InvalidArgument);

describe("encodeJsonAny", () => {
  it("writes a well-formed StringValue holding the JSON text by default", () => {
    const any = encodeJsonAny({ a: 1 });
    expect(any.typeUrl).toBe(STRING_VALUE);
    expect(any.value).toEqual(packed('{"a":1}'));
    expect(anyUnpack(any, StringValueSchema)?.value).toBe('{"a":1}');
    expect(encodeJsonAny([1, "é", true]).value).toEqual(packed('[1,"é",true]'));
  });

  it("writes raw JSON bytes under the StringValue type URL in the raw-json form", () => {
    const any = encodeJsonAny({ a: 1 }, "raw-json");
    expect(any.typeUrl).toBe(STRING_VALUE);
    expect(text(any.value)).toBe('{"a":1}');
    expect(text(encodeJsonAny("hi", "raw-json").value)).toBe('"hi"');
    expect(text(encodeJsonAny(null, "raw-json").value)).toBe("null");
    expect(text(encodeJsonAny([1, "é", true], "raw-json").value)).toBe('[1,"é",true]');
  });

  it("writes special floats as strings instead of null", () => {
    expect(text(encodeJsonAny([Number.NaN, Number.NEGATIVE_INFINITY, 1], "raw-json").value)).toBe(
      '["NaN","-Infinity",1]',
    );
  });

  it("round-trips every JSON value through both forms", () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 5 }), (v) => {
        const value = JSON.parse(JSON.stringify(v)) as JsonValue;
        expect(decodeJsonAny(encodeJsonAny(value))).toEqual(value);
        expect(decodeJsonAny(encodeJsonAny(value, "raw-json"))).toEqual(value);
      }),
    );
  });

  it("rejects values JSON cannot hold", () => {
    const cyclic: { [k: string]: JsonValue } = {};
    cyclic.self = cyclic;
    expect(errorOf(() => encodeJsonAny(cyclic)).rawMessage).toContain(
      "tool value cannot be encoded as JSON",
    );
  });
});

describe("decodeJsonAny", () => {
  it("returns null for a missing or empty Any", () => {
    expect(decodeJsonAny(undefined)).toBeNull();
    expect(decodeJsonAny(create(AnySchema))).toBeNull();
  });

  it("reads raw JSON (the de facto convention)", () => {
    expect(decodeJsonAny(anyOf(STRING_VALUE, '{"x":[1,2,{"y":null}]}'))).toEqual({
      x: [1, 2, { y: null }],
    });
    expect(decodeJsonAny(anyOf(STRING_VALUE, '"text"'))).toBe("text");
    expect(decodeJsonAny(anyOf(STRING_VALUE, "42"))).toBe(42);
    // JSON may begin with whitespace, even a newline (0x0A, the packed tag byte).
    expect(decodeJsonAny(anyOf(STRING_VALUE, '\n{"x":1}'))).toEqual({ x: 1 });
    expect(decodeJsonAny(anyOf(STRING_VALUE, "\n\n[1]"))).toEqual([1]);
  });

  it("reads a really packed StringValue holding JSON", () => {
    const bytes = packed('{"x":1}');
    expect(bytes[0]).toBe(0x0a);
    expect(decodeJsonAny(anyOf(STRING_VALUE, bytes))).toEqual({ x: 1 });
    const viaAnyPack = anyPack(StringValueSchema, create(StringValueSchema, { value: "[true]" }));
    expect(viaAnyPack.typeUrl).toBe(STRING_VALUE);
    expect(decodeJsonAny(viaAnyPack)).toEqual([true]);
  });

  it("reads a packed StringValue holding plain text as that text", () => {
    expect(decodeJsonAny(anyOf(STRING_VALUE, packed("hello world")))).toBe("hello world");
    expect(decodeJsonAny(anyOf(STRING_VALUE, packed("x".repeat(300))))).toBe("x".repeat(300));
    // An empty value is a packed empty string.
    expect(decodeJsonAny(anyOf(STRING_VALUE, new Uint8Array()))).toBe("");
  });

  it("returns raw non-JSON text as a string", () => {
    expect(decodeJsonAny(anyOf(STRING_VALUE, "not json"))).toBe("not json");
  });

  it("decodes snakepit.<type> values, normalized", () => {
    expect(decodeJsonAny(encodeValue("float", 0.5).any)).toBe(0.5);
    expect(decodeJsonAny(anyOf("type.googleapis.com/snakepit.integer", "3.0"))).toBe(3);
    expect(decodeJsonAny(encodeValue("tensor", { shape: [1], data: [2] }).any)).toEqual({
      shape: [1],
      data: [2],
    });
    expect(decodeJsonAny(anyOf("type.googleapis.com/snakepit.float", '"NaN"'))).toBeNaN();
  });

  it("decodes snakepit v0.13's map and list results", () => {
    // What a v0.13 worker's ExecuteTool returns for a dict and a list.
    expect(
      decodeJsonAny(anyOf("type.googleapis.com/snakepit.map", '{"message": "hi", "n": [1, 2.5]}')),
    ).toEqual({ message: "hi", n: [1, 2.5] });
    expect(decodeJsonAny(anyOf("type.googleapis.com/snakepit.list", '[1, "two", {}]'))).toEqual([
      1,
      "two",
      {},
    ]);
    expect(decodeJsonAny(anyOf("type.googleapis.com/snakepit.float", "5.0"))).toBe(5);
  });

  it("decodes google.protobuf.Value, Struct and ListValue, as JSON text or packed", () => {
    const value = "type.googleapis.com/google.protobuf.Value";
    expect(decodeJsonAny(anyOf(value, "3"))).toBe(3);
    expect(decodeJsonAny(anyPack(ValueSchema, fromJson(ValueSchema, { a: [1] })))).toEqual({
      a: [1],
    });
    expect(decodeJsonAny(anyPack(StructSchema, fromJson(StructSchema, { k: "v" })))).toEqual({
      k: "v",
    });
    expect(decodeJsonAny(anyPack(ListValueSchema, fromJson(ListValueSchema, [null])))).toEqual([
      null,
    ]);
  });

  it.each([
    [
      anyOf("type.googleapis.com/snakepit.map", "[1]"),
      "snakepit.map tool value must be a JSON object",
    ],
    [
      anyOf("type.googleapis.com/snakepit.list", "{}"),
      "snakepit.list tool value must be a JSON array",
    ],
    [
      anyOf("type.googleapis.com/snakepit.list", "oops"),
      "snakepit.list tool value is not UTF-8 JSON",
    ],
    [
      anyOf("type.googleapis.com/snakepit.map", '{"loss": NaN}'),
      'snakepit.map tool value is not UTF-8 JSON (NaN and Infinity are not JSON: send them as the strings "NaN", "Infinity", "-Infinity")',
    ],
    [anyOf("type.googleapis.com/snakepit.map.binary", "{}"), "unsupported type URL"],
  ])("refuses %o", (any, message) => {
    expect(errorOf(() => decodeJsonAny(any)).rawMessage).toContain(message);
  });

  it.each([
    [anyOf("type.googleapis.com/google.protobuf.Int32Value", "1"), "unsupported type URL"],
    [anyOf(STRING_VALUE, new Uint8Array([0xff])), "tool value is not valid UTF-8"],
    [anyOf("type.googleapis.com/snakepit.integer", "2.5"), "must be an integer, got 2.5"],
  ])("rejects %o", (any, message) => {
    expect(errorOf(() => decodeJsonAny(any)).rawMessage).toContain(message);
  });

  it("round-trips any JSON value through both encodings", () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const json = JSON.parse(JSON.stringify(value)) as JsonValue; // -0 → 0, as JSON does
        expect(decodeJsonAny(encodeJsonAny(value as JsonValue))).toEqual(json);
        const asPacked = anyOf(STRING_VALUE, packed(JSON.stringify(value)));
        expect(decodeJsonAny(asPacked)).toEqual(json);
      }),
    );
  });
});

describe("nesting", () => {
  const nestedText = (levels: number) => `${"[".repeat(levels)}1${"]".repeat(levels)}`;
  const nested = (levels: number) => JSON.parse(nestedText(levels)) as JsonValue;
  const tooDeep = `tool value nests deeper than ${MAX_JSON_DEPTH} levels`;

  it(`round-trips values nesting ${MAX_JSON_DEPTH} levels`, () => {
    const value = { a: nested(MAX_JSON_DEPTH - 1) };
    expect(decodeJsonAny(encodeJsonAny(value))).toEqual(value);
  });

  it.each([MAX_JSON_DEPTH + 1, 300_000])("refuses to encode %d levels", (levels) => {
    expect(errorOf(() => encodeJsonAny(nested(levels))).rawMessage).toBe(tooDeep);
  });

  it.each([MAX_JSON_DEPTH + 1, 300_000])("refuses to decode %d levels", (levels) => {
    expect(errorOf(() => decodeJsonAny(anyOf(STRING_VALUE, nestedText(levels)))).rawMessage).toBe(
      tooDeep,
    );
    const asPacked = anyOf(STRING_VALUE, packed(nestedText(levels)));
    expect(errorOf(() => decodeJsonAny(asPacked)).rawMessage).toBe(tooDeep);
  });

  it("refuses a packed StringValue that is not UTF-8", () => {
    const bytes = new Uint8Array([0x0a, 2, 0xff, 0xfe]);
    expect(errorOf(() => decodeJsonAny(anyOf(STRING_VALUE, bytes))).rawMessage).toBe(
      "tool value is not valid UTF-8",
    );
  });
});

describe("convertJsonAny", () => {
  it("re-encodes StringValue tool values in either direction", () => {
    const raw = encodeJsonAny({ n: [1, 2] }, "raw-json");
    const wellFormed = encodeJsonAny({ n: [1, 2] });
    expect(convertJsonAny(raw, "string-value").value).toEqual(wellFormed.value);
    expect(convertJsonAny(wellFormed, "raw-json").value).toEqual(raw.value);
    // Already in the form asked for: the same object.
    expect(convertJsonAny(raw, "raw-json")).toBe(raw);
    expect(convertJsonAny(wellFormed, "string-value")).toBe(wellFormed);
  });

  it("gives workers and gRPC callers a packed Value, Struct or ListValue as raw JSON", () => {
    const packedStruct = anyPack(StructSchema, fromJson(StructSchema, { a: [1, "x"] }));
    const raw = convertJsonAny(packedStruct, "raw-json");
    expect(raw.typeUrl).toBe(STRING_VALUE);
    expect(text(raw.value)).toBe('{"a":[1,"x"]}');
    // JSON text is already what they read.
    const jsonText = anyOf("type.googleapis.com/google.protobuf.Value", "2");
    expect(convertJsonAny(jsonText, "raw-json")).toBe(jsonText);
  });

  it("gives Connect and gRPC-Web callers a JSON-text Value as a packed Value", () => {
    const jsonText = anyOf("type.googleapis.com/google.protobuf.Value", '{"n":2}');
    const wellFormed = convertJsonAny(jsonText, "string-value");
    expect(wellFormed.typeUrl).toBe(jsonText.typeUrl);
    const unpacked = anyUnpack(wellFormed, ValueSchema);
    expect(unpacked?.kind.case).toBe("structValue");
    expect(decodeJsonAny(wellFormed)).toEqual({ n: 2 });
    const packedList = anyPack(ListValueSchema, fromJson(ListValueSchema, [1]));
    expect(convertJsonAny(packedList, "string-value")).toBe(packedList);
  });

  it("leaves other Anys and undecodable values as they are", () => {
    const v013Map = anyOf("type.googleapis.com/snakepit.map", '{"a":1}');
    expect(convertJsonAny(v013Map, "string-value")).toBe(v013Map);
    const broken = anyOf("type.googleapis.com/google.protobuf.Value", "{oops");
    expect(convertJsonAny(broken, "raw-json")).toBe(broken);
    const variable = encodeValue("float", 0.5).any;
    expect(convertJsonAny(variable, "raw-json")).toBe(variable);
    const notUtf8 = anyOf(STRING_VALUE, new Uint8Array([0xff, 0xfe]));
    expect(convertJsonAny(notUtf8, "string-value")).toBe(notUtf8);
  });
});
