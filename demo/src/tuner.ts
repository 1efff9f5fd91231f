import type { JsonValue, SessionContext } from "../../src/client/index.ts";
import {
  EVALUATE_TOOL,
  type EvaluationProgress,
  type EvaluationResult,
  PROGRAM_VARIABLES,
  type ProgramConfig,
  toProgramConfig,
} from "../shared/program.ts";
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
  /** Stopped by the user before the last trial. */
  readonly stopped: boolean;
}

/** A tuning run: its size, its identity, and what to tell the page. */
export interface TuneOptions {
  readonly trials: number;
  readonly seed: number;
  readonly optimizerId: string;
  readonly signal: AbortSignal;
  readonly onBaseline?: (result: EvaluationResult) => void;
  /** A trial starts (its candidate is written). */
  readonly onTrialStart?: (trial: number, config: ProgramConfig) => void;
  readonly onTrial?: (trial: Trial) => void;
  readonly onProgress?: (progress: EvaluationProgress, trial: number) => void;
  /** The lock is taken (true) or released (false). */
  readonly onLock?: (held: boolean) => void;
  /** The run is writing its final configuration. */
  readonly onFinishing?: (best: TuneOutcome["best"]) => void;
}

/** Runs one tuning session; see the module comment for the guarantees. */
export async function runTuning(ctx: SessionContext, options: TuneOptions): Promise<TuneOutcome> {
  const { optimizerId, signal } = options;
  const space = createSearchSpace(options.seed);
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

  return ctx
    .withOptimizationLock(PROGRAM_VARIABLES, optimizerId, async () => {
      options.onLock?.(true);
      const current = await ctx.getMany(PROGRAM_VARIABLES, { bypassCache: true });
      const initialConfig = toProgramConfig(
        Object.fromEntries(PROGRAM_VARIABLES.map((n) => [n, current[n]?.value])),
      );
      const baseline = await evaluate(ctx, {}, signal, (p) => options.onProgress?.(p, 0));
      options.onBaseline?.(baseline);
      let best: TuneOutcome["best"] = { config: initialConfig, result: baseline, trial: 0 };
      const trials: Trial[] = [];
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
          const result = await evaluate(ctx, {}, signal, (p) => options.onProgress?.(p, t));
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
      return { initial: { config: initialConfig, result: baseline }, best, trials, stopped };
    })
    .finally(() => options.onLock?.(false));
}

/**
 * Scores a configuration on a split with the bridge tool: the session's
 * current variables when `config` is omitted.
 */
export async function evaluate(
  ctx: SessionContext,
  args: { split?: "dev" | "test"; config?: ProgramConfig },
  signal?: AbortSignal,
  onProgress?: (p: EvaluationProgress) => void,
): Promise<EvaluationResult> {
  const toolArgs: Record<string, JsonValue> = { split: args.split ?? "dev" };
  if (args.config !== undefined) toolArgs.config = args.config as unknown as JsonValue;
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
