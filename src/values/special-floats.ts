/**
 * JSON has no NaN or infinities, so the bridge carries them as the JSON
 * strings "NaN", "Infinity" and "-Infinity" (exactly these spellings).
 */
const FROM_STRING: ReadonlyMap<string, number> = new Map([
  ["NaN", Number.NaN],
  ["Infinity", Number.POSITIVE_INFINITY],
  ["-Infinity", Number.NEGATIVE_INFINITY],
]);

/** The number a special-float string stands for, or `undefined` if `s` is not one of the three. */
export function specialFloatFromString(s: string): number | undefined {
  return FROM_STRING.get(s);
}

/**
 * The JSON text of a number on the wire: finite numbers as JSON numbers
 * (JavaScript formatting: `1`, `0.7`, `1e+21`; `-0` becomes `0`, as in any
 * JSON), special values as the strings `"NaN"`, `"Infinity"`, `"-Infinity"`.
 */
export function numberToJson(n: number): string {
  return Number.isFinite(n) ? String(n) : `"${specialFloatToString(n)}"`;
}

/** The wire string of a non-finite number: `"NaN"`, `"Infinity"` or `"-Infinity"`. */
export function specialFloatToString(n: number): "NaN" | "Infinity" | "-Infinity" {
  if (Number.isNaN(n)) return "NaN";
  return n > 0 ? "Infinity" : "-Infinity";
}

// Longest first so "-Infinity" wins over "Infinity".
const BARE_TOKENS = ["-Infinity", "Infinity", "NaN"] as const;

/**
 * Python's `json.dumps` writes non-finite floats as the bare (non-JSON)
 * tokens `NaN`, `Infinity`, `-Infinity`. Rewrite such tokens outside string
 * literals into their quoted form so `JSON.parse` accepts the text. Returns
 * `undefined` when there is nothing to rewrite.
 */
export function quoteBareSpecialFloats(text: string): string | undefined {
  let out = "";
  let copiedUpTo = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c /* \ */) i++;
      else if (c === 0x22 /* " */) inString = false;
      continue;
    }
    if (c === 0x22) {
      inString = true;
      continue;
    }
    if (c !== 0x2d /* - */ && c !== 0x49 /* I */ && c !== 0x4e /* N */) continue;
    for (const token of BARE_TOKENS) {
      if (text.startsWith(token, i)) {
        out += `${text.slice(copiedUpTo, i)}"${token}"`;
        i += token.length - 1;
        copiedUpTo = i + 1;
        break;
      }
    }
  }
  return copiedUpTo === 0 ? undefined : out + text.slice(copiedUpTo);
}
