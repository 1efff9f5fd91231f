import { create } from "@bufbuild/protobuf";
import { type Any, AnySchema } from "@bufbuild/protobuf/wkt";
import { binaryMetadataJson, encodeFloat32Le } from "./binary-payload.js";
import { validateValue } from "./check-value.js";
import { invalidArgument } from "./describe-value.js";
import { hasBinaryForm, typeUrlFor } from "./type-url.js";
import { valueToJson } from "./value-json.js";
import type { Tensor, VariableType, VariableValue } from "./variable-type.js";

/**
 * A value as the protocol carries it: an Any (`Variable.value`,
 * `SetVariableRequest.value`, …) plus, for the binary form only, the payload
 * that goes in the matching bytes field (`binary_value`,
 * `initial_binary_value`, `binary_updates[k]`, …).
 */
export interface EncodedValue {
  any: Any;
  binary?: Uint8Array;
}

/** Options of {@link encodeValue}. */
export interface EncodeOptions {
  /**
   * `true`: use the binary form (embedding and tensor only); `false`: always
   * JSON; unset: decided by `binaryThreshold`.
   */
  binary?: boolean;
  /**
   * Use the binary form automatically for embeddings and tensors with more
   * than this many numbers. Unset: never automatically.
   */
  binaryThreshold?: number;
}

const utf8 = new TextEncoder();

/**
 * Encode a value of `type` for the wire. The value is normalized first (so
 * the bytes are always well-formed); constraints are not checked.
 *
 * JSON form: type URL `type.googleapis.com/snakepit.<type>`, value the UTF-8
 * JSON text (`0.7`, `"NaN"`, `"text"`, `true`, `[0.1,0.2]`,
 * `{"shape":[2],"data":[1,2]}`). JSON cannot carry `-0`: it is sent as `0`.
 *
 * Binary form (embedding, tensor): see {@link BINARY_FORMAT}. It is float32,
 * so numbers are rounded to float32; -0, NaN and ±Infinity survive. Peers
 * running the unmodified Python snakepit_bridge cannot read it (they expect
 * pickle): only send it to peers that opted in.
 *
 * @example
 * encodeValue("float", 0.7).any.typeUrl; // "type.googleapis.com/snakepit.float"
 * const { any, binary } = encodeValue("embedding", vector, { binary: true });
 *
 * @throws ConnectError with `Code.InvalidArgument` when the value is not a
 *   valid value of `type`, or the binary form is asked for another type.
 */
export function encodeValue(
  type: VariableType,
  value: VariableValue,
  options: EncodeOptions = {},
): EncodedValue {
  const normalized = validateValue(type, value);
  if (options.binary === true && !hasBinaryForm(type)) {
    throw invalidArgument(`the binary form is only for embedding and tensor, not ${type}`);
  }
  if (hasBinaryForm(type) && options.binary !== false) {
    const data = type === "embedding" ? (normalized as number[]) : (normalized as Tensor).data;
    const threshold = options.binaryThreshold;
    if (options.binary === true || (threshold !== undefined && data.length > threshold)) {
      const shape = type === "embedding" ? [data.length] : (normalized as Tensor).shape;
      return {
        any: create(AnySchema, {
          typeUrl: typeUrlFor(type, true),
          value: utf8.encode(binaryMetadataJson(shape)),
        }),
        binary: encodeFloat32Le(data),
      };
    }
  }
  return {
    any: create(AnySchema, {
      typeUrl: typeUrlFor(type),
      value: utf8.encode(valueToJson(type, normalized)),
    }),
  };
}
