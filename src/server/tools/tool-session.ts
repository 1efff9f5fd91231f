import type { JsonValue } from "../../values/index.js";
import type { BridgeCore } from "../rpc/bridge-core.js";
import { listMatching } from "../session/variable-batch.js";
import type { VariableRecord } from "../store/session-store.js";
import type { ToolSession, ToolVariable } from "./tool-definition.js";

/**
 * The session as a server-side tool sees it. Every write goes through the
 * same semantics as a client's SetVariable (validation, versions, history,
 * watchers); updates run inside one store transaction, so they are atomic.
 * Session data is held to the value limit and counts in the session budget.
 *
 * The tool's `fn` of updateVariable and updateData is the transaction's
 * callback: the store may run it more than once (SessionStore.transact).
 * What an update writes and resolves to is computed by the last run alone,
 * from that run's `current`, and travels out only as the callback's return
 * value, so the result is always what the write that happened decided.
 */
export function createToolSession(
  core: Pick<BridgeCore, "ops" | "read" | "transact" | "settings">,
  sessionId: string,
): ToolSession {
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
      core.read(sessionId, (view) => listMatching(view, pattern).map(toToolVariable)),
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
