/**
 * Fills a server's store without RPCs, for the benchmarks that need 100k
 * sessions (an in-process RPC costs ~0.5 ms here, too slow for that many).
 * It does what InitializeSession with initial variables does: the store's
 * `createSession` with the server's own variable semantics (`register`:
 * validation, normalization, version 0) inside the creating transaction,
 * then builds each variable's wire message, as InitializeSession's
 * response does.
 */
import type { Any } from "@bufbuild/protobuf/wkt";
import type { Limits, SessionStore } from "unified-session-bridge/server";
import { encodeValue, type VariableType, type VariableValue } from "unified-session-bridge/values";
import { createVariableOps, toVariableMessage } from "./internals.ts";

/** One variable to declare in every session. */
export interface Declaration {
  readonly name: string;
  readonly type: VariableType;
  /** The value for session number `i`. */
  value(i: number): VariableValue;
}

/** A realistic session: ten LLM-call settings of the kinds the bridge carries. */
export const tenSettings: readonly Declaration[] = [
  { name: "temperature", type: "float", value: () => 0.7 },
  { name: "top_p", type: "float", value: () => 0.9 },
  { name: "frequency_penalty", type: "float", value: () => 0 },
  { name: "presence_penalty", type: "float", value: () => 0.1 },
  { name: "max_tokens", type: "integer", value: () => 256 },
  { name: "seed", type: "integer", value: (i) => i },
  { name: "model", type: "string", value: () => "gpt-4o-mini-2024-07-18" },
  {
    name: "system_prompt",
    type: "string",
    value: (i) => `You are assistant number ${i}. Be brief.`,
  },
  { name: "stream", type: "boolean", value: () => true },
  { name: "stop", type: "string", value: () => "\n\n" },
];

/** Creates `count` sessions `${prefix}${i}`, each with `declarations`. */
export async function populateSessions(options: {
  readonly store: SessionStore;
  readonly limits: Limits;
  readonly now?: () => number;
  readonly prefix: string;
  readonly count: number;
  readonly declarations: readonly Declaration[];
  readonly ttlMs?: number;
}): Promise<void> {
  const { store, limits, declarations } = options;
  const ops = createVariableOps(limits, options.now);
  const empty = new Uint8Array(0);
  for (let i = 0; i < options.count; i++) {
    // Encoded per session, as each client request would carry its own bytes.
    const anys: Any[] = declarations.map((d) => encodeValue(d.type, d.value(i)).any);
    const created: ReturnType<typeof ops.register>[] = [];
    await store.createSession(
      {
        id: `${options.prefix}${i}`,
        metadata: {},
        ttlMs: options.ttlMs ?? 30 * 60_000,
        allowedTools: [],
      },
      limits.maxSessions,
      (tx) => {
        declarations.forEach((d, j) => {
          created.push(
            ops.register(tx, {
              name: d.name,
              type: d.type,
              value: anys[j],
              binary: empty,
              constraintsJson: "",
              metadata: {},
            }),
          );
        });
      },
    );
    for (const record of created) toVariableMessage(record);
  }
}
