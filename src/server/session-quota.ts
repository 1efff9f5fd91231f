import { Code, ConnectError } from "@connectrpc/connect";

/**
 * Live sessions per public client, so one client cannot fill the session
 * table for everyone. A client is the peer address (or, behind a trusted
 * proxy, the address it forwarded for). The count is per process.
 */
export interface SessionQuota {
  /**
   * Reserves a place for a new session of `client`; returns the function
   * that settles it: with the session's id when it was created (the place
   * is then held until the session ends), without to give the place back.
   *
   * @throws ConnectError RESOURCE_EXHAUSTED when the client is at its limit.
   */
  reserve(client: string): (sessionId?: string) => void;
  /** Frees the place of an ended session. */
  release(sessionId: string): void;
  /** Sessions held by a client now. */
  held(client: string): number;
}

/** Creates a quota of `max` live sessions per client. */
export function createSessionQuota(max: number): SessionQuota {
  const perClient = new Map<string, number>();
  const owner = new Map<string, string>();
  const drop = (client: string) => {
    const n = (perClient.get(client) ?? 1) - 1;
    if (n <= 0) perClient.delete(client);
    else perClient.set(client, n);
  };
  return {
    reserve(client) {
      const n = perClient.get(client) ?? 0;
      if (n >= max) {
        throw new ConnectError(
          `this client holds ${n} sessions; the limit is ${max} (--max-sessions-per-client): clean up sessions it no longer uses (CleanupSession) or let them expire`,
          Code.ResourceExhausted,
        );
      }
      perClient.set(client, n + 1);
      let settled = false;
      return (sessionId) => {
        if (settled) return;
        settled = true;
        if (sessionId === undefined) drop(client);
        else owner.set(sessionId, client);
      };
    },
    release(sessionId) {
      const client = owner.get(sessionId);
      if (client === undefined) return;
      owner.delete(sessionId);
      drop(client);
    },
    held: (client) => perClient.get(client) ?? 0,
  };
}
