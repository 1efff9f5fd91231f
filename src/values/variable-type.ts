import { Code, ConnectError } from "@connectrpc/connect";

/**
 * The eight variable types of the snakepit bridge protocol. The name travels
 * as-is in `Variable.type` and in type URLs (`type.googleapis.com/snakepit.<type>`).
 */
export type VariableType =
  | "float"
  | "integer"
  | "string"
  | "boolean"
  | "choice"
  | "module"
  | "embedding"
  | "tensor";

/** Every {@link VariableType}, in the order the wire contract lists them. */
export const VARIABLE_TYPES: readonly VariableType[] = Object.freeze([
  "float",
  "integer",
  "string",
  "boolean",
  "choice",
  "module",
  "embedding",
  "tensor",
] as const);

const TYPE_SET: ReadonlySet<string> = new Set(VARIABLE_TYPES);

/**
 * Whether `s` names one of the eight variable types (exact, lowercase).
 *
 * @example
 * isVariableType("float"); // true
 * isVariableType("Float"); // false
 */
export function isVariableType(s: string): s is VariableType {
  return TYPE_SET.has(s);
}

/**
 * Parse a type name received from a peer.
 *
 * @throws ConnectError with `Code.InvalidArgument`:
 *   `unknown type 'x': expected one of float, integer, ...`
 */
export function parseVariableType(s: string): VariableType {
  if (isVariableType(s)) return s;
  const shown = s.length > 40 ? `${s.slice(0, 40)}…` : s;
  throw new ConnectError(
    `unknown type '${shown}': expected one of ${VARIABLE_TYPES.join(", ")}`,
    Code.InvalidArgument,
  );
}

/**
 * A dense tensor: `data` is the row-major flattening of an array of the given
 * `shape`, so `data.length` equals the product of `shape` (1 for `[]`), with
 * at most `MAX_TENSOR_DIMENSIONS` (from `unified-session-bridge/values`) dimensions.
 */
export interface Tensor {
  shape: number[];
  data: number[];
}

/**
 * The most dimensions a tensor (and a `shape` constraint) may have. NumPy,
 * what Python peers build tensors with, allowed no more than 32 before 2.0,
 * and a tensor sent as data nested to mirror its shape (numpy's `tolist()`)
 * then nests at most 33 levels, within the JSON nesting limit of 64.
 */
export const MAX_TENSOR_DIMENSIONS = 32;

/** The shape of a value of type `T` after normalization. */
export type ValueOf<T extends VariableType> = T extends "float" | "integer"
  ? number
  : T extends "boolean"
    ? boolean
    : T extends "embedding"
      ? number[]
      : T extends "tensor"
        ? Tensor
        : string;

/** Any normalized variable value. */
export type VariableValue = number | string | boolean | number[] | Tensor;
