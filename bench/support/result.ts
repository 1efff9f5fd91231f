/**
 * What every benchmark reports: one row of the table and one entry of
 * `bench/results.json`.
 */

/** One measured figure and its verdict. */
export interface BenchResult {
  /** `<benchmark>/<case>`, e.g. `server-throughput/grpc/c16/get`. */
  readonly name: string;
  /** The headline figure (for side-by-side comparisons: the A÷B ratio). */
  readonly value: number;
  readonly unit: string;
  /** The target as people read it, e.g. "≥ 0.8× echo" or "≤ 50 ms". */
  readonly target: string;
  /** true or false against the target; null when the figure is informational. */
  readonly pass: boolean | null;
  /**
   * For comparisons, A÷B (the same as `value`); for absolute targets the
   * measured value ÷ the limit (≤ 1 passes an upper limit).
   */
  readonly ratio: number | null;
  /** The "measured" column, e.g. "GetVariable 7.9k/s vs echo 9.6k/s". */
  readonly display: string;
  /** Raw figures behind the headline: per-round samples, medians, settings. */
  readonly details: Readonly<Record<string, unknown>>;
}

/** Context handed to every benchmark. */
export interface BenchContext {
  /** Writes a progress line (to stderr, so stdout stays the table). */
  log(message: string): void;
  /** Scale for durations and sizes: 1 for a real run, smaller for a quick smoke run. */
  readonly scale: number;
}

/** A benchmark module: `bench/<name>.ts` exports `run`. */
export interface Benchmark {
  run(ctx: BenchContext): Promise<BenchResult[]>;
}

/** Formats a rate like "12.3k/s". */
export function formatRate(perSecond: number, unit = "/s"): string {
  if (perSecond >= 1e6) return `${(perSecond / 1e6).toFixed(2)}M${unit}`;
  if (perSecond >= 1e4) return `${(perSecond / 1e3).toFixed(1)}k${unit}`;
  if (perSecond >= 1e3) return `${(perSecond / 1e3).toFixed(2)}k${unit}`;
  return `${perSecond.toFixed(0)}${unit}`;
}

/** Formats a byte count like "412 B", "3.4 KiB", "812 MiB". */
export function formatBytes(bytes: number): string {
  const abs = Math.abs(bytes);
  if (abs >= 2 ** 30) return `${(bytes / 2 ** 30).toFixed(2)} GiB`;
  if (abs >= 2 ** 20) return `${(bytes / 2 ** 20).toFixed(0)} MiB`;
  if (abs >= 2 ** 10) return `${(bytes / 2 ** 10).toFixed(1)} KiB`;
  return `${bytes.toFixed(0)} B`;
}
