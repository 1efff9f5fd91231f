import { Code, ConnectError } from "@connectrpc/connect";
import { formatBytes } from "../common/message-text.js";
import { redactSessionId } from "../observability/logger.js";

/**
 * The errors about sessions, in one place: every store, the service and the
 * watch streams say them alike, so callers (and the client library, which
 * tells expiry from other failures) see one text per condition. A session id
 * is a bearer secret: messages show only its beginning, since they end up in
 * logs and screenshots.
 */

/** NOT_FOUND for an unknown session (never created, expired or cleaned up). */
export function sessionNotFound(sessionId: string): ConnectError {
  return new ConnectError(
    `Session not found: ${redactSessionId(sessionId)} (it may have expired; call InitializeSession)`,
    Code.NotFound,
  );
}

/** The status a watch stream ends with when its session goes away. */
export function sessionEnded(how: "expired" | "cleaned up"): ConnectError {
  return new ConnectError(`session ended: ${how}`, Code.NotFound);
}

/** NOT_FOUND for session-scoped tools whose session ended while they were being registered. */
export function sessionEndedBeforeTools(): ConnectError {
  return new ConnectError("the session ended before its tools were registered", Code.NotFound);
}

/** INVALID_ARGUMENT for a call that names no session. */
export function sessionIdRequired(): ConnectError {
  return new ConnectError("session_id is required", Code.InvalidArgument);
}

/**
 * NOT_FOUND for a public caller reopening an unknown id on a server that
 * mints ids: it may reopen a session, never create one under its own id.
 */
export function sessionIdsMinted(): ConnectError {
  return new ConnectError(
    "this server mints session ids: leave session_id empty to create a session (an id you were given may have expired)",
    Code.NotFound,
  );
}

/** RESOURCE_EXHAUSTED for a client at its session quota (SessionInit.quota). */
export function clientQuotaReached(held: number, max: number): ConnectError {
  return new ConnectError(
    `this client holds ${held} sessions; the limit is ${max} (--max-sessions-per-client): clean up sessions it no longer uses (CleanupSession) or let them expire`,
    Code.ResourceExhausted,
  );
}

/** RESOURCE_EXHAUSTED for a store holding `maxSessions` live sessions. */
export function sessionLimitReached(maxSessions: number): ConnectError {
  return new ConnectError(
    `session limit reached: ${maxSessions} sessions are live; clean up unused sessions or raise maxSessions`,
    Code.ResourceExhausted,
  );
}

/**
 * RESOURCE_EXHAUSTED for a change that would take the sessions a client
 * created past the bytes they may hold together (SessionInit.quota.maxBytes).
 */
export function clientBytesReached(held: number, adding: number, max: number): ConnectError {
  return new ConnectError(
    `this client's sessions hold ${formatBytes(held)}${adding > 0 ? ` and this call would add ${formatBytes(adding)}` : ""}; the limit is ${formatBytes(max)} (--max-bytes-per-client): delete values or sessions it no longer uses (CleanupSession) or let them expire`,
    Code.ResourceExhausted,
  );
}
