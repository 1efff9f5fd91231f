import { Code, ConnectError } from "@connectrpc/connect";
import type { ServerTimers } from "./common/timers.js";
import { createKeyedLogSampler } from "./observability/log-sampler.js";
import { type Logger, redactSessionId } from "./observability/logger.js";
import type { MetricsRegistry } from "./observability/metrics.js";
import { sessionEnded } from "./store/errors.js";
import type { SessionStore } from "./store/session-store.js";
import type { AuditTrail } from "./tools/audit-trail.js";
import type { SharedAuditTrail } from "./tools/shared-tools.js";
import type { ToolRegistry } from "./tools/tool-registry.js";
import type { WatchHub } from "./watch/watch-hub.js";

/**
 * What a bridge server does with the events of its parts: the store's
 * (changes fan out to watch streams, ended sessions end their streams and
 * tools) and the audit trail's (metrics, logs, the trail shared by replicas).
 */

/** Follows the store's events; returns the unsubscribe function. */
export function followStore(
  store: SessionStore,
  parts: {
    readonly hub: WatchHub;
    readonly tools: ToolRegistry;
    readonly metrics: MetricsRegistry;
    readonly logger: Logger;
  },
): () => void {
  const { hub, tools, metrics, logger } = parts;
  const sessionsEnded = metrics.counter(
    "bridge_sessions_ended_total",
    "Sessions ended, by reason (cleanup or expired).",
    ["reason"],
  );
  return store.subscribe((event) => {
    if (event.type === "change") {
      hub.onStoreEvent(event);
      return;
    }
    if (event.type === "resync") {
      // Never a silent gap: clients reconnect and resynchronize.
      const error = new ConnectError(`${event.reason}; resynchronize`, Code.Unavailable);
      if (event.sessionId === undefined) {
        logger.warn("watch streams ended to resynchronize", { reason: event.reason });
        hub.endAll(error);
      } else {
        logger.warn("a session's watch streams ended to resynchronize", {
          session: redactSessionId(event.sessionId),
          reason: event.reason,
        });
        hub.endSession(event.sessionId, () => error);
      }
      return;
    }
    // Expiry (or a cleanup on another node): end streams, drop its tools.
    // This runs for every one of a mass expiry, so it stays cheap: the
    // error is only built for sessions with streams, and expiries are
    // logged at debug level only (the metrics count every end).
    tools.dropSession(event.sessionId);
    hub.endSession(event.sessionId, () =>
      sessionEnded(event.reason === "expired" ? "expired" : "cleaned up"),
    );
    sessionsEnded.inc({ reason: event.reason });
    const level = event.reason === "cleanup" ? "info" : "debug";
    if (logger.isLevelEnabled(level)) {
      logger[level]("session ended", {
        session: redactSessionId(event.sessionId),
        reason: event.reason,
      });
    }
  });
}

/** Counts, logs and (with a shared trail) shares every audit entry. */
export function reportAudit(
  audit: AuditTrail,
  parts: {
    readonly metrics: MetricsRegistry;
    readonly logger: Logger;
    readonly shared: SharedAuditTrail | undefined;
    /** Times the log samplers' windows. */
    readonly timers: ServerTimers;
  },
): void {
  const { metrics, logger, shared, timers } = parts;
  const executions = metrics.counter(
    "bridge_tool_executions_total",
    'Tool executions by tool and outcome; calls of unregistered names count under tool="(unregistered)".',
    ["tool", "outcome"],
  );
  const registrations = metrics.counter(
    "bridge_tool_registrations_total",
    "Tool registrations and removals, by action and outcome.",
    ["action", "outcome"],
  );
  // With a shared store, every entry also goes to the trail all replicas read.
  if (shared !== undefined) {
    // (Not each replica's start-up registrations of its local tools.)
    audit.subscribe((entry) => {
      if (entry.action === "execute" || entry.target !== "local") shared.append(entry);
    });
  }
  // Any public client can fail calls (an unknown tool, a denied one, a
  // registration without the token) as fast as it can send them: those
  // lines are sampled per outcome, so 30,000 failures write a few lines
  // (the metrics and the audit trail still count each). Successful
  // executions and registrations stay one line each: they are the audit log.
  const refusedRegistrations = createKeyedLogSampler(logger, {
    level: "info",
    msg: "tool registered",
    timers,
  });
  const failedExecutions = createKeyedLogSampler(logger, {
    level: "info",
    msg: "tool executed",
    timers,
  });
  audit.subscribe((entry) => {
    const session = entry.sessionId === "" ? "(global)" : redactSessionId(entry.sessionId);
    if (entry.action !== "execute") {
      registrations.inc({ action: entry.action, outcome: entry.outcome });
      const fields = {
        event: `tool_${entry.action}`,
        session,
        tool: entry.tool,
        outcome: entry.outcome,
        target: entry.target,
        ...(entry.worker === undefined ? {} : { worker: entry.worker }),
        ...(entry.error === undefined ? {} : { error: entry.error }),
      };
      if (entry.action === "register" && entry.outcome !== "ok") {
        refusedRegistrations.report({ event: fields.event, outcome: entry.outcome }, fields);
      } else {
        const msg = entry.action === "register" ? "tool registered" : "tool removed";
        // A bridge's own tools, registered at every start, are no news;
        // what workers register and remove is.
        if (entry.target === "local" && entry.sessionId === "") logger.debug(msg, fields);
        else logger.info(msg, fields);
      }
      return;
    }
    // A label per name a caller makes up would let anyone grow /metrics
    // without bound: only names that were registered get their own series.
    executions.inc({
      tool: entry.outcome === "not_found" ? "(unregistered)" : entry.tool,
      outcome: entry.outcome,
    });
    if (entry.outcome !== "ok") {
      failedExecutions.report(
        { event: "tool_execution", outcome: entry.outcome },
        {
          session,
          tool: entry.tool,
          started_at: new Date(entry.startedAt).toISOString(),
          duration_ms: entry.durationMs,
          target: entry.target,
          ...(entry.error === undefined ? {} : { error: entry.error }),
          ...(entry.correlationId === undefined ? {} : { correlation_id: entry.correlationId }),
        },
      );
      return;
    }
    logger.info("tool executed", {
      event: "tool_execution",
      session,
      tool: entry.tool,
      started_at: new Date(entry.startedAt).toISOString(),
      duration_ms: entry.durationMs,
      outcome: entry.outcome,
      target: entry.target,
      ...(entry.error === undefined ? {} : { error: entry.error }),
      ...(entry.correlationId === undefined ? {} : { correlation_id: entry.correlationId }),
    });
  });
}
