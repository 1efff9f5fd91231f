/**
 * The variable type system shared by client and server: the 8 types, their
 * constraints, validation and normalization, and the Any / JSON / binary
 * codec of the snakepit bridge protocol. Runtime-neutral (browsers, Workers,
 * Node).
 *
 * This is the public `unified-session-bridge/values`: what an application needs to
 * make, check, encode and decode values, and the limits that decide which
 * values and constraints are valid. Helpers only the server uses (the
 * payload size of a value, converting a JSON Any between its forms, the
 * type-URL parser) are imported from their own modules.
 *
 * @example
 * import { parseConstraints, validateValue, encodeValue, decodeValue } from "unified-session-bridge/values";
 *
 * const constraints = parseConstraints("float", '{"min":0,"max":2}');
 * const value = validateValue("float", 0.7, constraints, "temperature");
 * const { any } = encodeValue("float", value);
 * decodeValue(any); // { type: "float", value: 0.7 }
 *
 * @packageDocumentation
 */
export {
  BINARY_DTYPE,
  BINARY_FORMAT,
} from "./binary-payload.js";
export { type CheckResult, checkValue, validateValue } from "./check-value.js";
export {
  type CompiledPattern,
  MAX_PATTERN_INSTRUCTIONS,
  MAX_PATTERN_LENGTH,
  MAX_PATTERN_REPEAT,
  PATTERN_CHECK_BUDGET,
} from "./compile-pattern.js";
export {
  type AllowedList,
  type ConstraintRules,
  type Constraints,
  constraintsFromJson,
  noConstraints,
  parseConstraints,
} from "./constraints.js";
export { decodeValue } from "./decode-value.js";
export { type EncodedValue, type EncodeOptions, encodeValue } from "./encode-value.js";
export { inferType } from "./infer-type.js";
export {
  decodeJsonAny,
  encodeJsonAny,
  type JsonAnyForm,
  type JsonValue,
  STRING_VALUE_TYPE_URL,
} from "./json-any.js";
export { MAX_JSON_DEPTH } from "./json-depth.js";
export { loadPatternEngine } from "./pattern-engine.js";
export { TYPE_URL_PREFIX } from "./type-url.js";
export { isVariableId, variableId } from "./variable-id.js";
export {
  isVariableType,
  MAX_TENSOR_DIMENSIONS,
  parseVariableType,
  type Tensor,
  VARIABLE_TYPES,
  type ValueOf,
  type VariableType,
  type VariableValue,
} from "./variable-type.js";
