import type { VariableValue } from "../values/index.js";
import type { Emitter } from "./events.js";
import type { LocalCopy } from "./local-copy.js";
import type { PendingOverlay } from "./pending-writes.js";
import type { BoundVariables, VariableHandle, VariableSchema } from "./schema.js";
import type { SessionContextEvents } from "./session-events.js";
import type { SessionRpc } from "./session-rpc.js";
import type { VariableReads } from "./variable-reads.js";
import type { VariableSnapshot } from "./variable-snapshot.js";
import { declare, patternsReady, type VariableWrites } from "./variable-writes.js";
import { sentRepeatable } from "./write-outcome.js";

/** Typed handles on variables, one at a time or a whole schema at once. */
export interface VariableHandles {
  variable<V extends VariableValue = VariableValue>(
    name: string,
    ttlMs?: number,
  ): VariableHandle<V>;
  /** Declares variables once and returns typed handles; one round trip. */
  bind<S extends VariableSchema>(schema: S): Promise<BoundVariables<S>>;
}

/** What handles read and write through. */
export interface HandleParts {
  readonly reads: VariableReads;
  readonly writes: VariableWrites;
  readonly events: Emitter<SessionContextEvents>;
  readonly binaryThreshold: number;
  readonly overlay: PendingOverlay;
}

/** Creates the handle factory of a context. */
export function createVariableHandles(
  rpc: SessionRpc,
  local: LocalCopy,
  parts: HandleParts,
): VariableHandles {
  const { cache } = local;
  const { reads, writes, events } = parts;

  const variable = <V extends VariableValue>(name: string, ttlMs?: number): VariableHandle<V> => {
    if (ttlMs !== undefined) cache.setTtl(name, ttlMs);
    return {
      name,
      get: (read) => reads.getValue(name, read) as Promise<V>,
      snapshot: async (read) => (await reads.getVariable(name, read)) as VariableSnapshot<V>,
      set: async (value, write) => (await writes.set(name, value, write)) as VariableSnapshot<V>,
      peek: (options) =>
        ((options?.pending === true ? parts.overlay.snapshot(name) : undefined) ??
          cache.peek(name)?.variable.snapshot) as VariableSnapshot<V> | undefined,
      subscribe: (listener) =>
        events.on("change", (event) => {
          if (event.name === name) listener(event.snapshot as VariableSnapshot<V> | undefined);
        }),
    };
  };

  return {
    variable,

    // Declares every variable in one RegisterVariables call that keeps the
    // ones already there (ifAbsent): binding never resets a shared value.
    async bind(schema) {
      const names = Object.keys(schema);
      await patternsReady(Object.values(schema));
      const declarations = names.map((name) => {
        const d = schema[name] as VariableSchema[string];
        return declare(name, d.type, d.default, d, parts.binaryThreshold);
      });
      // Declaring what already exists keeps it: a bind whose outcome is
      // unknown can be sent again.
      const res = await sentRepeatable(
        () => `bind of ${names.map((n) => `'${n}'`).join(", ")}`,
        rpc.call,
        (options) =>
          rpc.client.registerVariables(
            { sessionId: rpc.sessionId, ifAbsent: true, variables: declarations },
            options,
          ),
      );
      for (const message of res.variables) local.accept(message, "server");
      const bound: Record<string, VariableHandle> = {};
      for (const name of names) bound[name] = variable(name, schema[name]?.ttlMs);
      return bound as BoundVariables<typeof schema>;
    },
  };
}
