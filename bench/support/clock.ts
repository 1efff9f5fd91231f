/**
 * Clocks across benchmark processes: latencies measured as arrival time in
 * one process minus send time in another need the two clocks matched.
 */
import type { ChildWorker } from "./child-processes.ts";

/** Epoch milliseconds with sub-millisecond resolution. */
export const wallClock = (): number => performance.timeOrigin + performance.now();

/**
 * Child clock − ours, from the IPC round trip with the smallest delay among
 * a few (its midpoint is the best estimate of when the child read its
 * clock). The child answers `{ type: "clock" }` with its {@link wallClock}.
 */
export async function clockOffset(worker: ChildWorker): Promise<number> {
  let best = { rtt: Number.POSITIVE_INFINITY, offset: 0 };
  for (let i = 0; i < 10; i++) {
    const sent = wallClock();
    const theirs = await worker.request<number>({ type: "clock" });
    const back = wallClock();
    if (back - sent < best.rtt) best = { rtt: back - sent, offset: theirs - (sent + back) / 2 };
  }
  return best.offset;
}
