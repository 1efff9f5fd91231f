import type { ConstraintRules } from "./constraints.js";
import { specialFloatFromString } from "./special-floats.js";
import type { VariableType, VariableValue } from "./variable-type.js";

/** The outcome of a check: the normalized value, or why it was rejected. */
export type CheckResult<T> = { ok: true; value: T } | { ok: false; message: string };

/** The outcome of one type's checker. */
export type Outcome = CheckResult<VariableValue>;

/**
 * Normalizes and checks a value of one type against its rules. Returns the
 * failure instead of throwing: batch updates check many values per request.
 */
export type Checker = (value: unknown, rules: ConstraintRules, type: VariableType) => Outcome;

/** A successful outcome. */
export function ok(value: VariableValue): Outcome {
  return { ok: true, value };
}

/** A failed outcome; `message` is without the variable name. */
export function fail(message: string): Outcome {
  return { ok: false, message };
}

/** A number, or one of the special-float strings, as a number; otherwise undefined. */
export function toFloat(value: unknown): number | undefined {
  if (typeof value === "number") return value;
  if (typeof value === "string") return specialFloatFromString(value);
  return undefined;
}
