/**
 * Compiles a ListVariables pattern: '*' matches any run of characters, '?'
 * exactly one, everything else itself; the whole name must match. An empty
 * pattern matches everything. Only names are matched, and names are at most
 * a few hundred characters, so even a pattern full of '*' stays cheap.
 */
export function globToRegExp(pattern: string): RegExp {
  if (pattern === "" || pattern === "*") return /^/;
  let source = "";
  for (const c of pattern) {
    if (c === "*") source += "[^]*?";
    else if (c === "?") source += "[^]";
    else source += c.replace(/[\\^$.|+()[\]{}]/g, "\\$&");
  }
  return new RegExp(`^${source}$`, "u");
}
