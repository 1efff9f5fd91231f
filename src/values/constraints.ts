import { type CompiledPattern, compilePattern } from "./compile-pattern.js";
import { describeValue, formatNumber, invalidArgument, truncateText } from "./describe-value.js";
import { MAX_JSON_DEPTH, nestsDeeperThan } from "./json-depth.js";
import { MAX_TENSOR_DIMENSIONS, type VariableType } from "./variable-type.js";

export type { CompiledPattern } from "./compile-pattern.js";

/** A non-empty list of allowed strings (`enum`, `choices`, `allowed_modules`). */
export interface AllowedList {
  readonly list: readonly string[];
  readonly set: ReadonlySet<string>;
}

/**
 * The checked form of a constraints object, ready for validation. Only the
 * fields that the constraint's type allows are ever set. Empty allowed lists
 * are dropped: like the original, `choices: []` means "any string".
 */
export interface ConstraintRules {
  readonly min?: number;
  readonly max?: number;
  /**
   * Float only: NaN and ±Infinity are refused. Set when the constraints
   * have `min` or `max` and do not say `allow_non_finite: true`, or when they
   * say `allow_non_finite: false`.
   */
  readonly finiteOnly?: true;
  readonly minLength?: number;
  readonly maxLength?: number;
  readonly pattern?: CompiledPattern;
  readonly allowed?: AllowedList;
  readonly dimensions?: number;
  readonly shape?: readonly number[];
}

/**
 * Parsed and checked constraints for one type. Immutable; create it with
 * {@link parseConstraints} and reuse it for every validation (it holds the
 * compiled RE2 pattern).
 */
export interface Constraints {
  /** The type these constraints apply to. */
  readonly type: VariableType;
  /** Canonical JSON (keys sorted, `null` entries dropped); `"{}"` if none. */
  readonly json: string;
  /** The accepted constraints as a frozen object, keys sorted. */
  readonly raw: Readonly<Record<string, unknown>>;
  /** The checked rules the validators apply. */
  readonly rules: ConstraintRules;
}

const ALLOWED_KEYS: Readonly<Record<VariableType, readonly string[]>> = {
  float: ["min", "max", "allow_non_finite"],
  integer: ["min", "max"],
  string: ["min_length", "max_length", "pattern", "enum"],
  boolean: [],
  choice: ["choices"],
  module: ["allowed_modules"],
  embedding: ["dimensions"],
  tensor: ["shape"],
};

const NONE: Readonly<Record<VariableType, Constraints>> = Object.freeze(
  Object.fromEntries(
    Object.keys(ALLOWED_KEYS).map((type) => [
      type,
      Object.freeze({ type, json: "{}", raw: Object.freeze({}), rules: Object.freeze({}) }),
    ]),
  ) as Record<VariableType, Constraints>,
);

/**
 * The empty constraints of a type (shared, frozen).
 */
export function noConstraints(type: VariableType): Constraints {
  return NONE[type];
}

/**
 * Parse the constraints of a variable, given as JSON text (as in
 * `constraints_json`; `""`, `"null"`, `null` or `undefined` mean none) or as an
 * object. A key whose value is `null` counts as absent.
 *
 * Allowed keys: float/integer `min`, `max`; float `allow_non_finite`; string
 * `min_length`, `max_length`, `pattern` (RE2, unanchored), `enum`; choice
 * `choices`; module `allowed_modules`; embedding `dimensions`; tensor
 * `shape`; boolean none.
 *
 * A float with `min` or `max` refuses NaN and ±Infinity unless
 * `allow_non_finite` is `true` (the original let them bypass the bounds);
 * `allow_non_finite: false` refuses them even without bounds. A `pattern` is
 * held to `MAX_PATTERN_LENGTH`, `MAX_PATTERN_REPEAT` and
 * `MAX_PATTERN_INSTRUCTIONS`, and values checked against it to
 * `PATTERN_CHECK_BUDGET` (see compile-pattern.ts).
 *
 * @example
 * const c = parseConstraints("float", '{"min":0,"max":2}');
 * validateValue("float", 2.5, c, "temperature"); // throws "variable 'temperature': value 2.5 is above maximum 2"
 *
 * @throws ConnectError with `Code.InvalidArgument` for malformed JSON, JSON
 *   nesting deeper than {@link MAX_JSON_DEPTH} levels, unknown
 *   keys (the message lists the allowed ones), wrongly typed values,
 *   `min > max`, `min_length > max_length`, or an invalid or too costly
 *   pattern.
 */
export function parseConstraints(
  type: VariableType,
  input?: string | Readonly<Record<string, unknown>> | null,
): Constraints {
  const object = toObject(input);
  if (object === undefined) return NONE[type];
  const allowed = ALLOWED_KEYS[type];
  const raw: Record<string, unknown> = {};
  const rules: { -readonly [K in keyof ConstraintRules]: ConstraintRules[K] } = {};
  let allowNonFinite: boolean | undefined;
  for (const key of Object.keys(object).sort()) {
    if (!allowed.includes(key)) {
      throw invalidArgument(
        allowed.length === 0
          ? `type ${type} takes no constraints, got '${truncateText(key)}'`
          : `constraint '${truncateText(key)}' is not allowed for type ${type}: allowed are ${allowed.join(", ")}`,
      );
    }
    const value = object[key];
    if (value === null || value === undefined) continue;
    switch (key) {
      case "min":
        raw[key] = rules.min = finiteNumber(key, value);
        break;
      case "max":
        raw[key] = rules.max = finiteNumber(key, value);
        break;
      case "allow_non_finite":
        raw[key] = allowNonFinite = flag(key, value);
        break;
      case "min_length":
        raw[key] = rules.minLength = nonNegativeInteger(key, value);
        break;
      case "max_length":
        raw[key] = rules.maxLength = nonNegativeInteger(key, value);
        break;
      case "pattern":
        rules.pattern = compilePattern(value);
        raw[key] = rules.pattern.source;
        break;
      case "enum":
      case "choices":
      case "allowed_modules": {
        const list = stringList(key, value);
        raw[key] = list;
        if (list.length > 0) rules.allowed = Object.freeze({ list, set: new Set(list) });
        break;
      }
      case "dimensions":
        raw[key] = rules.dimensions = positiveInteger(key, value);
        break;
      case "shape":
        raw[key] = rules.shape = shapeList(value);
        break;
    }
  }
  checkOrder("min", rules.min, "max", rules.max);
  // Bounds are a promise about the value; NaN and ±Infinity keep it only
  // when the variable says so.
  const bounded = rules.min !== undefined || rules.max !== undefined;
  if (type === "float" && (allowNonFinite === false || (allowNonFinite === undefined && bounded))) {
    rules.finiteOnly = true;
  }
  checkOrder("min_length", rules.minLength, "max_length", rules.maxLength);
  if (Object.keys(raw).length === 0) return NONE[type];
  return Object.freeze({
    type,
    json: JSON.stringify(raw),
    raw: Object.freeze(raw),
    rules: Object.freeze(rules),
  });
}

function toObject(
  input: string | Readonly<Record<string, unknown>> | null | undefined,
): Readonly<Record<string, unknown>> | undefined {
  if (input === undefined || input === null) return undefined;
  let parsed: unknown = input;
  if (typeof input === "string") {
    if (input.trim() === "") return undefined;
    try {
      parsed = JSON.parse(input);
    } catch (e) {
      const reason = e instanceof Error ? e.message : String(e);
      throw invalidArgument(`constraints are not valid JSON: ${truncateText(reason)}`);
    }
    if (nestsDeeperThan(parsed)) {
      throw invalidArgument(`constraints nest deeper than ${MAX_JSON_DEPTH} levels`);
    }
    if (parsed === null) return undefined;
  }
  if (!isPlainObject(parsed)) {
    throw invalidArgument(`constraints must be a JSON object, got ${describeValue(parsed)}`);
  }
  return parsed;
}

function isPlainObject(v: unknown): v is Readonly<Record<string, unknown>> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return false;
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === null || proto === Object.prototype;
}

function finiteNumber(key: string, v: unknown): number {
  if (typeof v === "number" && Number.isFinite(v)) return v === 0 ? 0 : v;
  throw invalidArgument(`constraint '${key}' must be a finite number, got ${describeValue(v)}`);
}

function flag(key: string, v: unknown): boolean {
  if (typeof v === "boolean") return v;
  throw invalidArgument(`constraint '${key}' must be true or false, got ${describeValue(v)}`);
}

function nonNegativeInteger(key: string, v: unknown): number {
  if (typeof v === "number" && Number.isSafeInteger(v) && v >= 0) return v === 0 ? 0 : v;
  throw invalidArgument(
    `constraint '${key}' must be a non-negative integer, got ${describeValue(v)}`,
  );
}

function positiveInteger(key: string, v: unknown): number {
  if (typeof v === "number" && Number.isSafeInteger(v) && v > 0) return v;
  throw invalidArgument(`constraint '${key}' must be a positive integer, got ${describeValue(v)}`);
}

function stringList(key: string, v: unknown): readonly string[] {
  if (!Array.isArray(v)) {
    throw invalidArgument(
      `constraint '${key}' must be an array of strings, got ${describeValue(v)}`,
    );
  }
  const list: string[] = [];
  for (let i = 0; i < v.length; i++) {
    const item: unknown = v[i];
    if (typeof item !== "string") {
      throw invalidArgument(
        `constraint '${key}' must be an array of strings, item ${i} is ${describeValue(item)}`,
      );
    }
    list.push(item);
  }
  return Object.freeze(list);
}

function shapeList(v: unknown): readonly number[] {
  const fail = (detail: string) =>
    invalidArgument(`constraint 'shape' must be an array of non-negative integers, ${detail}`);
  if (!Array.isArray(v)) throw fail(`got ${describeValue(v)}`);
  if (v.length > MAX_TENSOR_DIMENSIONS) {
    throw invalidArgument(
      `constraint 'shape' must have at most ${MAX_TENSOR_DIMENSIONS} dimensions, got ${v.length}`,
    );
  }
  const shape: number[] = [];
  for (let i = 0; i < v.length; i++) {
    const item: unknown = v[i];
    if (typeof item !== "number" || !Number.isSafeInteger(item) || item < 0) {
      throw fail(`item ${i} is ${describeValue(item)}`);
    }
    shape.push(item === 0 ? 0 : item);
  }
  return Object.freeze(shape);
}

function checkOrder(
  lowKey: string,
  low: number | undefined,
  highKey: string,
  high: number | undefined,
): void {
  if (low !== undefined && high !== undefined && low > high) {
    throw invalidArgument(
      `constraint '${lowKey}' (${formatNumber(low)}) is greater than '${highKey}' (${formatNumber(high)})`,
    );
  }
}

// Variables of a session, and sessions, mostly share a few constraint sets,
// and parsing compiles RE2 patterns. Constraints are immutable, so one
// parse per distinct (type, JSON) serves client and server alike; the maps
// are bounded (MEMO_SIZE texts in all) and simply start over when full.
// One map per type: a lookup then hashes the stored JSON text, whose hash
// the engine keeps, instead of a key string joined anew on every write.
const MEMO_SIZE = 4096;
const memo = new Map<VariableType, Map<string, Constraints>>();
let memoCount = 0;

/**
 * {@link parseConstraints} of a variable's `constraints_json`, parsed once
 * per distinct type and text. Throws like parseConstraints.
 */
export function constraintsFromJson(type: VariableType, json: string): Constraints {
  let byText = memo.get(type);
  let constraints = byText?.get(json);
  if (constraints === undefined) {
    constraints = parseConstraints(type, json);
    if (memoCount >= MEMO_SIZE) {
      memo.clear();
      memoCount = 0;
      byText = undefined;
    }
    if (byText === undefined) {
      byText = new Map();
      memo.set(type, byText);
    }
    byText.set(json, constraints);
    memoCount++;
  }
  return constraints;
}
