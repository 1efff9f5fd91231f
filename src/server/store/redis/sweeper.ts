/**
 * Expiry: every replica sweeps the deployment's indexes of sessions by
 * expiry time (one, or one per group of sessions on a Redis Cluster), and the end script ends each due session once, whoever
 * wins.
 */
import type { Logger } from "../../observability/logger.js";
import type { RedisConnection } from "./connection.js";

/** Options of {@link startSweeper}. */
export interface SweeperOptions {
  readonly connection: RedisConnection;
  /** The expiry indexes (sorted sets of session ids by expiry time), one per group of sessions. */
  readonly expiryKeys: readonly string[];
  /** How often to sweep; 0 disables it. */
  readonly intervalMs: number;
  readonly now: () => number;
  /** Ends a session if it is due by `dueBy`. */
  readonly end: (sessionId: string, dueBy: number) => Promise<unknown>;
  readonly logger?: Logger | undefined;
}

/** Starts sweeping; returns the function that stops it. */
export function startSweeper(options: SweeperOptions): () => void {
  const { connection, logger } = options;
  /** The sweep under way: one at a time. */
  let sweeping: Promise<void> | undefined;
  const sweep = async () => {
    try {
      const t = options.now();
      const due = await Promise.all(
        options.expiryKeys.map((key) =>
          connection.commands.zrangebyscore(key, "-inf", String(t), "LIMIT", 0, 256),
        ),
      );
      for (const sessionId of due.flat()) await options.end(sessionId, t);
    } catch (error) {
      logger?.debug("expiry sweep failed", {
        error: error instanceof Error ? error.message : String(error),
      });
    }
  };
  if (options.intervalMs <= 0) return () => {};
  const { timers } = connection;
  const timer = timers.setInterval(() => {
    if (sweeping !== undefined || connection.closing) return;
    sweeping = sweep().finally(() => {
      sweeping = undefined;
    });
  }, options.intervalMs);
  timer.unref();
  return () => timers.clearInterval(timer);
}
