/**
 * How the server's messages show what they report: text a client sent,
 * clipped and quoted so the message stays short and can always be sent
 * back, and byte counts with their unit. It imports nothing, so any module
 * can use it (the option parsers included).
 */

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

/** A byte count for messages: "512 bytes", "256 KiB", "17.2 MiB". */
export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} bytes`;
  const [size, unit] = bytes < 1024 * 1024 ? [bytes / 1024, "KiB"] : [bytes / 1024 / 1024, "MiB"];
  // One decimal, rounded up: a figure just over a limit must not read as
  // the limit itself. The epsilon keeps float noise (1.1 * 10) from rounding up.
  const rounded = Math.ceil(size * 10 - 1e-9) / 10;
  return `${Number.isInteger(rounded) ? rounded : rounded.toFixed(1)} ${unit}`;
}
