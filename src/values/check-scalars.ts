import { type Checker, fail, type Outcome, ok, toFloat } from "./checker.js";
import { PATTERN_CHECK_BUDGET } from "./compile-pattern.js";
import type { ConstraintRules } from "./constraints.js";
import { describeValue, formatList, formatNumber, truncateText } from "./describe-value.js";

function checkRange(n: number, rules: ConstraintRules): Outcome {
  if (rules.min !== undefined && n < rules.min) {
    return fail(`value ${formatNumber(n)} is below minimum ${formatNumber(rules.min)}`);
  }
  if (rules.max !== undefined && n > rules.max) {
    return fail(`value ${formatNumber(n)} is above maximum ${formatNumber(rules.max)}`);
  }
  return ok(n);
}

/**
 * float: a number or a special-float string. NaN and ±Infinity are refused
 * when the rules say `finiteOnly` (the default with min/max); otherwise they
 * bypass min/max, as in the original.
 */
export const checkFloat: Checker = (value, rules) => {
  const n = toFloat(value);
  if (n === undefined) return fail(`cannot convert ${describeValue(value)} to float`);
  if (Number.isFinite(n)) return checkRange(n, rules);
  if (rules.finiteOnly !== true) return ok(n);
  // An infinity beyond a bound gets the usual message, which clients match on.
  const range = checkRange(n, rules);
  if (!range.ok) return range;
  return fail(
    `value ${formatNumber(n)} is not a finite number; set constraint 'allow_non_finite' to true to accept NaN and ±Infinity`,
  );
};

/** integer: a safe integer (whole floats and bigints accepted; -0 → 0). */
export const checkInteger: Checker = (value, rules) => {
  let n: number;
  if (typeof value === "number") {
    if (!Number.isInteger(value)) return fail(`must be an integer, got ${formatNumber(value)}`);
    n = value;
  } else if (typeof value === "bigint") {
    n = Number(value);
  } else {
    return fail(`cannot convert ${describeValue(value)} to integer`);
  }
  if (!Number.isSafeInteger(n)) {
    return fail(`integer ${formatNumber(n)} is outside the safe range ±${Number.MAX_SAFE_INTEGER}`);
  }
  return checkRange(n === 0 ? 0 : n, rules);
};

/** Length in Unicode code points; a lone surrogate counts as one. */
export function codePointLength(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length - 1; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n--;
        i++;
      }
    }
  }
  return n;
}

/** string, choice, module: a string, checked against lengths, pattern and the allowed list. */
export const checkString: Checker = (value, rules, type) => {
  if (typeof value !== "string") return fail(`cannot convert ${describeValue(value)} to ${type}`);
  if (rules.minLength !== undefined || rules.maxLength !== undefined) {
    const length = codePointLength(value);
    if (rules.minLength !== undefined && length < rules.minLength) {
      return fail(`length ${length} is below min_length ${rules.minLength}`);
    }
    if (rules.maxLength !== undefined && length > rules.maxLength) {
      return fail(`length ${length} is above max_length ${rules.maxLength}`);
    }
  }
  const pattern = rules.pattern;
  if (pattern !== undefined) {
    // Refused unmatched: matching costs length × instructions, and a check
    // runs on the event loop that every other caller shares.
    if (value.length > pattern.maxValueLength) {
      return fail(
        `length ${value.length} is too long to check against pattern '${truncateText(pattern.source)}': it compiles to ${pattern.instructions} instructions, so values may have at most ${pattern.maxValueLength} characters (the limit is ${PATTERN_CHECK_BUDGET} characters × instructions)`,
      );
    }
    if (!pattern.test(value)) {
      return fail(`does not match pattern '${truncateText(pattern.source)}'`);
    }
  }
  if (rules.allowed !== undefined && !rules.allowed.set.has(value)) {
    return fail(`must be one of ${formatList(rules.allowed.list)}, got '${truncateText(value)}'`);
  }
  return ok(value);
};

/** boolean: true/false, "true"/"false" in any case, 1/0. */
export const checkBoolean: Checker = (value) => {
  if (typeof value === "boolean") return ok(value);
  if (typeof value === "string" && value.length <= 5) {
    const lower = value.toLowerCase();
    if (lower === "true") return ok(true);
    if (lower === "false") return ok(false);
  }
  if (value === 1) return ok(true);
  if (value === 0) return ok(false);
  return fail(`cannot convert ${describeValue(value)} to boolean`);
};
