import { checkEmbedding, checkTensor } from "./check-arrays.js";
import { checkBoolean, checkFloat, checkInteger, checkString } from "./check-scalars.js";
import type { Checker, CheckResult } from "./checker.js";
import type { ConstraintRules, Constraints } from "./constraints.js";
import { invalidArgument, withName } from "./describe-value.js";
import type { ValueOf, VariableType } from "./variable-type.js";

export type { CheckResult } from "./checker.js";

const NO_RULES: ConstraintRules = Object.freeze({});

const CHECKERS: Readonly<Record<VariableType, Checker>> = {
  float: checkFloat,
  integer: checkInteger,
  string: checkString,
  boolean: checkBoolean,
  choice: checkString,
  module: checkString,
  embedding: checkEmbedding,
  tensor: checkTensor,
};

/**
 * Normalize and check `value` as a value of `type`, without throwing: the
 * server uses this for per-key errors of batch updates.
 *
 * Normalization: integers and whole-number floats for `integer` (-0 → 0);
 * `"NaN"`, `"Infinity"`, `"-Infinity"` → numbers for `float`, `embedding`
 * and tensor data; `true`/`false` (any case) and `1`/`0` → booleans; typed
 * arrays → plain arrays; tensor data nested to match its shape → flat.
 * The result is always a fresh value; the input is never modified.
 *
 * @example
 * checkValue("integer", 3.0); // { ok: true, value: 3 }
 * checkValue("integer", 2.5, undefined, "n"); // { ok: false, message: "variable 'n': must be an integer, got 2.5" }
 */
export function checkValue<T extends VariableType>(
  type: T,
  value: unknown,
  constraints?: Constraints,
  name?: string,
): CheckResult<ValueOf<T>> {
  let rules = NO_RULES;
  if (constraints !== undefined) {
    if (constraints.type !== type) {
      return {
        ok: false,
        message: withName(
          `constraints for type ${constraints.type} cannot check a value of type ${type}`,
          name,
        ),
      };
    }
    rules = constraints.rules;
  }
  const outcome = CHECKERS[type](value, rules, type);
  if (!outcome.ok) return { ok: false, message: withName(outcome.message, name) };
  // Each checker returns the value shape of its own type.
  return outcome as CheckResult<ValueOf<T>>;
}

/**
 * Normalize and check `value` as a value of `type` (see {@link checkValue}).
 *
 * @example
 * const c = parseConstraints("float", { min: 0, max: 2 });
 * validateValue("float", 1, c); // 1
 * validateValue("float", 2.5, c, "temperature");
 * // throws ConnectError [invalid_argument] "variable 'temperature': value 2.5 is above maximum 2"
 *
 * @throws ConnectError with `Code.InvalidArgument`, the message prefixed with
 *   `variable '<name>': ` when `name` is given.
 */
export function validateValue<T extends VariableType>(
  type: T,
  value: unknown,
  constraints?: Constraints,
  name?: string,
): ValueOf<T> {
  const result = checkValue(type, value, constraints, name);
  if (!result.ok) throw invalidArgument(result.message);
  return result.value;
}
