import { invalidArgument, truncateText } from "./describe-value.js";
import { isVariableType, VARIABLE_TYPES, type VariableType } from "./variable-type.js";

/** Prefix of every variable value's type URL. */
export const TYPE_URL_PREFIX = "type.googleapis.com/snakepit.";

/** Suffix marking the binary form (`…snakepit.embedding.binary`). */
export const BINARY_SUFFIX = ".binary";

/** The types that have a binary form. */
export type BinaryVariableType = "embedding" | "tensor";

/** Whether `type` has a binary form (embedding and tensor). */
export function hasBinaryForm(type: VariableType): type is BinaryVariableType {
  return type === "embedding" || type === "tensor";
}

/**
 * The type URL of a value of `type`, e.g. `typeUrlFor("float")` is
 * `"type.googleapis.com/snakepit.float"` and `typeUrlFor("tensor", true)` is
 * `"type.googleapis.com/snakepit.tensor.binary"`.
 *
 * @throws ConnectError with `Code.InvalidArgument` when `binary` is asked for
 *   a type without a binary form.
 */
export function typeUrlFor(type: VariableType, binary = false): string {
  if (!binary) return TYPE_URL_PREFIX + type;
  if (!hasBinaryForm(type)) {
    throw invalidArgument(`the binary form is only for embedding and tensor, not ${type}`);
  }
  return TYPE_URL_PREFIX + type + BINARY_SUFFIX;
}

/** What a value type URL says. */
export interface ParsedTypeUrl {
  readonly type: VariableType;
  /** Whether the URL ends in `.binary`. */
  readonly binary: boolean;
}

/**
 * Read the variable type from a type URL the way both original sides did:
 * strip a trailing `.binary`, take the text after the last `/`, then after
 * the last `.`. So `type.googleapis.com/snakepit.float`, `snakepit.float` and
 * `dspex.variables/float` all mean `float`.
 *
 * @throws ConnectError with `Code.InvalidArgument` when no variable type can
 *   be read from the URL.
 */
export function parseTypeUrl(url: string): ParsedTypeUrl {
  const binary = url.endsWith(BINARY_SUFFIX);
  const base = binary ? url.slice(0, -BINARY_SUFFIX.length) : url;
  const last = base.slice(base.lastIndexOf("/") + 1);
  const name = last.slice(last.lastIndexOf(".") + 1);
  if (!isVariableType(name)) {
    throw invalidArgument(
      `unknown type URL '${truncateText(url)}': expected ${TYPE_URL_PREFIX}<type> with <type> one of ${VARIABLE_TYPES.join(", ")}`,
    );
  }
  return { type: name, binary };
}
