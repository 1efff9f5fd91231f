import { utf8Length } from "./utf8-length.js";
import type { Tensor, VariableType, VariableValue } from "./variable-type.js";

const NUMBER_BYTES = 8;

/**
 * Size in bytes of a normalized value's payload, for size limits: 8 per
 * number (float64), 1 per boolean, the UTF-8 length of strings. Constant
 * time except for strings. It deliberately ignores encoding overhead (JSON
 * punctuation, digits), so the same value has the same size whether it
 * travels as JSON or binary.
 */
export function valueByteSize(type: VariableType, value: VariableValue): number {
  switch (type) {
    case "float":
    case "integer":
      return NUMBER_BYTES;
    case "boolean":
      return 1;
    case "string":
    case "choice":
    case "module":
      return utf8Length(value as string);
    case "embedding":
      return (value as number[]).length * NUMBER_BYTES;
    case "tensor": {
      const t = value as Tensor;
      return (t.shape.length + t.data.length) * NUMBER_BYTES;
    }
  }
}
