import type { Tensor, VariableType, VariableValue } from "./variable-type.js";

const NUMBER_BYTES = 8;

/** UTF-8 length of `s` without encoding it (lone surrogates count as U+FFFD, 3 bytes). */
export function utf8ByteLength(s: string): number {
  let bytes = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) bytes += 1;
    else if (c < 0x800) bytes += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        bytes += 4;
        i++;
      } else {
        bytes += 3;
      }
    } else bytes += 3;
  }
  return bytes;
}

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
      return utf8ByteLength(value as string);
    case "embedding":
      return (value as number[]).length * NUMBER_BYTES;
    case "tensor": {
      const t = value as Tensor;
      return (t.shape.length + t.data.length) * NUMBER_BYTES;
    }
  }
}
