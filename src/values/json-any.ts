import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type Any, AnySchema, StringValueSchema } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";
import { validateValue } from "./check-value.js";
import { decodeValue } from "./decode-value.js";
import { invalidArgument, truncateText } from "./describe-value.js";
import { MAX_JSON_DEPTH, nestsDeeperThan } from "./json-depth.js";
import { specialFloatToString } from "./special-floats.js";
import {
  decodeStructValue,
  notJsonHint,
  packStructValue,
  parseJsonBytes,
  type StructKind,
  structKindOf,
} from "./struct-value.js";
import { TYPE_URL_PREFIX } from "./type-url.js";
import { isVariableType } from "./variable-type.js";

/** A JSON value: what tool parameters and tool results carry. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [k: string]: JsonValue };

/** The type URL both original sides used for tool parameters and results. */
export const STRING_VALUE_TYPE_URL = "type.googleapis.com/google.protobuf.StringValue";

const STRING_VALUE_NAME = "google.protobuf.StringValue";
const FIELD_1_LEN_TAG = 0x0a;
const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

const tooDeep = () => invalidArgument(`tool value nests deeper than ${MAX_JSON_DEPTH} levels`);

/**
 * A JSON.stringify replacer that writes special floats as strings and
 * refuses values nesting deeper than the decoder accepts, before the
 * stringifier's own recursion could exhaust the stack. JSON.stringify calls
 * it for each value before descending into it, with the holder as `this`.
 */
function toolJsonReplacer(): (this: unknown, key: string, v: unknown) => unknown {
  const depths = new Map<unknown, number>();
  return function (this: unknown, _key: string, v: unknown): unknown {
    if (typeof v === "number" && !Number.isFinite(v)) return specialFloatToString(v);
    if (typeof v === "object" && v !== null) {
      const depth = (depths.get(this) ?? 0) + 1;
      if (depth > MAX_JSON_DEPTH) throw tooDeep();
      depths.set(v, depth);
    }
    return v;
  };
}

/**
 * How a tool value is written under the StringValue type URL:
 * - `"string-value"`: a well-formed `google.protobuf.StringValue` whose
 *   string is the JSON text, which generic tools (buf curl, grpcurl,
 *   protobuf JSON converters) decode;
 * - `"raw-json"`: the RAW UTF-8 JSON text, not a packed message: the de
 *   facto convention of both original sides, and what snakepit's Python
 *   workers read (`json.loads(any.value)`).
 */
export type JsonAnyForm = "string-value" | "raw-json";

/**
 * Encode a tool parameter or result as an Any with type URL
 * `type.googleapis.com/google.protobuf.StringValue` holding its JSON text,
 * in the given {@link JsonAnyForm} (default a well-formed StringValue). NaN
 * and ±Infinity become the strings `"NaN"`, `"Infinity"`, `"-Infinity"`.
 * {@link decodeJsonAny} reads both forms.
 *
 * @example
 * encodeJsonAny({ a: 1 }, "raw-json").value; // the bytes of `{"a":1}`
 *
 * @throws ConnectError with `Code.InvalidArgument` when the value cannot be
 *   written as JSON (a cycle, a bigint) or nests deeper than
 *   {@link MAX_JSON_DEPTH} levels, which no peer would decode.
 */
export function encodeJsonAny(value: JsonValue, form: JsonAnyForm = "string-value"): Any {
  let text: string | undefined;
  try {
    text = JSON.stringify(value, toolJsonReplacer());
  } catch (e) {
    if (e instanceof ConnectError) throw e;
    const reason = e instanceof Error ? e.message : String(e);
    throw invalidArgument(`tool value cannot be encoded as JSON: ${truncateText(reason)}`);
  }
  const json = text ?? "null";
  return create(AnySchema, {
    typeUrl: STRING_VALUE_TYPE_URL,
    value:
      form === "raw-json"
        ? utf8Encoder.encode(json)
        : toBinary(StringValueSchema, create(StringValueSchema, { value: json })),
  });
}

/**
 * `any` re-encoded in `form` when it is a StringValue tool value (in either
 * form); any other Any, and one that cannot be decoded, is returned as is,
 * for the peer to judge. Used where a value passes between peers that read
 * different forms (a public client and a snakepit worker).
 */
export function convertJsonAny(any: Any, form: JsonAnyForm): Any {
  const kind = structKindOf(any.typeUrl);
  if (kind !== undefined) return convertStructAny(any, kind, form);
  if (any.typeUrl.slice(any.typeUrl.lastIndexOf("/") + 1) !== STRING_VALUE_NAME) return any;
  if (any.value.length > 0 && isPackedStringValue(any.value) === (form === "string-value")) {
    return any;
  }
  try {
    return encodeJsonAny(decodeJsonAny(any), form);
  } catch {
    // Deliberate: undecodable bytes are relayed unchanged; the receiver reports them.
    return any;
  }
}

/**
 * A `google.protobuf.Value`, `Struct` or `ListValue` tool value in `form`:
 * raw JSON (under the StringValue type URL, which every snakepit version
 * reads) for workers and gRPC callers, a packed message of its own type for
 * the rest.
 */
function convertStructAny(any: Any, kind: StructKind, form: JsonAnyForm): Any {
  try {
    const decoded = decodeStructValue(kind, any.value);
    if (form === "raw-json") {
      return decoded.form === "json" ? any : encodeJsonAny(decoded.value, "raw-json");
    }
    if (decoded.form === "packed") return any;
    return create(AnySchema, { typeUrl: any.typeUrl, value: packStructValue(kind, decoded.value) });
  } catch {
    // Deliberate: undecodable bytes are relayed unchanged; the receiver reports them.
    return any;
  }
}

/**
 * Whether `bytes` are exactly one length-delimited field 1, i.e. a packed
 * `google.protobuf.StringValue`. Raw JSON starts with a value character or
 * whitespace; only a JSON text beginning with a newline also starts with
 * 0x0A, and that is told apart by the length prefix having to cover the rest.
 */
function isPackedStringValue(bytes: Uint8Array): boolean {
  if (bytes[0] !== FIELD_1_LEN_TAG) return false;
  let length = 0;
  let shift = 0;
  let i = 1;
  for (; i < bytes.length && i < 6; i++) {
    const b = bytes[i] as number;
    length += (b & 0x7f) * 2 ** shift;
    shift += 7;
    if ((b & 0x80) === 0) return i + 1 + length === bytes.length;
  }
  return false;
}

function unpackString(bytes: Uint8Array): string {
  try {
    return fromBinary(StringValueSchema, bytes).value;
  } catch {
    // The framing was checked by isPackedStringValue: only the UTF-8 can be wrong.
    throw invalidArgument("tool value is not valid UTF-8");
  }
}

function parseJsonOrText(text: string): JsonValue {
  let value: JsonValue;
  try {
    value = JSON.parse(text) as JsonValue;
  } catch {
    // Deliberate: a sender that put plain text where JSON was expected meant a string.
    return text;
  }
  if (nestsDeeperThan(value)) throw tooDeep();
  return value;
}

function decodeUtf8(bytes: Uint8Array): string {
  try {
    return utf8Decoder.decode(bytes);
  } catch {
    // TextDecoder's own message says nothing more than this.
    throw invalidArgument("tool value is not valid UTF-8");
  }
}

/**
 * Decode a tool parameter or result. Accepts:
 * - type URL `…google.protobuf.StringValue` with raw JSON bytes (the de facto
 *   convention), or with a really packed StringValue whose string holds JSON
 *   (or plain text, returned as a string); plain non-JSON text is returned as
 *   a string too; an empty value is the empty string;
 * - `…google.protobuf.Value`, `…Struct` and `…ListValue`, as raw JSON text
 *   (what snakepit v0.13's `call_elixir_tool` sends for numbers) or as
 *   packed messages;
 * - `…snakepit.map` (a JSON object) and `…snakepit.list` (a JSON array),
 *   which snakepit v0.13 workers return for dicts and lists;
 * - `…snakepit.<type>` values (see {@link decodeValue}), normalized.
 *
 * A missing Any, or one with neither type URL nor value, is `null`.
 *
 * @example
 * decodeJsonAny({ typeUrl: "type.googleapis.com/snakepit.map", value: utf8('{"a":1}') }); // { a: 1 }
 *
 * @throws ConnectError with `Code.InvalidArgument` for other type URLs, for
 *   bytes that are not UTF-8, for a typed value that is not JSON of its
 *   type (NaN and Infinity included: JSON has no such numbers), and for
 *   nesting deeper than {@link MAX_JSON_DEPTH} levels.
 */
export function decodeJsonAny(any: Any | undefined): JsonValue {
  if (any === undefined || (any.typeUrl === "" && any.value.length === 0)) return null;
  const bytes = any.value;
  if (any.typeUrl.slice(any.typeUrl.lastIndexOf("/") + 1) === STRING_VALUE_NAME) {
    if (bytes.length === 0) return "";
    if (isPackedStringValue(bytes)) return parseJsonOrText(unpackString(bytes));
    return parseJsonOrText(decodeUtf8(bytes));
  }
  const kind = structKindOf(any.typeUrl);
  if (kind !== undefined) return decodeStructValue(kind, bytes).value;
  const base = any.typeUrl.replace(/\.binary$/, "");
  const name = base.slice(Math.max(base.lastIndexOf("/"), base.lastIndexOf(".")) + 1);
  if ((name === "map" || name === "list") && base === any.typeUrl) return decodeJsonOf(name, bytes);
  if (!isVariableType(name)) {
    throw invalidArgument(
      `unsupported type URL '${truncateText(any.typeUrl)}' for a tool value: expected ${STRING_VALUE_TYPE_URL}, google.protobuf.Value, Struct or ListValue, ${TYPE_URL_PREFIX}map or list, or ${TYPE_URL_PREFIX}<variable type>`,
    );
  }
  const { type, value } = decodeValue(any);
  // Tensors are plain {shape, data} objects, so every normalized value is JSON.
  return validateValue(type, value) as unknown as JsonValue;
}

/** A snakepit v0.13 `map` (a JSON object) or `list` (a JSON array) value. */
function decodeJsonOf(name: "map" | "list", bytes: Uint8Array): JsonValue {
  const value = parseJsonBytes(bytes);
  if (value === undefined) {
    throw invalidArgument(`snakepit.${name} tool value is not UTF-8 JSON${notJsonHint(bytes)}`);
  }
  const isList = Array.isArray(value);
  const isMap = typeof value === "object" && value !== null && !isList;
  if (name === "map" ? !isMap : !isList) {
    throw invalidArgument(
      `snakepit.${name} tool value must be a JSON ${name === "map" ? "object" : "array"}`,
    );
  }
  return value;
}
