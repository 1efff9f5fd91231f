/**
 * Tool values typed `google.protobuf.Value`, `Struct` or `ListValue`: what
 * snakepit v0.13's `call_elixir_tool` sends for numbers (the type URL of
 * Value over the RAW JSON text, not a packed message), and what generic
 * protobuf peers pack. Both forms are read; the JSON text is tried first,
 * since a packed message is never valid JSON (its first byte is a field tag
 * no JSON text starts with, or is followed by bytes JSON does not allow).
 *
 * The packed form is read by a walk of our own over protobuf-es's wire
 * reader, not by `fromBinary`: its recursion must stop at the same depth as
 * JSON's ({@link MAX_JSON_DEPTH}), before a nest of a few bytes per level in
 * a 4 MiB message could exhaust the stack.
 */
import { fromJson, type JsonValue as ProtoJsonValue, toBinary } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { ListValueSchema, StructSchema, ValueSchema } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";
import { invalidArgument, truncateText } from "./describe-value.js";
import { MAX_JSON_DEPTH, nestsDeeperThan } from "./json-depth.js";

/** A JSON value (the same shape as json-any.ts's, declared here to keep the import one-way). */
type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** The three well-known types that hold JSON. */
export type StructKind = "Value" | "Struct" | "ListValue";

/** The kind a type URL names (`…google.protobuf.Struct` → `"Struct"`), if any. */
export function structKindOf(typeUrl: string): StructKind | undefined {
  switch (typeUrl.slice(typeUrl.lastIndexOf("/") + 1)) {
    case "google.protobuf.Value":
      return "Value";
    case "google.protobuf.Struct":
      return "Struct";
    case "google.protobuf.ListValue":
      return "ListValue";
    default:
      return undefined;
  }
}

/** How a struct value arrived: JSON text, or a packed protobuf message. */
export type StructForm = "json" | "packed";

const utf8 = new TextDecoder("utf-8", { fatal: true });
const tooDeep = () => invalidArgument(`tool value nests deeper than ${MAX_JSON_DEPTH} levels`);

/**
 * A JSON text's value, or `undefined` when `bytes` are not UTF-8 JSON.
 * @throws ConnectError with `Code.InvalidArgument` for JSON nesting too deep.
 */
export function parseJsonBytes(bytes: Uint8Array): Json | undefined {
  let value: Json;
  try {
    value = JSON.parse(utf8.decode(bytes)) as Json;
  } catch {
    // Deliberate: the caller says what else the bytes may be.
    return undefined;
  }
  if (nestsDeeperThan(value)) throw tooDeep();
  return value;
}

/** Python's `json.dumps` writes these for float('nan') and ±inf; JSON has no such tokens. */
const PYTHON_SPECIAL_FLOAT = /\b(NaN|Infinity)\b/;

/** The hint for a JSON text that did not parse, when it holds Python's special floats. */
export function notJsonHint(bytes: Uint8Array): string {
  const head = new TextDecoder().decode(bytes.subarray(0, 4096));
  return PYTHON_SPECIAL_FLOAT.test(head)
    ? ' (NaN and Infinity are not JSON: send them as the strings "NaN", "Infinity", "-Infinity")'
    : "";
}

/**
 * Decode a tool value typed `google.protobuf.<kind>`: JSON text or a packed
 * message, into a JSON value (a Struct is always an object, a ListValue an
 * array). Empty bytes are the empty message: `null`, `{}`, `[]`.
 *
 * @throws ConnectError with `Code.InvalidArgument` when the bytes are
 *   neither, when a Struct or ListValue holds the wrong JSON shape, when a
 *   number is NaN or infinite (which JSON, and so protobuf's JSON mapping,
 *   has no form for), for invalid UTF-8, and for nesting deeper than
 *   {@link MAX_JSON_DEPTH} levels.
 */
export function decodeStructValue(
  kind: StructKind,
  bytes: Uint8Array,
): { value: Json; form: StructForm } {
  if (bytes.length === 0) return { value: emptyOf(kind), form: "packed" };
  const parsed = parseJsonBytes(bytes);
  if (parsed !== undefined) {
    if (kind === "Struct" && !isObject(parsed)) throw wrongShape(kind, "an object");
    if (kind === "ListValue" && !Array.isArray(parsed)) throw wrongShape(kind, "an array");
    return { value: parsed, form: "json" };
  }
  let value: Json;
  try {
    const r = new BinaryReader(bytes);
    if (kind === "Value") value = readValue(r, bytes.length, 0);
    else if (kind === "Struct") value = readStruct(r, bytes.length, 1);
    else value = readList(r, bytes.length, 1);
  } catch (e) {
    if (e instanceof ConnectError) throw e;
    throw invalidArgument(
      `google.protobuf.${kind} tool value is neither JSON text nor a packed google.protobuf.${kind}${notJsonHint(bytes)}`,
    );
  }
  return { value, form: "packed" };
}

/**
 * `value` as a packed `google.protobuf.<kind>` message, which generic
 * protobuf tools decode. Its depth was bounded when it was decoded.
 *
 * @throws ConnectError with `Code.InvalidArgument` when the value does not
 *   fit the kind (a Struct must be an object, a ListValue an array).
 */
export function packStructValue(kind: StructKind, value: Json): Uint8Array {
  // A JSON value is what protobuf's JSON mapping of these three types reads.
  const json = value as ProtoJsonValue;
  try {
    if (kind === "Struct") return toBinary(StructSchema, fromJson(StructSchema, json));
    if (kind === "ListValue") return toBinary(ListValueSchema, fromJson(ListValueSchema, json));
    return toBinary(ValueSchema, fromJson(ValueSchema, json));
  } catch (e) {
    throw invalidArgument(
      `tool value does not fit google.protobuf.${kind}: ${truncateText(e instanceof Error ? e.message : String(e))}`,
    );
  }
}

function emptyOf(kind: StructKind): Json {
  if (kind === "Struct") return {};
  if (kind === "ListValue") return [];
  return null;
}

function isObject(v: Json): v is { [k: string]: Json } {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function wrongShape(kind: StructKind, expected: string): ConnectError {
  return invalidArgument(`google.protobuf.${kind} tool value must be ${expected}`);
}

/** Fails unless the reader stopped exactly at `end` (a length that overran its parent). */
function checkEnd(r: BinaryReader, end: number): void {
  if (r.pos !== end) throw new RangeError("a length runs past its message");
}

/** The end of the length-delimited field at the reader, checked against the parent's. */
function nestedEnd(r: BinaryReader, end: number): number {
  const length = r.uint32();
  const stop = r.pos + length;
  if (stop > end) throw new RangeError("a length runs past its message");
  return stop;
}

/** The UTF-8 text of the length-delimited field at the reader, within `end`. */
function textOf(r: BinaryReader, end: number): string {
  const bytes = r.bytes();
  if (r.pos > end) throw new RangeError("a length runs past its message");
  try {
    return utf8.decode(bytes);
  } catch {
    // TextDecoder's own message says nothing more than this.
    throw invalidArgument("tool value is not valid UTF-8");
  }
}

/** google.protobuf.Value: null_value 1, number_value 2, string_value 3, bool_value 4, struct_value 5, list_value 6. */
function readValue(r: BinaryReader, end: number, depth: number): Json {
  // A Value with no kind set is read as null, like an empty message.
  let out: Json = null;
  while (r.pos < end) {
    const [field, wire] = r.tag();
    if (field === 1 && wire === WireType.Varint) {
      r.uint32();
      out = null;
    } else if (field === 2 && wire === WireType.Bit64) {
      if (r.pos + 8 > end) throw new RangeError("a number runs past its message");
      const n = r.double();
      if (!Number.isFinite(n)) {
        throw invalidArgument(
          `google.protobuf.Value tool value holds the number ${n}, which JSON has no form for: send it as the string "${n}"`,
        );
      }
      out = n;
    } else if (field === 3 && wire === WireType.LengthDelimited) {
      out = textOf(r, end);
    } else if (field === 4 && wire === WireType.Varint) {
      out = r.bool();
    } else if ((field === 5 || field === 6) && wire === WireType.LengthDelimited) {
      const stop = nestedEnd(r, end);
      out = field === 5 ? readStruct(r, stop, depth + 1) : readList(r, stop, depth + 1);
    } else {
      r.skip(wire, field);
    }
    if (r.pos > end) throw new RangeError("a field runs past its message");
  }
  checkEnd(r, end);
  return out;
}

/** google.protobuf.Struct: repeated map entries in field 1, each key 1 and Value 2. */
function readStruct(r: BinaryReader, end: number, depth: number): Json {
  if (depth > MAX_JSON_DEPTH) throw tooDeep();
  // A Map, then fromEntries: a key "__proto__" becomes a plain property.
  const fields = new Map<string, Json>();
  while (r.pos < end) {
    const [field, wire] = r.tag();
    if (field === 1 && wire === WireType.LengthDelimited) {
      const stop = nestedEnd(r, end);
      let key = "";
      let value: Json = null;
      while (r.pos < stop) {
        const [f, w] = r.tag();
        if (f === 1 && w === WireType.LengthDelimited) {
          key = textOf(r, stop);
        } else if (f === 2 && w === WireType.LengthDelimited) {
          const valueEnd = nestedEnd(r, stop);
          value = readValue(r, valueEnd, depth);
        } else {
          r.skip(w, f);
        }
      }
      checkEnd(r, stop);
      fields.set(key, value);
    } else {
      r.skip(wire, field);
    }
  }
  checkEnd(r, end);
  return Object.fromEntries(fields);
}

/** google.protobuf.ListValue: repeated Value in field 1. */
function readList(r: BinaryReader, end: number, depth: number): Json {
  if (depth > MAX_JSON_DEPTH) throw tooDeep();
  const values: Json[] = [];
  while (r.pos < end) {
    const [field, wire] = r.tag();
    if (field === 1 && wire === WireType.LengthDelimited) {
      const stop = nestedEnd(r, end);
      values.push(readValue(r, stop, depth));
    } else {
      r.skip(wire, field);
    }
  }
  checkEnd(r, end);
  return values;
}
