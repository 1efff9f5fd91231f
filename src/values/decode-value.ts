import type { Any } from "@bufbuild/protobuf/wkt";
import { decodeBinaryValue } from "./binary-payload.js";
import { invalidArgument } from "./describe-value.js";
import { parseTypeUrl } from "./type-url.js";
import { parseValueJson } from "./value-json.js";
import type { VariableType } from "./variable-type.js";

const EMPTY = new Uint8Array(0);
const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Decode a value received from the wire (an Any, plus the payload of the
 * matching bytes field for the binary form) into its type and raw value.
 *
 * The type comes from the type URL (see {@link parseTypeUrl}). The value is
 * the decoded JSON with the special-float strings turned into numbers (also
 * inside embeddings and tensor data); it is NOT yet validated: pass it to
 * {@link validateValue} with the variable's constraints. A `binary` argument
 * is ignored unless the type URL ends in `.binary`.
 *
 * @example
 * const { type, value } = decodeValue(request.value, request.binaryValue);
 * const normalized = validateValue(type, value, constraints, name);
 *
 * @throws ConnectError with `Code.InvalidArgument`: "value is required" for a
 *   missing or empty Any; unknown type URL; value bytes that are not UTF-8
 *   JSON; a binary form that is not ours (pickle and Erlang term payloads are
 *   rejected, never decoded) or whose length does not match its shape.
 */
export function decodeValue(
  any: Any | undefined,
  binary?: Uint8Array,
): { type: VariableType; value: unknown } {
  if (any === undefined || (any.typeUrl === "" && any.value.length === 0)) {
    throw invalidArgument("value is required");
  }
  const { type, binary: isBinary } = parseTypeUrl(any.typeUrl);
  if (isBinary) {
    if (type !== "embedding" && type !== "tensor") {
      throw invalidArgument(`the binary form is only for embedding and tensor, not ${type}`);
    }
    return { type, value: decodeBinaryValue(type, any.value, binary ?? EMPTY) };
  }
  let text: string;
  try {
    text = utf8.decode(any.value);
  } catch {
    // TextDecoder's own message says nothing more than this.
    throw invalidArgument(`${type} value is not valid UTF-8`);
  }
  return { type, value: parseValueJson(type, text) };
}
