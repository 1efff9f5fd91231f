import { invalidArgument, truncateText } from "./describe-value.js";
import { MAX_JSON_DEPTH, nestsDeeperThan } from "./json-depth.js";
import { numberToJson, quoteBareSpecialFloats, specialFloatFromString } from "./special-floats.js";
import type { Tensor, VariableType, VariableValue } from "./variable-type.js";

function numbersToJson(data: readonly number[]): string {
  let out = "[";
  for (let i = 0; i < data.length; i++) {
    if (i > 0) out += ",";
    out += numberToJson(data[i] as number);
  }
  return `${out}]`;
}

/**
 * The wire JSON text of a normalized value of `type`: JSON scalars, JSON
 * strings, `[0.1,0.2]` for embeddings, `{"shape":[2],"data":[1,2]}` for
 * tensors (that key order). Special floats are the strings `"NaN"`,
 * `"Infinity"`, `"-Infinity"`; `-0` becomes `0`.
 */
export function valueToJson(type: VariableType, value: VariableValue): string {
  switch (type) {
    case "float":
    case "integer":
      return numberToJson(value as number);
    case "boolean":
      return value ? "true" : "false";
    case "string":
    case "choice":
    case "module":
      return JSON.stringify(value as string);
    case "embedding":
      return numbersToJson(value as number[]);
    case "tensor": {
      const t = value as Tensor;
      return `{"shape":[${t.shape.join(",")}],"data":${numbersToJson(t.data)}}`;
    }
  }
}

function hasSpecialFloats(type: VariableType): boolean {
  return type === "float" || type === "embedding" || type === "tensor";
}

function reviveFloat(v: unknown): unknown {
  return typeof v === "string" ? (specialFloatFromString(v) ?? v) : v;
}

function reviveArray(v: unknown): void {
  if (!Array.isArray(v)) return;
  for (let i = 0; i < v.length; i++) {
    const item: unknown = v[i];
    if (typeof item === "string") v[i] = reviveFloat(item);
    else if (Array.isArray(item)) reviveArray(item); // nested tensor data from numpy's tolist()
  }
}

/**
 * Parse the wire JSON text of a value of `type`, turning the special-float
 * strings back into numbers where numbers belong (float, embedding elements,
 * tensor data). For those types the bare tokens `NaN`, `Infinity`,
 * `-Infinity` that Python's `json.dumps` writes are accepted too. The result
 * is not validated yet.
 *
 * @throws ConnectError with `Code.InvalidArgument` when the text is not JSON,
 *   or nests deeper than {@link MAX_JSON_DEPTH} levels.
 */
export function parseValueJson(type: VariableType, text: string): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    const quoted = hasSpecialFloats(type) ? quoteBareSpecialFloats(text) : undefined;
    if (quoted === undefined) throw notJson(type, e);
    try {
      value = JSON.parse(quoted);
    } catch {
      // Report the error of the text as sent, not of our rewrite.
      throw notJson(type, e);
    }
  }
  if (nestsDeeperThan(value)) {
    throw invalidArgument(`${type} value nests deeper than ${MAX_JSON_DEPTH} levels`);
  }
  switch (type) {
    case "float":
      return reviveFloat(value);
    case "embedding":
      reviveArray(value);
      return value;
    case "tensor":
      if (typeof value === "object" && value !== null && !Array.isArray(value)) {
        reviveArray((value as Record<string, unknown>).data);
      }
      return value;
    default:
      return value;
  }
}

function notJson(type: VariableType, e: unknown) {
  const reason = e instanceof Error ? e.message : String(e);
  return invalidArgument(`${type} value is not valid JSON: ${truncateText(reason)}`);
}
