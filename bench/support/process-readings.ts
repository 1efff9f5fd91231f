/**
 * What a benchmark's server process reports of itself when the parent asks
 * (the `cpu` and `memory` requests of bench/workers/serve-bridge.ts and
 * raw-fanout.ts).
 */

/** Reply to `cpu`: this process's CPU time so far, in microseconds. */
export interface ServeCpu {
  readonly cpuMicros: number;
  readonly rssBytes: number;
}

/** This process's answer to `cpu`. */
export function cpuReading(): ServeCpu {
  const cpu = process.cpuUsage();
  return { cpuMicros: cpu.user + cpu.system, rssBytes: process.memoryUsage.rss() };
}

/** This process's answer to `memory`: its memory after a full collection (with --expose-gc). */
export function memoryReading(): NodeJS.MemoryUsage {
  (globalThis as { gc?: () => void }).gc?.();
  return process.memoryUsage();
}
