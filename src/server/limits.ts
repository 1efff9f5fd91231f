import { Code, ConnectError } from "@connectrpc/connect";
import { defaultLimits, type OptionKeys, type ServerConfig } from "./config-options.js";

/**
 * Server limits: what any one caller can make the server hold. Each is an
 * option of the server config (the options of group "limits" in
 * `config-options.ts`, where each one's meaning and default are), except
 * the name length, which is fixed.
 */
export interface Limits extends Readonly<Pick<ServerConfig, OptionKeys<"limits">>> {
  /** Longest variable name. */
  readonly maxNameLength: number;
}

// Defined with the options it comes from and only re-exported here: this
// module (which the option parsers import) needs nothing at load time.
export { defaultLimits };

/** The limits among `source`'s fields (e.g. a server config), defaults for the rest. */
export function limitsFrom(source: Partial<Record<keyof Limits, unknown>>): Limits {
  const limits: Record<string, number> = { ...defaultLimits };
  for (const key of Object.keys(defaultLimits) as (keyof Limits)[]) {
    const value = source[key];
    if (typeof value === "number") limits[key] = value;
  }
  return limits as unknown as Limits;
}

const NAME = /^[A-Za-z_][A-Za-z0-9_.-]*$/;

/**
 * Checks a variable name: starts with a letter or '_', then letters, digits,
 * '_', '.', '-'. Names never contain ':', which is what tells them apart
 * from variable ids.
 */
export function checkVariableName(name: string, limits: Limits): void {
  if (name === "") {
    throw new ConnectError("variable name is required", Code.InvalidArgument);
  }
  if (name.length > limits.maxNameLength) {
    throw new ConnectError(
      `variable name ${quote(name, 40)} is ${name.length} characters long; the limit is ${limits.maxNameLength}`,
      Code.InvalidArgument,
    );
  }
  if (!NAME.test(name)) {
    throw new ConnectError(
      `variable name ${quote(name)} is invalid: use letters, digits, '_', '.' and '-', starting with a letter or '_'`,
      Code.InvalidArgument,
    );
  }
}

/** Checks a metadata map against the entry and byte limits. */
export function checkMetadata(
  metadata: Readonly<Record<string, string>>,
  limits: Limits,
  subject: string,
): void {
  const entries = Object.keys(metadata).length;
  const bytes = metadataBytes(metadata);
  if (entries > limits.maxMetadataEntries) {
    throw new ConnectError(
      `${subject}: metadata has ${entries} entries; the limit is ${limits.maxMetadataEntries}`,
      Code.ResourceExhausted,
    );
  }
  if (bytes > limits.maxMetadataBytes) {
    throw new ConnectError(
      `${subject}: metadata is ${bytes} bytes; the limit is ${limits.maxMetadataBytes}`,
      Code.ResourceExhausted,
    );
  }
}

/** Bytes of all keys and values of a metadata map, as UTF-8. */
export function metadataBytes(metadata: Readonly<Record<string, string>>): number {
  let bytes = 0;
  for (const key in metadata) bytes += utf8Length(key) + utf8Length(metadata[key] as string);
  return bytes;
}

/** A byte count for messages: "512 bytes", "256 KiB", "17.2 MiB". */
export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} bytes`;
  const [size, unit] = bytes < 1024 * 1024 ? [bytes / 1024, "KiB"] : [bytes / 1024 / 1024, "MiB"];
  // One decimal, rounded up: a figure just over a limit must not read as
  // the limit itself. The epsilon keeps float noise (1.1 * 10) from rounding up.
  const rounded = Math.ceil(size * 10 - 1e-9) / 10;
  return `${Number.isInteger(rounded) ? rounded : rounded.toFixed(1)} ${unit}`;
}

/** UTF-8 length of a string without allocating. */
export function utf8Length(s: string): number {
  let bytes = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) bytes += 1;
    else if (c < 0x800) bytes += 2;
    else if (c >= 0xd800 && c <= 0xdbff) {
      bytes += 4;
      i++;
    } else bytes += 3;
  }
  return bytes;
}

/**
 * A client-supplied string as a message may show it: at most `max` code
 * points (never half a character) and well-formed, so the message can
 * always be sent back.
 */
export function clip(text: string, max = 80): string {
  const points = Array.from(text.toWellFormed());
  return points.length <= max ? points.join("") : `${points.slice(0, max).join("")}…`;
}

/** {@link clip}, in single quotes. */
export function quote(text: string, max = 80): string {
  return `'${clip(text, max)}'`;
}
