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

/**
 * Whether `word` looks like a misspelling of `meant` (case aside): at most
 * two letters inserted, removed or changed, for "did you mean …?" hints.
 */
export function misspells(word: string, meant: string): boolean {
  const a = word.toLowerCase();
  const b = meant.toLowerCase();
  if (a === b || Math.abs(a.length - b.length) > 2) return false;
  // Levenshtein distance, one row at a time.
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      next[j] = Math.min(
        (row[j] as number) + 1,
        (next[j - 1] as number) + 1,
        (row[j - 1] as number) + cost,
      );
    }
    row = next;
  }
  return (row[b.length] as number) <= 2;
}
