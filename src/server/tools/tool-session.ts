import type { JsonValue } from "../../values/index.js";
import type { BridgeCore } from "../bridge-core.js";
import { compileGlob } from "../glob.js";
import type { VariableRecord } from "../store/session-store.js";
import type { ToolSession, ToolVariable } from "./tool-definition.js";

/**
 * The session as a server-side tool sees it. Every write goes through the
 * same semantics as a client's SetVariable (validation, versions, history,
 * watchers); updates run inside one store transaction, so they are atomic.
 * Session data is held to the value limit and counts in the session budget.
 */
export function createToolSession(core: BridgeCore, sessionId: string): ToolSession {
  const write = (
    identifier: string,
    compute: (current: VariableRecord) => unknown,
    expectedVersion?: number,
  ) =>
    core.transact(sessionId, (tx) => {
      const current = core.ops.find(tx, identifier);
      const prepared = core.ops.prepareWrite(tx, {
        identifier,
        value: { raw: compute(current) },
        binary: new Uint8Array(0),
        metadata: { source: "tool" },
        expectedVersion,
      });
      return toToolVariable(core.ops.applyWrite(tx, prepared));
    });

  return {
    id: sessionId,
    getVariable: (identifier) =>
      core.read(sessionId, (view) => toToolVariable(core.ops.find(view, identifier))),
    listVariables: (pattern = "*") =>
      core.read(sessionId, (view) => {
        const matches = compileGlob(pattern);
        const out: ToolVariable[] = [];
        for (const record of view.variables())
          if (matches(record.name)) out.push(toToolVariable(record));
        // The order ListVariables uses: names are ASCII, so UTF-16 order is
        // code point order, and unlike localeCompare it is the same everywhere.
        return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      }),
    setVariable: (identifier, value, options = {}) =>
      write(identifier, () => value, options.expectedVersion),
    updateVariable: (identifier, fn) => write(identifier, (current) => fn(toToolVariable(current))),
    getData: (key) => core.read(sessionId, (view) => view.data(key)),
    maxDataBytes: core.settings.limits.maxValueBytes,
    updateData: (key, fn) =>
      core.transact(sessionId, (tx) => {
        const next = fn(tx.data(key));
        core.ops.setData(tx, key, next);
        return next;
      }),
  };
}

/** A stored variable as plain JSON for tools. */
export function toToolVariable(record: VariableRecord): ToolVariable {
  return {
    id: record.id,
    name: record.name,
    type: record.type,
    value: record.value as JsonValue,
    version: record.version,
  };
}
