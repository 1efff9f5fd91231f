import { Code, ConnectError } from "@connectrpc/connect";

/** RESOURCE_EXHAUSTED for a client at its session quota (SessionInit.quota); every store says it alike. */
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
