/**
 * The deepest nesting of arrays and objects accepted in JSON from a peer:
 * variable values, constraints, tool parameters and results.
 *
 * JSON.parse takes any depth, but JSON.stringify and every recursive walk
 * over a value (reviving special floats, flattening nested tensor data, a
 * tool's own code) exhaust the stack at a few thousand levels, and a 4 MiB
 * request holds two million. Legitimate values stay far below: a nested
 * tensor of the most dimensions allowed takes 33 levels.
 */
export const MAX_JSON_DEPTH = 64;

/**
 * Whether `value`, as JSON.parse returns it, nests arrays and objects deeper
 * than `max` levels (`1` is 0 levels deep, `[]` and `{}` 1, `[[1]]` 2).
 * Iterative, so that measuring cannot exhaust the stack itself.
 *
 * @example
 * nestsDeeperThan(JSON.parse("[[[1]]]"), 2); // true
 */
export function nestsDeeperThan(value: unknown, max: number = MAX_JSON_DEPTH): boolean {
  if (typeof value !== "object" || value === null) return false;
  const pending: [object, number][] = [[value, 1]];
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    const [node, depth] = next;
    if (depth > max) return true;
    const children: unknown[] = Array.isArray(node) ? node : Object.values(node);
    for (const child of children) {
      if (typeof child === "object" && child !== null) pending.push([child, depth + 1]);
    }
  }
  return false;
}
