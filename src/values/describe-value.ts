import { Code, ConnectError } from "@connectrpc/connect";

// Messages must stay short and safe to log: a 10 MB string or a 100k-element
// embedding that fails validation must not end up verbatim in an error.
const MAX_SHOWN_CHARS = 60;
const MAX_SHOWN_ITEMS = 20;

/** Cut `s` to at most ~60 UTF-16 units, never splitting a surrogate pair, marking the cut with `…`. */
export function truncateText(s: string): string {
  if (s.length <= MAX_SHOWN_CHARS) return s;
  let end = MAX_SHOWN_CHARS;
  const last = s.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end -= 1;
  return `${s.slice(0, end)}…`;
}

/** A number printed the JavaScript way (`2`, `0.7`, `NaN`, `-Infinity`; `-0` as `-0`). */
export function formatNumber(n: number): string {
  return Object.is(n, -0) ? "-0" : String(n);
}

/**
 * A short, human-readable description of any value for error messages, e.g.
 * `'abc' (string)`, `42 (number)`, `an array of 3 items`, `null`.
 */
export function describeValue(value: unknown): string {
  switch (typeof value) {
    case "string":
      return `'${truncateText(value)}' (string)`;
    case "number":
      return `${formatNumber(value)} (number)`;
    case "boolean":
      return `${value} (boolean)`;
    case "bigint":
      return `${truncateText(value.toString())}n (bigint)`;
    case "undefined":
      return "undefined";
    case "symbol":
      return "a symbol";
    case "function":
      return "a function";
  }
  if (value === null) return "null";
  if (Array.isArray(value)) {
    return `an array of ${value.length} item${value.length === 1 ? "" : "s"}`;
  }
  const proto: unknown = Object.getPrototypeOf(value);
  if (proto === null || proto === Object.prototype) return "an object";
  const ctor: unknown = (value as { constructor?: unknown }).constructor;
  const ctorName = typeof ctor === "function" ? ctor.name : "";
  return ctorName === "" ? "an object" : `a ${ctorName}`;
}

/** A list of allowed names for messages: `[a, b, c]`, shortened after 20 items. */
export function formatList(items: readonly string[]): string {
  const shown = items.slice(0, MAX_SHOWN_ITEMS).map(truncateText);
  if (items.length > MAX_SHOWN_ITEMS) shown.push(`… ${items.length - MAX_SHOWN_ITEMS} more`);
  return `[${shown.join(", ")}]`;
}

/** A shape for messages, in JSON style: `[2,3]`. */
export function formatShape(shape: readonly number[]): string {
  if (shape.length > MAX_SHOWN_ITEMS) {
    return `[${shape.slice(0, MAX_SHOWN_ITEMS).join(",")},…]`;
  }
  return `[${shape.join(",")}]`;
}

/** Prefix `message` with `variable '<name>': ` when a name is given. */
export function withName(message: string, name?: string): string {
  return name === undefined ? message : `variable '${truncateText(name)}': ${message}`;
}

/** A `ConnectError` with `Code.InvalidArgument`, prefixed with the variable name when given. */
export function invalidArgument(message: string, name?: string): ConnectError {
  return new ConnectError(withName(message, name), Code.InvalidArgument);
}
