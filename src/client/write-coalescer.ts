import type { Any } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Variable } from "../gen/snakepit/bridge/bridge_pb.js";
import { OutcomeUnknownError } from "./write-outcome.js";

/** One write waiting to be sent. */
export interface QueuedWrite {
  readonly identifier: string;
  /** Writes with the same key are the same variable (id when known). */
  readonly variableKey: string;
  readonly any: Any;
  readonly binary: Uint8Array | undefined;
  readonly metadata: Readonly<Record<string, string>>;
}

/**
 * What a call answered for one write: the stored variable (undefined from a
 * server that does not return it), or the write's own error.
 */
export type WriteOutcome =
  | { readonly variable: Variable | undefined }
  | { readonly error: ConnectError };

/** How the coalescer reaches the server. */
export interface WriteSender {
  /** One write: SetVariable. */
  one(write: QueuedWrite): Promise<Variable | undefined>;
  /** Several writes to distinct variables, same metadata: one SetVariables. */
  many(writes: readonly QueuedWrite[]): Promise<Map<QueuedWrite, WriteOutcome>>;
}

/**
 * Group commit for plain writes. While one call is in flight, writes that
 * arrive wait, and go out together in the next call: many tasks writing at
 * once cost a few round trips instead of one each, and a lone writer still
 * sends its write at once, in its own SetVariable. Writes to one variable
 * stay in order (a second one waits for the next call), and only writes
 * with the same metadata share a call.
 */
export function createWriteCoalescer(
  sender: WriteSender,
): (write: QueuedWrite) => Promise<Variable | undefined> {
  type Pending = {
    write: QueuedWrite;
    resolve(v: Variable | undefined): void;
    reject(e: unknown): void;
  };
  let queue: Pending[] = [];
  let flying = false;

  const settle = (p: Pending, outcome: WriteOutcome | undefined) => {
    if (outcome === undefined) {
      // The call went through, but its reply does not say whether this
      // write was applied.
      const silent = new ConnectError(
        `no answer for '${p.write.identifier}' in the batch`,
        Code.Internal,
      );
      p.reject(
        new OutcomeUnknownError(
          `set '${p.write.identifier}': the outcome is unknown (the server's reply does not mention it); read it again to learn whether it was applied`,
          Code.Unknown,
          silent,
        ),
      );
    } else if ("error" in outcome) p.reject(outcome.error);
    else p.resolve(outcome.variable);
  };

  /** Takes the next call's writes off the queue. */
  const nextGroup = (): Pending[] => {
    const first = queue[0];
    if (first === undefined) return [];
    const metadataKey = JSON.stringify(first.write.metadata);
    const group: Pending[] = [];
    const rest: Pending[] = [];
    const variables = new Set<string>();
    for (const p of queue) {
      const fits =
        !variables.has(p.write.variableKey) && JSON.stringify(p.write.metadata) === metadataKey;
      if (fits) {
        group.push(p);
        variables.add(p.write.variableKey);
      } else rest.push(p);
    }
    queue = rest;
    return group;
  };

  const drain = async (): Promise<void> => {
    flying = true;
    try {
      for (let group = nextGroup(); group.length > 0; group = nextGroup()) {
        const only = group.length === 1 ? group[0] : undefined;
        if (only !== undefined) {
          await sender.one(only.write).then(only.resolve, only.reject);
          continue;
        }
        try {
          const outcomes = await sender.many(group.map((p) => p.write));
          for (const p of group) settle(p, outcomes.get(p.write));
        } catch (error) {
          for (const p of group) p.reject(error);
        }
      }
    } finally {
      flying = false;
    }
  };

  return (write) =>
    new Promise<Variable | undefined>((resolve, reject) => {
      queue.push({ write, resolve, reject });
      if (!flying) void drain();
    });
}
