import { describeValue, invalidArgument } from "./describe-value.js";
import type { VariableType } from "./variable-type.js";

/**
 * The type to register a variable with when the application asked for
 * auto-registration (the original's `ctx["x"] = v`). Opt-in only; never used
 * silently.
 *
 * - boolean → `boolean`
 * - safe integer (including `3.0`, which is the same number in JavaScript,
 *   and `-0`) → `integer`
 * - any other number, including NaN and ±Infinity → `float`
 * - string → `string`
 * - non-empty array of numbers → `embedding`
 *
 * Because `1` and `1.0` are the same JavaScript number, a float variable
 * that should start at a whole number must be registered explicitly.
 *
 * @throws ConnectError with `Code.InvalidArgument`
 *   "cannot infer a variable type from <description>" for anything else.
 */
export function inferType(value: unknown): VariableType {
  switch (typeof value) {
    case "boolean":
      return "boolean";
    case "number":
      return Number.isSafeInteger(value) ? "integer" : "float";
    case "string":
      return "string";
  }
  if (Array.isArray(value) && value.length > 0 && value.every((item) => typeof item === "number")) {
    return "embedding";
  }
  throw invalidArgument(`cannot infer a variable type from ${describeValue(value)}`);
}
