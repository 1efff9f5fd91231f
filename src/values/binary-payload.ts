import { describeValue, formatShape, invalidArgument, truncateText } from "./describe-value.js";
import { MAX_JSON_DEPTH, nestsDeeperThan } from "./json-depth.js";
import type { BinaryVariableType } from "./type-url.js";
import type { Tensor } from "./variable-type.js";

/**
 * The portable binary form of embeddings and tensors (an extension of the
 * original protocol, whose binary payloads were pickle or Erlang terms).
 *
 * - `Any.type_url`: `type.googleapis.com/snakepit.<embedding|tensor>.binary`
 * - `Any.value`: UTF-8 JSON metadata `{"format":"f32le","dtype":"float32","shape":[...]}`
 *   (an embedding of n numbers has shape `[n]`)
 * - payload (`binary_value`, `initial_binary_value`, `binary_updates[k]`, …):
 *   little-endian IEEE-754 float32, exactly `4 * product(shape)` bytes.
 *
 * float32 keeps NaN, ±Infinity and -0, but rounds other float64 values to the
 * nearest float32 (`Math.fround`).
 */
export const BINARY_FORMAT = "f32le";

/** The element type of {@link BINARY_FORMAT}. */
export const BINARY_DTYPE = "float32";

const BYTES_PER_ELEMENT = 4;
const PICKLE_PROTOCOL_MARKER = 0x80;
const ERLANG_TERM_MARKER = 0x83;
const utf8 = new TextDecoder("utf-8", { fatal: true });

/** The metadata JSON text (the Any's value) for a binary value of `shape`, in fixed key order. */
export function binaryMetadataJson(shape: readonly number[]): string {
  return `{"format":"${BINARY_FORMAT}","dtype":"${BINARY_DTYPE}","shape":[${shape.join(",")}]}`;
}

/** Little-endian float32 bytes of `data` (values rounded to float32). */
export function encodeFloat32Le(data: readonly number[]): Uint8Array {
  const bytes = new Uint8Array(data.length * BYTES_PER_ELEMENT);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < data.length; i++) {
    view.setFloat32(i * BYTES_PER_ELEMENT, data[i] as number, true);
  }
  return bytes;
}

/** The numbers in little-endian float32 `bytes` (length must be a multiple of 4). */
export function decodeFloat32Le(bytes: Uint8Array): number[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Array<number>(bytes.byteLength / BYTES_PER_ELEMENT);
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(i * BYTES_PER_ELEMENT, true);
  return out;
}

function unsupported(format: string): never {
  throw invalidArgument(
    `binary payload format '${truncateText(format)}' is not supported: expected '${BINARY_FORMAT}' (pickle and Erlang term payloads are never decoded)`,
  );
}

/** Name the format of a payload whose metadata gave none; never parses it. */
function sniffFormat(payload: Uint8Array): string {
  if (payload[0] === PICKLE_PROTOCOL_MARKER) return "pickle";
  if (payload[0] === ERLANG_TERM_MARKER) return "erlang term";
  return "unknown";
}

/**
 * Decode a binary-form value from its metadata (the Any's value bytes) and
 * payload. Checks format, dtype, shape and the exact payload length.
 *
 * @throws ConnectError with `Code.InvalidArgument` for anything else, notably
 *   pickle and Erlang term payloads of the original protocol.
 */
export function decodeBinaryValue(
  type: BinaryVariableType,
  metadataBytes: Uint8Array,
  payload: Uint8Array,
): number[] | Tensor {
  let meta: unknown;
  try {
    meta = JSON.parse(utf8.decode(metadataBytes));
  } catch {
    // Not our metadata; the payload may still be a pickle: say so rather than "bad JSON".
    unsupported(sniffFormat(payload));
  }
  if (typeof meta !== "object" || meta === null || Array.isArray(meta)) {
    unsupported(sniffFormat(payload));
  }
  if (nestsDeeperThan(meta)) {
    throw invalidArgument(`binary metadata nests deeper than ${MAX_JSON_DEPTH} levels`);
  }
  const m = meta as Record<string, unknown>;
  // The original wrote its format under "binary_format" ("pickle", "erlang_binary").
  const format = m.format ?? m.binary_format;
  if (format === undefined) unsupported(sniffFormat(payload));
  if (format !== BINARY_FORMAT) unsupported(typeof format === "string" ? format : String(format));
  if (m.dtype !== undefined && m.dtype !== BINARY_DTYPE) {
    throw invalidArgument(
      `binary dtype ${describeValue(m.dtype)} is not supported: expected '${BINARY_DTYPE}'`,
    );
  }
  const shape = metadataShape(m.shape);
  if (type === "embedding" && shape.length !== 1) {
    throw invalidArgument(
      `binary embedding metadata must have a 1-dimensional shape, got ${formatShape(shape)}`,
    );
  }
  let count = 1;
  for (const d of shape) count *= d;
  const expected = count * BYTES_PER_ELEMENT;
  if (payload.byteLength !== expected) {
    throw invalidArgument(
      `binary payload has ${payload.byteLength} bytes, expected ${expected} (${BINARY_DTYPE}, shape ${formatShape(shape)})`,
    );
  }
  const data = decodeFloat32Le(payload);
  return type === "embedding" ? data : { shape, data };
}

function metadataShape(v: unknown): number[] {
  if (
    !Array.isArray(v) ||
    !v.every((d) => typeof d === "number" && Number.isSafeInteger(d) && d >= 0)
  ) {
    throw invalidArgument(
      `binary metadata 'shape' must be an array of non-negative integers, got ${describeValue(v)}`,
    );
  }
  return v.map((d: number) => (d === 0 ? 0 : d));
}
