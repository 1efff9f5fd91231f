import { Code, ConnectError } from "@connectrpc/connect";

/** Longest ListVariables pattern, after collapsing runs of '*'. */
const MAX_PATTERN = 1024;

/**
 * Compiles a ListVariables pattern: '*' matches any run of characters, '?'
 * exactly one, everything else itself; the whole name must match. An empty
 * pattern matches everything. Only names are matched, and names are at most
 * a few hundred characters, so even a pattern full of '*' stays cheap.
 */
export function globToRegExp(pattern: string): RegExp {
  // Runs of '*' mean the same as one; collapsing them keeps "***…" patterns
  // small. What is left is bounded: names are short, so a longer pattern
  // cannot match anything and is refused rather than compiled.
  const glob = pattern.replace(/\*+/g, "*");
  if (glob === "" || glob === "*") return /^/;
  if (glob.length > MAX_PATTERN) {
    throw new ConnectError(
      `pattern is ${glob.length} characters long; the limit is ${MAX_PATTERN}`,
      Code.InvalidArgument,
    );
  }
  let source = "";
  for (const c of glob) {
    if (c === "*") source += "[^]*?";
    else if (c === "?") source += "[^]";
    else source += c.replace(/[\\^$.|+()[\]{}]/g, "\\$&");
  }
  return new RegExp(`^${source}$`, "u");
}
