import type { RunRecord } from "../shared/tuning-runs.ts";

/**
 * The time a running run has left, as the Tune card shows it: counted from
 * the run's own trials, and moving smoothly, so that one slow trial (a new
 * featurization, the Python module) turns the figure up instead of making
 * it jump, and a known initial score does not pass for a finished trial.
 */
export interface RunEstimate {
  /**
   * Milliseconds left of `run` at `now` (the page's clock, compared with
   * the bridge's recording times), or undefined until one of its trials has
   * finished ("estimating…"). Call about once a second; a new run starts over.
   */
  next(run: RunRecord, now: number): number | undefined;
}

/** Time constant with which the shown figure follows a new one. */
const EASE_MS = 4000;
/** Largest rise of the shown figure, per second: a share of it (or 1 s). */
const MAX_RISE_PER_S = 0.15;
/** A longer pause between redraws (a busy or hidden tab) counts as this. */
const MAX_STEP_MS = 2000;

export function createRunEstimate(): RunEstimate {
  let shown: { runId: string; leftMs: number; at: number } | undefined;
  return {
    next(run, now) {
      const target = estimateLeft(run, now);
      if (target === undefined) {
        shown = undefined;
        return undefined;
      }
      if (shown?.runId !== run.id) {
        shown = { runId: run.id, leftMs: target, at: now };
        return target;
      }
      const dt = Math.min(MAX_STEP_MS, Math.max(0, now - shown.at));
      const counted = Math.max(0, shown.leftMs - dt);
      const eased = counted + (target - counted) * (1 - Math.exp(-dt / EASE_MS));
      const leftMs = Math.min(
        eased,
        counted + (Math.max(1000, MAX_RISE_PER_S * counted) * dt) / 1000,
      );
      shown = { runId: run.id, leftMs, at: now };
      return leftMs;
    },
  };
}

/**
 * Time left of a running run, from its own trials only: the mean time
 * between its recorded trials (starting at its initial score, which may
 * have been known already and so says nothing about a trial) times the
 * trials left, less the time the current trial has taken. Once the current
 * trial takes longer than that mean, it counts as if it ended now, so the
 * figure grows while it runs instead of jumping when it ends. Undefined
 * until one trial of the run has finished.
 */
export function estimateLeft(run: RunRecord, now: number): number | undefined {
  const trials = run.results.length;
  const from = run.initial?.at;
  const last = run.results[trials - 1]?.at;
  if (trials === 0 || from === undefined || last === undefined) return undefined;
  const left = run.planned - trials;
  if (left <= 0) return 0;
  const spent = Math.max(0, last - from);
  const current = Math.max(0, now - last);
  const mean = spent / trials;
  if (current <= mean) return mean * left - current;
  return ((spent + current) / (trials + 1)) * (left - 1);
}
