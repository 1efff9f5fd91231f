import { type Checker, fail, ok, toFloat } from "./checker.js";
import { describeValue, formatShape, truncateText } from "./describe-value.js";
import { MAX_TENSOR_DIMENSIONS, type Tensor } from "./variable-type.js";

/** A readable list of numbers: an array, or a typed array of numbers (not bigints, not DataView). */
function asNumberList(value: unknown): ArrayLike<unknown> | undefined {
  if (Array.isArray(value)) return value;
  if (
    ArrayBuffer.isView(value) &&
    !(value instanceof DataView) &&
    !(value instanceof BigInt64Array) &&
    !(value instanceof BigUint64Array)
  ) {
    return value as unknown as ArrayLike<number>;
  }
  return undefined;
}

/** Copy `list` as floats into `out` from index `at`; returns an error message or undefined. */
function copyFloats(
  list: ArrayLike<unknown>,
  out: number[],
  at: number,
  label: string,
): string | undefined {
  for (let i = 0; i < list.length; i++) {
    const item = list[i];
    const n = toFloat(item);
    if (n === undefined)
      return `${label} ${at + i}: cannot convert ${describeValue(item)} to float`;
    out[at + i] = n;
  }
  return undefined;
}

/** embedding: an array (or typed array) of numbers or special-float strings. */
export const checkEmbedding: Checker = (value, rules) => {
  const list = asNumberList(value);
  if (list === undefined) {
    return fail(
      `cannot convert ${describeValue(value)} to embedding: expected an array of numbers`,
    );
  }
  if (rules.dimensions !== undefined && list.length !== rules.dimensions) {
    return fail(`must have ${rules.dimensions} dimensions, got ${list.length}`);
  }
  const out = new Array<number>(list.length);
  const error = copyFloats(list, out, 0, "element");
  return error === undefined ? ok(out) : fail(error);
};

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return false;
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === null || proto === Object.prototype;
}

function checkShape(value: unknown): number[] | string {
  if (!Array.isArray(value)) {
    return `tensor shape must be an array of non-negative integers, got ${describeValue(value)}`;
  }
  if (value.length > MAX_TENSOR_DIMENSIONS) {
    return `tensor shape must have at most ${MAX_TENSOR_DIMENSIONS} dimensions, got ${value.length}`;
  }
  const shape = new Array<number>(value.length);
  for (let i = 0; i < value.length; i++) {
    const d: unknown = value[i];
    if (typeof d !== "number" || !Number.isSafeInteger(d) || d < 0) {
      return `tensor shape must be an array of non-negative integers, item ${i} is ${describeValue(d)}`;
    }
    shape[i] = d === 0 ? 0 : d;
  }
  return shape;
}

/**
 * Flatten tensor data nested to match its shape (what numpy's `tolist()`
 * gives a Python peer) into `out`, row-major. Returns an error message or
 * undefined.
 */
function flattenNested(
  data: ArrayLike<unknown>,
  shape: readonly number[],
  depth: number,
  out: number[],
): string | undefined {
  if (data.length !== shape[depth]) {
    return `tensor data nesting does not match shape ${formatShape(shape)}`;
  }
  if (depth === shape.length - 1) return copyFloats(data, out, out.length, "tensor data element");
  for (let i = 0; i < data.length; i++) {
    const row = data[i];
    if (!Array.isArray(row))
      return `tensor data nesting does not match shape ${formatShape(shape)}`;
    const error = flattenNested(row, shape, depth + 1, out);
    if (error !== undefined) return error;
  }
  return undefined;
}

/** tensor: exactly `{shape, data}`, data flat or nested to mirror the shape. */
export const checkTensor: Checker = (value, rules) => {
  if (!isPlainObject(value)) {
    return fail(`cannot convert ${describeValue(value)} to tensor: expected {shape, data}`);
  }
  for (const key of Object.keys(value)) {
    if (key !== "shape" && key !== "data") {
      return fail(`tensor has unexpected key '${truncateText(key)}': expected only shape and data`);
    }
  }
  if (value.shape === undefined) return fail("tensor is missing 'shape'");
  if (value.data === undefined) return fail("tensor is missing 'data'");
  const shape = checkShape(value.shape);
  if (typeof shape === "string") return fail(shape);
  const data = asNumberList(value.data);
  if (data === undefined) {
    return fail(`tensor data must be an array of numbers, got ${describeValue(value.data)}`);
  }
  let out: number[];
  let error: string | undefined;
  // The wire form is flat; nested data is accepted only when it mirrors the shape.
  if (shape.length > 1 && data.length > 0 && Array.isArray(data[0])) {
    out = [];
    error = flattenNested(data, shape, 0, out);
  } else {
    let needed = 1;
    for (const d of shape) needed *= d;
    if (data.length !== needed) {
      return fail(`shape ${formatShape(shape)} needs ${needed} values, got ${data.length}`);
    }
    out = new Array<number>(data.length);
    error = copyFloats(data, out, 0, "tensor data element");
  }
  if (error !== undefined) return fail(error);
  if (rules.shape !== undefined && !sameShape(shape, rules.shape)) {
    return fail(
      `shape ${formatShape(shape)} does not match required shape ${formatShape(rules.shape)}`,
    );
  }
  const tensor: Tensor = { shape, data: out };
  return ok(tensor);
};

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
