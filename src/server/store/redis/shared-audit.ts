/**
 * The audit trail of every replica, kept in Redis as a stream trimmed to
 * about `length` entries.
 */
import { createLogSampler } from "../../observability/log-sampler.js";
import type { Logger } from "../../observability/logger.js";
import type { AuditEntry } from "../../tools/audit-trail.js";
import type { SharedAuditTrail } from "../../tools/shared-tools.js";
import type { RedisConnection } from "./connection.js";

/** Options of {@link createSharedAudit}. */
export interface SharedAuditOptions {
  readonly connection: RedisConnection;
  /** The stream's key. */
  readonly key: string;
  /** Entries kept (approximately). */
  readonly length: number;
  readonly logger?: Logger | undefined;
}

/** Creates the shared audit trail of a Redis store. */
export function createSharedAudit(options: SharedAuditOptions): SharedAuditTrail {
  const { connection, key } = options;
  const length = String(options.length);
  // Every call a public client fails is audited: while Redis refuses
  // writes, one line each would let any client flood the log.
  const notStored =
    options.logger === undefined
      ? undefined
      : createLogSampler(options.logger, {
          level: "warn",
          msg: "audit entry not stored",
          timers: connection.timers,
        });
  return {
    append(entry) {
      connection.commands
        .xadd(key, "MAXLEN", "~", length, "*", "e", JSON.stringify(entry))
        .catch((error: unknown) => {
          notStored?.report({
            tool: entry.tool,
            error: error instanceof Error ? error.message : String(error),
          });
        });
    },
    async read(filter = {}) {
      const rows = await connection.call(() => connection.commands.xrange(key, "-", "+"));
      const out: AuditEntry[] = [];
      for (const [, fields] of rows) {
        const entry = JSON.parse(fields[1] ?? "null") as AuditEntry | null;
        if (entry === null) continue;
        if (filter.sessionId !== undefined && entry.sessionId !== filter.sessionId) continue;
        if (filter.tool !== undefined && entry.tool !== filter.tool) continue;
        if (filter.action !== undefined && entry.action !== filter.action) continue;
        out.push(entry);
      }
      return out;
    },
  };
}
