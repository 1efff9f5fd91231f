import { Code, ConnectError } from "@connectrpc/connect";
import type { Limits } from "../limits/limits.js";
import type { SessionTransaction, VariableRecord } from "../store/session-store.js";

/** Dependency edges a session may hold, per variable it may hold. */
const DEPENDENCIES_PER_VARIABLE = 4;

/**
 * Adds the edge a→b unless it is there already; refuses a self-edge, a
 * cycle, and more edges than the session may hold. Each new edge costs a
 * walk of all edges (the cycle check), which the edge limit bounds.
 */
export function addDependencyEdge(
  limits: Limits,
  tx: SessionTransaction,
  a: VariableRecord,
  b: VariableRecord,
  type: string,
): void {
  if (a.id === b.id) {
    throw new ConnectError(`variable '${a.name}' cannot depend on itself`, Code.InvalidArgument);
  }
  const edges = tx.dependencies();
  if (edges.some((e) => e.from === a.id && e.to === b.id)) return;
  const maxEdges = DEPENDENCIES_PER_VARIABLE * limits.maxVariablesPerSession;
  if (edges.length >= maxEdges) {
    throw new ConnectError(
      `session has ${edges.length} dependencies; the limit is ${maxEdges} (${DEPENDENCIES_PER_VARIABLE} per variable of --max-variables-per-session)`,
      Code.ResourceExhausted,
    );
  }
  // Adding a→b closes a cycle exactly when a is reachable from b.
  const next = new Map<string, string[]>();
  for (const e of edges) {
    const list = next.get(e.from);
    if (list === undefined) next.set(e.from, [e.to]);
    else list.push(e.to);
  }
  const seen = new Set<string>();
  const stack = [b.id];
  while (stack.length > 0) {
    const id = stack.pop() as string;
    if (id === a.id) {
      throw new ConnectError(
        `dependency '${a.name}' -> '${b.name}' would create a cycle`,
        Code.InvalidArgument,
      );
    }
    if (seen.has(id)) continue;
    seen.add(id);
    stack.push(...(next.get(id) ?? []));
  }
  tx.addDependency({ from: a.id, to: b.id, type: type || "depends_on" });
}
