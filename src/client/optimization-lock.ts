import type { CallOptions } from "@connectrpc/connect";
import type { LocalCopy } from "./local-copy.js";
import type { SessionRpc } from "./session-rpc.js";
import { sentRepeatable, sentWrite, writeOutcome } from "./write-outcome.js";

/** The optimization lock: one optimizer at a time may write a locked variable. */
export interface OptimizationLock {
  startOptimization(
    identifier: string,
    optimizerId: string,
    config?: Readonly<Record<string, string>>,
  ): Promise<string>;
  stopOptimization(
    identifier: string,
    options?: { optimizerId?: string; force?: boolean },
  ): Promise<void>;
  /**
   * Locks the variables for `optimizerId`, runs `fn`, and always releases
   * them. Inside `fn`, write with `{ optimizerId }`.
   */
  withOptimizationLock<T>(
    identifiers: readonly string[],
    optimizerId: string,
    fn: () => Promise<T>,
  ): Promise<T>;
}

/** Creates the lock calls of a context. */
export function createOptimizationLock(rpc: SessionRpc, local: LocalCopy): OptimizationLock {
  const { client, sessionId, call } = rpc;
  const { cache } = local;

  const lock: OptimizationLock = {
    async startOptimization(identifier, optimizerId, config = {}) {
      // Taking a lock one already holds succeeds and changes nothing: a
      // start whose outcome is unknown can be sent again.
      const res = await sentRepeatable(
        () => `optimization lock of '${identifier}' for '${optimizerId}'`,
        call,
        (options) =>
          client.startOptimization(
            { sessionId, variableIdentifier: identifier, optimizerId, optimizerConfig: config },
            options,
          ),
      );
      // Lock state arrives by the watch; without it, read it fresh next time.
      if (!cache.live) cache.invalidate(identifier);
      return res.optimizationId;
    },

    async stopOptimization(identifier, stop = {}) {
      const what = () => `release of the optimization lock of '${identifier}'`;
      const send = (options: CallOptions) =>
        client.stopOptimization(
          {
            sessionId,
            variableIdentifier: identifier,
            optimizerId: stop.optimizerId ?? "",
            force: stop.force === true,
          },
          options,
        );
      // Releasing a released lock succeeds and changes nothing; but a
      // release naming no optimizer (or forced) would, resent, release a
      // lock someone else took in the meantime.
      if (stop.optimizerId !== undefined && stop.optimizerId !== "" && stop.force !== true)
        await sentRepeatable(what, call, send);
      else await sentWrite(what, send(call));
      if (!cache.live) cache.invalidate(identifier);
    },

    async withOptimizationLock(identifiers, optimizerId, fn) {
      // Lock everything at once (others see the whole set locked within one
      // round trip), then release whatever was taken, however fn ends.
      const attempts = await Promise.allSettled(
        identifiers.map((identifier) => lock.startOptimization(identifier, optimizerId)),
      );
      // A lock whose start has an unknown outcome may be held: release it too.
      const locked = identifiers.filter((_, i) => {
        const attempt = attempts[i];
        return (
          attempt?.status === "fulfilled" ||
          (attempt !== undefined && writeOutcome(attempt.reason) === "unknown")
        );
      });
      const refused = attempts.find((r): r is PromiseRejectedResult => r.status === "rejected");
      let outcome:
        | { ok: true; value: Awaited<ReturnType<typeof fn>> }
        | { ok: false; error: unknown };
      if (refused !== undefined) outcome = { ok: false, error: refused.reason };
      else {
        try {
          outcome = { ok: true, value: await fn() };
        } catch (error) {
          outcome = { ok: false, error };
        }
      }
      const released = await Promise.allSettled(
        locked.map((identifier) => lock.stopOptimization(identifier, { optimizerId })),
      );
      if (!outcome.ok) throw outcome.error;
      // A release failure matters more than the result: a stuck lock blocks
      // every other writer.
      const failed = released.find((r): r is PromiseRejectedResult => r.status === "rejected");
      if (failed !== undefined) throw failed.reason;
      return outcome.value;
    },
  };
  return lock;
}
