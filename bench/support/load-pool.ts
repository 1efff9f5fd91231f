/**
 * A pool of load-generator processes (`workers/load-calls.ts`) driven
 * together: a run's concurrency is split across the pool, they all measure
 * the same window, and the server's CPU time over the run is read so that a
 * figure can be checked against "was the server the bottleneck?".
 */

import type { LoadReport, LoadRun } from "../workers/load-calls.ts";
import { type ChildWorker, startChild } from "./child-processes.ts";
import type { ServeCpu } from "./process-readings.ts";
import { median } from "./stats.ts";

/** One run's figures, summed over the pool. */
export interface Measured {
  /** Calls per second (sum over the pool's processes). */
  readonly rate: number;
  readonly errors: number;
  /** Median over the pool's processes of their per-call latency percentiles. */
  readonly p50Micros: number;
  readonly p99Micros: number;
  /** CPU share of the busiest load process (near 1: the client may be the limit). */
  readonly clientCpuShare: number;
  /** Server CPU time per completed call (when a server was given). */
  readonly serverCpuMicrosPerCall?: number;
  /** Server CPU time ÷ wall time over the run: 1 is one core fully busy. */
  readonly serverCpuShare?: number;
}

/** Something whose CPU use can be read: the server process. */
export interface CpuProbe {
  request<T>(body: object): Promise<T>;
}

/** Load generators; see {@link startLoadPool}. */
export interface LoadPool {
  readonly size: number;
  /**
   * Runs `spec` with `concurrency` calls in flight in total, spread over
   * `min(size, concurrency)` processes.
   */
  measure(
    spec: Omit<LoadRun, "type" | "concurrency">,
    concurrency: number,
    server?: CpuProbe,
  ): Promise<Measured>;
  close(): Promise<void>;
}

/** Forks `size` load generators. */
export async function startLoadPool(size: number): Promise<LoadPool> {
  const file = new URL("../workers/load-calls.ts", import.meta.url);
  const workers: ChildWorker[] = await Promise.all(
    Array.from({ length: size }, () => startChild(file)),
  );

  return {
    size,
    async measure(spec, concurrency, server) {
      const used = workers.slice(0, Math.min(workers.length, concurrency));
      const shares = used.map(
        (_, i) => Math.floor(concurrency / used.length) + (i < concurrency % used.length ? 1 : 0),
      );
      const cpuBefore =
        server === undefined ? undefined : await server.request<ServeCpu>({ type: "cpu" });
      const wallStart = performance.now();
      const reports = await Promise.all(
        used.map((w, i) => w.request<LoadReport>({ ...spec, type: "run", concurrency: shares[i] })),
      );
      const wallMicros = (performance.now() - wallStart) * 1000;
      const cpuAfter =
        server === undefined ? undefined : await server.request<ServeCpu>({ type: "cpu" });
      const totalCalls = reports.reduce((sum, r) => sum + r.totalCalls, 0);
      const serverCpu =
        cpuBefore === undefined || cpuAfter === undefined
          ? undefined
          : cpuAfter.cpuMicros - cpuBefore.cpuMicros;
      return {
        rate: reports.reduce((sum, r) => sum + r.calls / r.seconds, 0),
        errors: reports.reduce((sum, r) => sum + r.errors, 0),
        p50Micros: median(reports.map((r) => r.p50Micros)),
        p99Micros: median(reports.map((r) => r.p99Micros)),
        clientCpuShare: Math.max(...reports.map((r) => r.cpuShare)),
        ...(serverCpu === undefined
          ? {}
          : {
              serverCpuMicrosPerCall: serverCpu / Math.max(1, totalCalls),
              serverCpuShare: serverCpu / wallMicros,
            }),
      };
    },
    async close() {
      await Promise.all(workers.map((w) => w.close()));
    },
  };
}

/**
 * Measures each variant once per round, `rounds` times, rotating which goes
 * first so that drifts of a noisy machine (thermal, neighbours, GC) hit
 * every variant alike. Returns the samples per variant in round order.
 */
export async function sideBySide<K extends string>(
  rounds: number,
  variants: Readonly<Record<K, () => Promise<Measured>>>,
): Promise<Record<K, Measured[]>> {
  const keys = Object.keys(variants) as K[];
  const samples = Object.fromEntries(keys.map((k) => [k, [] as Measured[]])) as Record<
    K,
    Measured[]
  >;
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < keys.length; i++) {
      const key = keys[(i + r) % keys.length] as K;
      samples[key].push(await variants[key]());
    }
  }
  return samples;
}

/** Per-round ratios a[i] ÷ b[i] of paired samples. */
export function pairedRatios(a: readonly Measured[], b: readonly Measured[], scale = 1): number[] {
  return a.map((m, i) => (m.rate * scale) / (b[i] as Measured).rate);
}
