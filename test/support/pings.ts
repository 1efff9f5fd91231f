import type { RunningBridge } from "./bridge.js";

/** What {@link pingsDuring} saw. */
export interface PingsDuring<T> {
  readonly outcome: PromiseSettledResult<T>;
  /** The slowest Ping of the second client while the work ran. */
  readonly slowestPingMs: number;
  /** Pings answered meanwhile. */
  readonly pings: number;
  /** How long the work took. */
  readonly workMs: number;
}

/**
 * Runs `work` while a second client, on its own HTTP/2 connection, pings
 * back to back: how long the server kept everyone else waiting.
 */
export async function pingsDuring<T>(
  b: RunningBridge,
  work: () => Promise<T>,
): Promise<PingsDuring<T>> {
  const other = b.client("grpc");
  await other.ping({ message: "warm" });
  let done = false;
  let slowestPingMs = 0;
  let pings = 0;
  const pinger = (async () => {
    // One more ping after the work ends: the one in flight then saw all of it.
    for (let last = false; !last; ) {
      last = done;
      const t0 = performance.now();
      await other.ping({ message: "still there?" });
      slowestPingMs = Math.max(slowestPingMs, performance.now() - t0);
      pings++;
    }
  })();
  const t0 = performance.now();
  const [outcome] = await Promise.allSettled([work()]);
  const workMs = performance.now() - t0;
  done = true;
  await pinger;
  if (outcome === undefined) throw new Error("no outcome");
  return { outcome, slowestPingMs, pings, workMs };
}
