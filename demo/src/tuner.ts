import type { JsonValue, SessionContext } from "../../src/client/index.ts";
import {
  type Classifier,
  EVALUATE_TOOL,
  type EvaluationProgress,
  type EvaluationResult,
  PROGRAM_VARIABLES,
  type ProgramConfig,
  PYTHON_CLASSIFIER,
  toProgramConfig,
} from "../shared/program.ts";
import { RUNS_TOOL } from "../shared/tuning-runs.ts";
import { createSearchSpace } from "./search-space.ts";

/**
 * The browser-side optimizer. Under the optimization lock of every program
 * variable it scores the current configuration (the baseline), then for
 * each trial writes one candidate with ONE atomic batch call and has the
 * bridge's `spam_evaluate` tool train and score it on the dev split
 * (streaming progress). Whatever happens (finished, stopped, failed), it
 * leaves the session on the best configuration seen, which is the initial
 * one when nothing beat it, and then releases the lock.
 */

/** One scored trial. */
export interface Trial {
  readonly trial: number;
  readonly config: ProgramConfig;
  readonly result: EvaluationResult;
  /** Best dev F1 up to and including this trial (baseline included). */
  readonly bestSoFar: number;
  /** This trial set a new best. */
  readonly improved: boolean;
}

/** Where a run ended. */
export interface TuneOutcome {
  readonly initial: { readonly config: ProgramConfig; readonly result: EvaluationResult };
  readonly best: {
    readonly config: ProgramConfig;
    readonly result: EvaluationResult;
    /** 0: no trial beat the initial configuration. */
    readonly trial: number;
  };
  readonly trials: readonly Trial[];
  /** Trials that failed (the Python worker died under them, say); the run went on. */
  readonly failed: readonly { readonly trial: number; readonly message: string }[];
  /** Stopped by the user before the last trial. */
  readonly stopped: boolean;
  readonly planned: number;
}

/** A tuning run: its size, its identity, and what to tell the page. */
export interface TuneOptions {
  readonly trials: number;
  readonly seed: number;
  readonly optimizerId: string;
  /** The run's id in the session's run log. */
  readonly runId: string;
  /** The browser starting it (its other tabs may ask it to stop). */
  readonly owner: string;
  /** The classifier modules to try (the Python worker's only while it is registered). */
  readonly classifiers: readonly Classifier[];
  readonly signal: AbortSignal;
  readonly onBaseline?: (result: EvaluationResult) => void;
  /** A trial starts (its candidate is written). */
  readonly onTrialStart?: (trial: number, config: ProgramConfig) => void;
  readonly onTrial?: (trial: Trial) => void;
  /** A trial failed; the run goes on without its module. */
  readonly onTrialFailed?: (trial: number, config: ProgramConfig, message: string) => void;
  readonly onProgress?: (progress: EvaluationProgress, trial: number) => void;
  /** The lock is taken (true) or released (false). */
  readonly onLock?: (held: boolean) => void;
  /** The run is writing its final configuration. */
  readonly onFinishing?: (best: TuneOutcome["best"]) => void;
}

/**
 * Runs one tuning session; see the module comment for the guarantees. Every
 * score is recorded in the session's run log by the bridge as it is
 * computed; the run's start, signs of life and end go there too.
 */
export async function runTuning(ctx: SessionContext, options: TuneOptions): Promise<TuneOutcome> {
  const { optimizerId, signal, runId } = options;
  const space = createSearchSpace(options.seed, options.classifiers);
  const runs = (action: string, args: Record<string, JsonValue> = {}) =>
    ctx.callTool(RUNS_TOOL, { action, run_id: runId, optimizer_id: optimizerId, ...args });
  const recordAs = (trial: number) => ({ run_id: runId, optimizer_id: optimizerId, trial });
  const writeAsOptimizer = async (config: ProgramConfig, label: string) => {
    const batch = await ctx.setMany(
      { ...config },
      {
        atomic: true,
        metadata: { optimizer_id: optimizerId, trial: label },
      },
    );
    if (!batch.success) {
      throw new Error(
        `the bridge refused the ${label} configuration: ${Object.values(batch.errors).join("; ")}`,
      );
    }
    return batch;
  };

  let alive: ReturnType<typeof setInterval> | undefined;
  let started = false;
  let outcome: TuneOutcome | undefined;
  try {
    outcome = await ctx.withOptimizationLock(PROGRAM_VARIABLES, optimizerId, async () => {
      options.onLock?.(true);
      await runs("start", { owner: options.owner, planned: options.trials, seed: options.seed });
      started = true;
      // Signs of life, so other tabs can tell a slow trial from a closed tab.
      alive = setInterval(() => {
        runs("alive").catch(() => undefined); // the next one or the trial's record will do
      }, 4000);
      const current = await ctx.getMany(PROGRAM_VARIABLES, { bypassCache: true });
      const initialConfig = toProgramConfig(
        Object.fromEntries(PROGRAM_VARIABLES.map((n) => [n, current[n]?.value])),
      );
      // An evaluation in flight is not cancelled by Stop: the bridge records
      // its score in the run log, so the run ends after it, and the log,
      // the chart and the configuration left in the session agree.
      const baseline = await evaluate(ctx, { record: recordAs(0) }, undefined, (p) =>
        options.onProgress?.(p, 0),
      );
      options.onBaseline?.(baseline);
      let best: TuneOutcome["best"] = { config: initialConfig, result: baseline, trial: 0 };
      const trials: Trial[] = [];
      const failed: { trial: number; message: string }[] = [];
      let stopped = false;
      let failure: unknown;
      try {
        for (let t = 1; t <= options.trials; t++) {
          if (signal.aborted) {
            stopped = true;
            break;
          }
          const candidate = space.propose(t, options.trials, best.config);
          options.onTrialStart?.(t, candidate);
          const batch = await writeAsOptimizer(candidate, String(t));
          let result: EvaluationResult;
          try {
            result = await evaluate(ctx, { record: recordAs(t) }, undefined, (p) =>
              options.onProgress?.(p, t),
            );
          } catch (error) {
            // The Python worker's module failed this trial (its worker died
            // or is restarting): the bridge marked the trial failed in the
            // run log, and the run goes on with the bridge's modules.
            if (signal.aborted || candidate.classifier !== PYTHON_CLASSIFIER) throw error;
            const message = error instanceof Error ? error.message : String(error);
            space.drop(PYTHON_CLASSIFIER);
            failed.push({ trial: t, message });
            options.onTrialFailed?.(t, candidate, message);
            continue;
          }
          for (const name of PROGRAM_VARIABLES) {
            const written = batch.variables[name]?.version;
            if (written !== undefined && result.versions[name] !== written) {
              throw new Error(
                `'${name}' changed during trial ${t} (wrote v${written}, evaluated v${result.versions[name]}): someone released the lock`,
              );
            }
          }
          const improved = result.metrics.f1 > best.result.metrics.f1;
          if (improved) best = { config: candidate, result, trial: t };
          const record: Trial = {
            trial: t,
            config: candidate,
            result,
            bestSoFar: best.result.metrics.f1,
            improved,
          };
          trials.push(record);
          options.onTrial?.(record);
        }
      } catch (error) {
        if (signal.aborted) stopped = true;
        else failure = error;
      }
      // Leave the session on the best configuration seen (the initial one if
      // nothing beat it), still as the lock holder, before releasing.
      options.onFinishing?.(best);
      await writeAsOptimizer(
        best.config,
        best.trial === 0 ? "initial" : `best of ${trials.length}`,
      );
      if (failure !== undefined) throw failure;
      return {
        initial: { config: initialConfig, result: baseline },
        best,
        trials,
        failed,
        stopped,
        planned: options.trials,
      };
    });
  } catch (error) {
    if (started) {
      const stoppedEarly = signal.aborted;
      await runs("finish", {
        status: stoppedEarly ? "stopped" : "failed",
        message: stoppedEarly
          ? "Stopped before the first score: nothing was changed and the lock is released."
          : `Tuning failed: ${error instanceof Error ? error.message : String(error)}`.slice(
              0,
              400,
            ),
      }).catch(() => undefined); // the failure itself is what the caller reports
    }
    throw error;
  } finally {
    clearInterval(alive);
    options.onLock?.(false);
  }
  await runs("finish", {
    status: outcome.stopped ? "stopped" : "done",
    message: describeEnd(outcome),
  });
  return outcome;
}

/** How a run ended, in words (the run log keeps it for every tab). */
export function describeEnd(outcome: TuneOutcome): string {
  const { best, trials, stopped } = outcome;
  const kept =
    best.trial === 0
      ? "No trial beat the initial configuration, so it was restored"
      : `The session now holds the best configuration (trial ${best.trial}, dev F1 ${best.result.metrics.f1.toFixed(4)})`;
  const failures =
    outcome.failed.length === 0
      ? ""
      : ` ${outcome.failed.length === 1 ? "Trial" : "Trials"} ${outcome.failed.map((f) => f.trial).join(", ")} failed (${outcome.failed[0]?.message.slice(0, 120)}); the run went on without ${PYTHON_CLASSIFIER}.`;
  // The run log keeps at most 400 characters of it.
  return (
    stopped
      ? `Stopped after ${trials.length} of ${outcome.planned} trials.${failures} ${kept}; the lock is released.`
      : `Finished ${trials.length} trials.${failures} ${kept}; the lock is released.`
  ).slice(0, 400);
}

/**
 * Scores a configuration on a split with the bridge tool: the session's
 * current variables when `config` is omitted.
 */
export async function evaluate(
  ctx: SessionContext,
  args: {
    split?: "dev" | "test";
    config?: ProgramConfig;
    /** Have the bridge record the dev score in the run log (see spam_evaluate's parameters). */
    record?: Record<string, JsonValue>;
  },
  signal?: AbortSignal,
  onProgress?: (p: EvaluationProgress) => void,
): Promise<EvaluationResult> {
  const toolArgs: Record<string, JsonValue> = { split: args.split ?? "dev" };
  if (args.config !== undefined) toolArgs.config = args.config as unknown as JsonValue;
  Object.assign(toolArgs, args.record);
  let result: EvaluationResult | undefined;
  for await (const chunk of ctx.streamTool(
    EVALUATE_TOOL,
    toolArgs,
    signal === undefined ? {} : { signal },
  )) {
    if (isChunk(chunk, "progress")) onProgress?.(chunk as unknown as EvaluationProgress);
    else if (isChunk(chunk, "result")) result = chunk as unknown as EvaluationResult;
  }
  if (result === undefined) throw new Error("the evaluation tool ended without a result");
  return result;
}

function isChunk(chunk: JsonValue, kind: string): boolean {
  return (
    typeof chunk === "object" && chunk !== null && !Array.isArray(chunk) && chunk.kind === kind
  );
}
