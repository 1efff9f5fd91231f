import { create, fromJson, type JsonValue as ProtoJson, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { ListValueSchema, StructSchema, type Value, ValueSchema } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { thrownBy } from "../../test/support/errors.js";
import { MAX_JSON_DEPTH } from "./json-depth.js";
import { decodeStructValue, packStructValue, structKindOf } from "./struct-value.js";

const utf8 = new TextEncoder();
const errorOf = (fn: () => unknown) => thrownBy(fn, Code.InvalidArgument);
const packedValue = (json: unknown) =>
  toBinary(ValueSchema, fromJson(ValueSchema, json as ProtoJson));
const numberValue = (n: number) =>
  toBinary(ValueSchema, create(ValueSchema, { kind: { case: "numberValue", value: n } }));
/** A ListValue holding a ListValue … `levels` deep, innermost [1], written field by field. */
function nestedLists(levels: number): Uint8Array {
  let inner = toBinary(ListValueSchema, fromJson(ListValueSchema, [1]));
  for (let i = 1; i < levels; i++) {
    // Value{list_value = inner}, then ListValue{values = [that]}.
    const value = new BinaryWriter().tag(6, WireType.LengthDelimited).bytes(inner).finish();
    inner = new BinaryWriter().tag(1, WireType.LengthDelimited).bytes(value).finish();
  }
  return inner;
}

describe("structKindOf", () => {
  it("names the three well-known JSON types, by the text after the last slash", () => {
    expect(structKindOf("type.googleapis.com/google.protobuf.Value")).toBe("Value");
    expect(structKindOf("google.protobuf.Struct")).toBe("Struct");
    expect(structKindOf("x/google.protobuf.ListValue")).toBe("ListValue");
    expect(structKindOf("type.googleapis.com/google.protobuf.StringValue")).toBeUndefined();
    expect(structKindOf("type.googleapis.com/snakepit.map")).toBeUndefined();
  });
});

describe("decodeStructValue", () => {
  it("reads the raw JSON text snakepit v0.13's call_elixir_tool sends for numbers", () => {
    // json.dumps(value).encode() under the Value type URL.
    expect(decodeStructValue("Value", utf8.encode("2"))).toEqual({ value: 2, form: "json" });
    expect(decodeStructValue("Value", utf8.encode("2.5")).value).toBe(2.5);
    expect(decodeStructValue("Value", utf8.encode("true")).value).toBe(true);
    expect(decodeStructValue("Value", utf8.encode('{"a":[1,"b"]}')).value).toEqual({
      a: [1, "b"],
    });
    expect(decodeStructValue("Struct", utf8.encode('{"k":null}')).value).toEqual({ k: null });
    expect(decodeStructValue("ListValue", utf8.encode(" [1, 2]")).value).toEqual([1, 2]);
  });

  it("reads packed messages of each kind", () => {
    expect(decodeStructValue("Value", packedValue("text"))).toEqual({
      value: "text",
      form: "packed",
    });
    expect(decodeStructValue("Value", packedValue(null)).value).toBeNull();
    expect(decodeStructValue("Value", packedValue(false)).value).toBe(false);
    expect(decodeStructValue("Value", numberValue(-1.5)).value).toBe(-1.5);
    const struct = toBinary(StructSchema, fromJson(StructSchema, { a: { b: [1, "x", true] } }));
    expect(decodeStructValue("Struct", struct).value).toEqual({ a: { b: [1, "x", true] } });
    const list = toBinary(ListValueSchema, fromJson(ListValueSchema, [{}, [], "é"]));
    expect(decodeStructValue("ListValue", list).value).toEqual([{}, [], "é"]);
  });

  it("reads empty bytes as the empty message", () => {
    expect(decodeStructValue("Value", new Uint8Array()).value).toBeNull();
    expect(decodeStructValue("Struct", new Uint8Array()).value).toEqual({});
    expect(decodeStructValue("ListValue", new Uint8Array()).value).toEqual([]);
  });

  it("round-trips any JSON value through the packed form, as protobuf-es packs it", () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 6 }), (v) => {
        const json = JSON.parse(JSON.stringify(v)) as unknown; // -0 → 0, as JSON does
        expect(decodeStructValue("Value", packedValue(json)).value).toEqual(json);
        expect(decodeStructValue("Value", packStructValue("Value", json as never)).value).toEqual(
          json,
        );
      }),
    );
  });

  it("makes a '__proto__' key a plain property, never the prototype", () => {
    const bytes = toBinary(
      StructSchema,
      fromJson(StructSchema, { ["__proto__"]: { polluted: 1 } }),
    );
    const { value } = decodeStructValue("Struct", bytes);
    expect(Object.getPrototypeOf(value)).toBe(Object.prototype);
    expect(Object.keys(value as object)).toEqual(["__proto__"]);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it.each([
    ["NaN", Number.NaN],
    ["Infinity", Number.POSITIVE_INFINITY],
    ["-Infinity", Number.NEGATIVE_INFINITY],
  ])("refuses a packed number %s, which JSON cannot hold", (name, n) => {
    expect(errorOf(() => decodeStructValue("Value", numberValue(n))).rawMessage).toBe(
      `google.protobuf.Value tool value holds the number ${name}, which JSON has no form for: send it as the string "${name}"`,
    );
    // Also inside a Struct.
    const value: Value = create(ValueSchema, { kind: { case: "numberValue", value: n } });
    const struct = toBinary(StructSchema, create(StructSchema, { fields: { x: value } }));
    expect(errorOf(() => decodeStructValue("Struct", struct)).rawMessage).toContain(name);
  });

  it("says why Python's NaN in JSON text is refused", () => {
    // json.dumps({"x": float("nan")}) writes a token JSON does not have.
    const message = errorOf(() => decodeStructValue("Value", utf8.encode('{"x": NaN}'))).rawMessage;
    expect(message).toBe(
      'google.protobuf.Value tool value is neither JSON text nor a packed google.protobuf.Value (NaN and Infinity are not JSON: send them as the strings "NaN", "Infinity", "-Infinity")',
    );
  });

  it.each([
    ["Value", new Uint8Array([0x1a, 0x05, 0x61])], // a string longer than the bytes
    ["Value", new Uint8Array([0x11, 0x00, 0x00])], // a number cut short
    ["Value", new Uint8Array([0x2a, 0x02, 0x0a, 0x05])], // a struct entry overrunning the struct
    ["Struct", new Uint8Array([0x0a, 0x80])], // a varint cut short
    ["ListValue", new Uint8Array([0x0f])], // wire type 7
  ] as const)("refuses %s bytes that are neither JSON nor packed: %o", (kind, bytes) => {
    expect(errorOf(() => decodeStructValue(kind, bytes)).rawMessage).toBe(
      `google.protobuf.${kind} tool value is neither JSON text nor a packed google.protobuf.${kind}`,
    );
  });

  it("refuses a packed string that is not UTF-8", () => {
    const bytes = new Uint8Array([0x1a, 0x02, 0xff, 0xfe]);
    expect(errorOf(() => decodeStructValue("Value", bytes)).rawMessage).toBe(
      "tool value is not valid UTF-8",
    );
  });

  it("refuses JSON of the wrong shape for Struct and ListValue", () => {
    expect(errorOf(() => decodeStructValue("Struct", utf8.encode("[1]"))).rawMessage).toBe(
      "google.protobuf.Struct tool value must be an object",
    );
    expect(errorOf(() => decodeStructValue("ListValue", utf8.encode("{}"))).rawMessage).toBe(
      "google.protobuf.ListValue tool value must be an array",
    );
  });

  it(`reads packed nesting of ${MAX_JSON_DEPTH} levels and refuses one more`, () => {
    const ok = decodeStructValue("ListValue", nestedLists(MAX_JSON_DEPTH)).value;
    let depth = 0;
    for (let v: unknown = ok; Array.isArray(v); v = v[0]) depth++;
    expect(depth).toBe(MAX_JSON_DEPTH);
    expect(
      errorOf(() => decodeStructValue("ListValue", nestedLists(MAX_JSON_DEPTH + 1))).rawMessage,
    ).toBe(`tool value nests deeper than ${MAX_JSON_DEPTH} levels`);
  });

  it("refuses a packed nest thousands of levels deep without exhausting the stack", () => {
    const bytes = nestedLists(3000);
    expect(bytes.length).toBeGreaterThan(10_000);
    expect(errorOf(() => decodeStructValue("ListValue", bytes)).rawMessage).toBe(
      `tool value nests deeper than ${MAX_JSON_DEPTH} levels`,
    );
  });

  it("reads a packed list of a million elements (2 MB) in bounded time", () => {
    // Each element is an empty Value: tag and length, two bytes.
    const bytes = new Uint8Array(2_000_000);
    for (let i = 0; i < bytes.length; i += 2) bytes[i] = 0x0a;
    const started = performance.now();
    const { value } = decodeStructValue("ListValue", bytes);
    expect((value as unknown[]).length).toBe(1_000_000);
    expect((value as unknown[])[999_999]).toBeNull();
    expect(performance.now() - started).toBeLessThan(5_000);
  });
});

describe("packStructValue", () => {
  it("packs a value as its kind's message", () => {
    expect(packStructValue("Value", 2)).toEqual(numberValue(2));
    expect(packStructValue("Struct", { a: 1 })).toEqual(
      toBinary(StructSchema, fromJson(StructSchema, { a: 1 })),
    );
    expect(packStructValue("ListValue", [true])).toEqual(
      toBinary(ListValueSchema, fromJson(ListValueSchema, [true])),
    );
  });

  it("refuses a value its kind cannot hold", () => {
    expect(errorOf(() => packStructValue("Struct", [1])).rawMessage).toMatch(
      /^tool value does not fit google\.protobuf\.Struct/,
    );
  });
});
