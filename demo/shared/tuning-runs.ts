/**
 * Tuning runs as session state. The session's `tuning_runs` variable holds
 * the recent runs (each trial's configuration, dev scores, duration, who ran
 * it and where) and the configurations people evaluated by hand. The bridge
 * changes it only through {@link applyRunChange}, inside one atomic update,
 * so every tab on the session (watching the variable) draws the same chart
 * and a reload restores it. Runtime-neutral: the page reads it, the bridge
 * tools write it.
 */
import type { EvaluationResult, Metrics, ProgramConfig, Runtime } from "./program.ts";

/** The variable that holds the runs. */
export const RUNS_VARIABLE = "tuning_runs";
/** The bridge tool that starts, stops and finishes runs. */
export const RUNS_TOOL = "spam_runs";
/** Runs kept (oldest dropped first). */
export const MAX_RUNS = 5;
/** Trials one run may record. */
export const MAX_TRIALS = 100;
/** Hand evaluations kept (oldest dropped first). */
export const MAX_EVALUATIONS = 40;
/** A running run whose optimizer showed no sign of life for this long has lost its tab. */
export const RUN_GONE_AFTER_MS = 12_000;
/** Largest JSON of the log, in characters (the variable's max_length). */
export const MAX_LOG_CHARS = 400_000;

/** The declaration of the runs variable (bound by the page with the program's). */
export const runsDeclaration = {
  type: "string",
  default: "",
  constraints: { max_length: MAX_LOG_CHARS },
  metadata: {
    description:
      "The recent tuning runs and hand evaluations (JSON), written by the bridge's spam_runs and spam_evaluate tools.",
  },
} as const;

/** A configuration and how it scored on the dev split. */
export interface ScoredConfig {
  readonly config: ProgramConfig;
  readonly metrics: Metrics;
  /** Wall time of the evaluation on the bridge. */
  readonly ms: number;
  readonly cached: boolean;
  readonly runtime: Runtime;
  /** When the bridge recorded it (epoch ms, the bridge's clock). */
  readonly at: number;
}

/** One trial of a run. */
export interface TrialRecord extends ScoredConfig {
  readonly trial: number;
}

/**
 * A trial that could not be scored, e.g. because the Python worker died
 * under it: the run goes on without it.
 */
export interface FailedTrial {
  readonly trial: number;
  readonly config: ProgramConfig;
  /** Why, in words. */
  readonly message: string;
  readonly at: number;
}

/** How a run ended, or that it is still going. */
export type RunStatus = "running" | "done" | "stopped" | "failed" | "abandoned";

/** One tuning run. */
export interface RunRecord {
  readonly id: string;
  /** The optimizer (one tab) that holds the lock and runs the trials. */
  readonly optimizerId: string;
  /** The browser that started it: its tabs may stop it. */
  readonly owner: string;
  readonly planned: number;
  readonly seed: number;
  readonly startedAt: number;
  /** Last sign of life from the optimizer (the bridge's clock). */
  readonly updatedAt: number;
  readonly status: RunStatus;
  /** Another tab of the owner asked the optimizer to stop. */
  readonly stopRequested: boolean;
  readonly initial: ScoredConfig | undefined;
  readonly results: readonly TrialRecord[];
  /** Trials that failed (absent in logs written before trials could fail). */
  readonly failures?: readonly FailedTrial[];
  /** How it ended, in words. */
  readonly message: string | undefined;
  readonly finishedAt: number | undefined;
}

/** A configuration someone scored with "Evaluate" (or the page on load). */
export interface EvaluationRecord extends ScoredConfig {
  /** "you": Evaluate pressed; "load": the score shown when a page opened. */
  readonly kind: "you" | "load";
  /** The tab that asked. */
  readonly by: string;
}

/** What the variable holds. */
export interface RunLog {
  readonly runs: readonly RunRecord[];
  readonly evaluations: readonly EvaluationRecord[];
}

export const emptyLog: RunLog = { runs: [], evaluations: [] };

/** A change to the log; the bridge applies it atomically. */
export type RunChange =
  | {
      readonly kind: "start";
      readonly id: string;
      readonly optimizerId: string;
      readonly owner: string;
      readonly planned: number;
      readonly seed: number;
    }
  | { readonly kind: "alive"; readonly id: string; readonly optimizerId: string }
  | {
      readonly kind: "trial";
      readonly id: string;
      readonly optimizerId: string;
      /** 0: the initial configuration. */
      readonly trial: number;
      readonly result: ScoredConfig;
    }
  | {
      readonly kind: "trial_failed";
      readonly id: string;
      readonly optimizerId: string;
      /** 1 or more: the initial configuration cannot fail on its own. */
      readonly trial: number;
      readonly config: ProgramConfig;
      readonly message: string;
    }
  | {
      readonly kind: "finish";
      readonly id: string;
      readonly optimizerId: string;
      readonly status: Exclude<RunStatus, "running">;
      readonly message: string;
    }
  | { readonly kind: "stop"; readonly id: string; readonly owner: string }
  /** Anyone may mark a run whose optimizer went silent as abandoned. */
  | { readonly kind: "abandon"; readonly id: string }
  | { readonly kind: "evaluation"; readonly record: EvaluationRecord };

/** Reads the variable's value; anything unreadable is an empty log. */
export function parseRunLog(value: unknown): RunLog {
  if (typeof value !== "string" || value === "") return emptyLog;
  try {
    const parsed = JSON.parse(value) as Partial<RunLog> | null;
    if (parsed === null || !Array.isArray(parsed.runs) || !Array.isArray(parsed.evaluations)) {
      return emptyLog;
    }
    // Written by the tools, but any session member can write the variable:
    // keep only records with the fields the page draws from.
    const scored = (r: unknown): boolean => {
      const x = r as Partial<ScoredConfig> | null;
      return (
        typeof x === "object" &&
        x !== null &&
        typeof x.config === "object" &&
        x.config !== null &&
        typeof x.metrics?.f1 === "number"
      );
    };
    const runs = parsed.runs.filter((r: Partial<RunRecord> | null) => {
      return (
        typeof r === "object" &&
        r !== null &&
        typeof r.id === "string" &&
        typeof r.optimizerId === "string" &&
        typeof r.planned === "number" &&
        typeof r.startedAt === "number" &&
        typeof r.status === "string" &&
        Array.isArray(r.results) &&
        r.results.every(scored) &&
        (r.failures === undefined ||
          (Array.isArray(r.failures) &&
            r.failures.every(
              (f: Partial<FailedTrial> | null) =>
                typeof f === "object" &&
                f !== null &&
                typeof f.trial === "number" &&
                typeof f.message === "string" &&
                typeof f.config === "object" &&
                f.config !== null,
            ))) &&
        (r.initial === undefined || r.initial === null || scored(r.initial))
      );
    });
    return { runs, evaluations: parsed.evaluations.filter(scored) };
  } catch {
    // A value written by someone else than the tools: show nothing rather than fail.
    return emptyLog;
  }
}

/**
 * The log after one change, at `now` (the bridge's clock). Throws an Error
 * with a message a person can act on when the change does not fit.
 */
export function applyRunChange(log: RunLog, change: RunChange, now: number): RunLog {
  const find = (id: string) => {
    const run = log.runs.find((r) => r.id === id);
    if (run === undefined) throw new Error(`no tuning run '${id}' in this session`);
    return run;
  };
  const replace = (next: RunRecord): RunLog => ({
    ...log,
    runs: log.runs.map((r) => (r.id === next.id ? next : r)),
  });
  const mine = (id: string, optimizerId: string) => {
    const run = find(id);
    if (run.optimizerId !== optimizerId) {
      throw new Error(`tuning run '${id}' belongs to optimizer ${run.optimizerId}`);
    }
    if (run.status !== "running") throw new Error(`tuning run '${id}' has ended (${run.status})`);
    return run;
  };
  switch (change.kind) {
    case "start": {
      if (log.runs.some((r) => r.id === change.id)) {
        throw new Error(`tuning run '${change.id}' exists already`);
      }
      // The lock makes runs exclusive: one still marked running lost its tab.
      const runs = log.runs.map((r) =>
        r.status === "running"
          ? {
              ...r,
              status: "abandoned" as const,
              message: "Its tab went away before it finished.",
              finishedAt: now,
            }
          : r,
      );
      const run: RunRecord = {
        id: change.id,
        optimizerId: change.optimizerId,
        owner: change.owner,
        planned: change.planned,
        seed: change.seed,
        startedAt: now,
        updatedAt: now,
        status: "running",
        stopRequested: false,
        initial: undefined,
        results: [],
        message: undefined,
        finishedAt: undefined,
      };
      return { ...log, runs: [...runs, run].slice(-MAX_RUNS) };
    }
    case "alive":
      return replace({ ...mine(change.id, change.optimizerId), updatedAt: now });
    case "trial": {
      const run = mine(change.id, change.optimizerId);
      const result = { ...change.result, at: now };
      if (change.trial === 0) return replace({ ...run, initial: result, updatedAt: now });
      if (trialsDone(run) >= Math.min(run.planned, MAX_TRIALS)) {
        throw new Error(`tuning run '${run.id}' already has its ${run.planned} trials`);
      }
      return replace({
        ...run,
        results: [...run.results, { ...result, trial: change.trial }],
        updatedAt: now,
      });
    }
    case "trial_failed": {
      const run = mine(change.id, change.optimizerId);
      if (change.trial < 1) throw new Error("only trials 1 and up can fail on their own");
      if (trialsDone(run) >= Math.min(run.planned, MAX_TRIALS)) {
        throw new Error(`tuning run '${run.id}' already has its ${run.planned} trials`);
      }
      const failure: FailedTrial = {
        trial: change.trial,
        config: change.config,
        message: change.message.slice(0, 300),
        at: now,
      };
      return replace({ ...run, failures: [...(run.failures ?? []), failure], updatedAt: now });
    }
    case "finish":
      return replace({
        ...mine(change.id, change.optimizerId),
        status: change.status,
        message: change.message,
        finishedAt: now,
        updatedAt: now,
      });
    case "stop": {
      const run = find(change.id);
      if (run.owner !== change.owner) {
        throw new Error("only the browser that started a tuning run can stop it");
      }
      if (run.status !== "running") return log;
      return replace({ ...run, stopRequested: true });
    }
    case "abandon": {
      const run = find(change.id);
      if (run.status !== "running") return log;
      const silent = now - run.updatedAt;
      if (silent < RUN_GONE_AFTER_MS) {
        throw new Error(
          `tuning run '${run.id}' showed signs of life ${Math.round(silent / 1000)} s ago; it can be marked abandoned after ${RUN_GONE_AFTER_MS / 1000} s of silence`,
        );
      }
      return replace({
        ...run,
        status: "abandoned",
        message: `Abandoned after ${run.results.length} of ${run.planned} trials: its tab went away, and another tab released the lock.`,
        finishedAt: now,
      });
    }
    case "evaluation": {
      const last = log.evaluations[log.evaluations.length - 1];
      // A page opening on a configuration already scored adds nothing.
      if (
        change.record.kind === "load" &&
        last !== undefined &&
        JSON.stringify(last.config) === JSON.stringify(change.record.config)
      ) {
        return log;
      }
      return {
        ...log,
        evaluations: [...log.evaluations, { ...change.record, at: now }].slice(-MAX_EVALUATIONS),
      };
    }
  }
}

/** The scored part of an evaluation result, as the log keeps it. */
export function scoredFrom(result: EvaluationResult, at: number): ScoredConfig {
  return {
    config: result.config,
    metrics: result.metrics,
    ms: result.ms,
    cached: result.cached,
    runtime: result.runtime,
    at,
  };
}

/** The best trial of a run (0: none beat the initial configuration). */
export function bestOf(run: RunRecord): { trial: number; scored: ScoredConfig } | undefined {
  if (run.initial === undefined) return undefined;
  let best: { trial: number; scored: ScoredConfig } = { trial: 0, scored: run.initial };
  for (const r of run.results) {
    if (r.metrics.f1 > best.scored.metrics.f1) best = { trial: r.trial, scored: r };
  }
  return best;
}

/** Trials of a run that are over: scored or failed. */
export function trialsDone(run: RunRecord): number {
  return run.results.length + (run.failures?.length ?? 0);
}
