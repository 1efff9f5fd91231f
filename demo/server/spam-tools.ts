import type { ToolDefinition, ToolSession } from "../../src/server/index.ts";
import { checkValue, type JsonValue, parseConstraints } from "../../src/values/index.ts";
import {
  CLASSIFY_TOOL,
  DATASET_TOOL,
  EVALUATE_TOOL,
  type EvaluationProgress,
  type EvaluationResult,
  PROGRAM_VARIABLES,
  type ProgramConfig,
  programSchema,
  toProgramConfig,
} from "../shared/program.ts";
import {
  applyRunChange,
  type EvaluationRecord,
  MAX_LOG_CHARS,
  parseRunLog,
  RUNS_TOOL,
  RUNS_VARIABLE,
  type RunChange,
  type RunStatus,
  scoredFrom,
} from "../shared/tuning-runs.ts";
import { parseMail } from "./mail-message.ts";
import { createSpamProgram, type SpamProgram } from "./spam-program.ts";

/**
 * The demo's bridge tools. The program reads its configuration from the
 * session's variables, the way a DSPy module reads its settings: whoever
 * writes the variables (the browser's optimizer, a person in the variables
 * panel, a Python worker) changes what the next evaluation runs.
 */
export function createSpamTools(program: SpamProgram = createSpamProgram()): ToolDefinition[] {
  /** Evaluation results by configuration and split: the same run twice is not worth redoing. */
  const results = new Map<string, Omit<EvaluationResult, "versions" | "cached">>();

  const evaluate: ToolDefinition = {
    name: EVALUATE_TOOL,
    description:
      "Trains the spam program configured by the session's variables on the training split and scores it on the dev (or held-out test) split. Streams progress; the final chunk holds the metrics.",
    parameters: [
      { name: "split", type: "string", default: "dev", description: "dev or test" },
      {
        name: "config",
        type: "object",
        description:
          "Evaluate this configuration instead of the session's current variables (same names and rules).",
      },
      {
        name: "run_id",
        type: "string",
        description:
          "Record the dev score as a trial of this tuning run (with optimizer_id, trial).",
      },
      { name: "optimizer_id", type: "string", description: "The run's optimizer." },
      { name: "trial", type: "integer", description: "The trial number; 0: the initial one." },
      {
        name: "record",
        type: "string",
        description:
          'Record the dev score as a hand evaluation: "you" (Evaluate pressed) or "load" (a page opened); with by.',
      },
      { name: "by", type: "string", description: "Who asked for the hand evaluation (a tab)." },
    ],
    metadata: { category: "demo", streaming: "true" },
    // Training and scoring take seconds of CPU and hundreds of MiB.
    expensive: true,
    async *stream(args, { session, signal }) {
      const split: "dev" | "test" | undefined =
        args.split === "test" ? "test" : args.split === "dev" ? "dev" : undefined;
      if (split === undefined)
        throw new Error(`split must be "dev" or "test", got ${JSON.stringify(args.split)}`);
      const { config, versions } =
        args.config === null || args.config === undefined
          ? await readSessionConfig(session)
          : { config: checkConfig(args.config), versions: {} };
      const record = recordingOf(args, split);
      const finish = async (result: EvaluationResult): Promise<EvaluationResult> => {
        if (record !== undefined) await recordResult(session, record, result);
        return result;
      };
      const key = JSON.stringify([split, config]);
      const known = results.get(key);
      if (known !== undefined)
        return (await finish({ ...known, versions, cached: true })) as unknown as JsonValue;

      const queue: EvaluationProgress[] = [];
      let wake: (() => void) | undefined;
      const push = async (p: EvaluationProgress) => {
        queue.push(p);
        wake?.();
      };
      let finished = false;
      const run = program
        .evaluate(config, split, { onProgress: push, signal, sessionId: session.id })
        .finally(() => {
          finished = true;
          wake?.();
        });
      run.catch(() => undefined); // awaited below; this only silences the early rejection
      while (!finished || queue.length > 0) {
        const next = queue.shift();
        if (next !== undefined) {
          yield next as unknown as JsonValue;
          continue;
        }
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
        wake = undefined;
      }
      let evaluation: Awaited<typeof run>;
      try {
        evaluation = await run;
      } catch (error) {
        // A trial that failed (the Python worker died under it, say) is
        // marked in the run log, so every tab's trial log says why; the
        // optimizer decides whether the run goes on.
        if (record?.kind === "trial" && record.trial > 0) {
          await updateRunLog(session, {
            kind: "trial_failed",
            id: record.id,
            optimizerId: record.optimizerId,
            trial: record.trial,
            config,
            message: error instanceof Error ? error.message : String(error),
          }).catch(() => undefined); // the failure itself is what the caller hears
        }
        throw error;
      }
      const result = { kind: "result" as const, split, config, ...evaluation };
      results.set(key, result);
      if (results.size > 500) results.delete(results.keys().next().value as string);
      return (await finish({ ...result, versions, cached: false })) as unknown as JsonValue;
    },
  };

  const dataset: ToolDefinition = {
    name: DATASET_TOOL,
    description:
      "Loads (once) and summarizes the SpamAssassin corpus: messages and spam per split of the deterministic train/dev/test split.",
    // Reads only: a view-only link's page shows the dataset too.
    metadata: { category: "demo", access_role: "viewer" },
    async handler() {
      const corpus = await program.corpus();
      return {
        messages: corpus.messages.length,
        spam: corpus.messages.filter((m) => m.spam).length,
        splits: corpus.counts,
        loadMs: corpus.loadMs,
      };
    },
  };

  const classify: ToolDefinition = {
    name: CLASSIFY_TOOL,
    description:
      "Runs the program configured by the session's variables on one message (a raw e-mail with headers, or plain text used as the body) and returns its spam probability and strongest features.",
    parameters: [{ name: "text", type: "string", required: true, description: "The message." }],
    // Writes nothing in the session: a viewer may try the program too.
    metadata: { category: "demo", access_role: "viewer" },
    // Trains the configured program first unless a recent call did.
    expensive: true,
    async handler(args, { session }) {
      const text = String(args.text).slice(0, 50_000);
      const { config } = await readSessionConfig(session);
      const parts =
        /^[A-Za-z-]+:/m.test(text) && /\r?\n\r?\n/.test(text)
          ? parseMail(text)
          : { subject: "", from: "", headers: "", body: text };
      const outcome = await program.classify(config, parts, session.id);
      return { ...outcome, config } as unknown as JsonValue;
    },
  };

  const runs: ToolDefinition = {
    name: RUNS_TOOL,
    description:
      "Starts, keeps alive, finishes or asks to stop a tuning run recorded in the session's tuning_runs variable (every tab draws the same chart from it).",
    parameters: [
      {
        name: "action",
        type: "string",
        required: true,
        description: "start, alive, finish or stop",
      },
      { name: "run_id", type: "string", required: true },
      { name: "optimizer_id", type: "string", description: "start, alive, finish: the optimizer" },
      { name: "owner", type: "string", description: "start, stop: the browser that started it" },
      { name: "planned", type: "integer", description: "start: trials planned" },
      { name: "seed", type: "integer", description: "start: the proposals' seed" },
      { name: "status", type: "string", description: "finish: done, stopped or failed" },
      { name: "message", type: "string", description: "finish: how it ended, in words" },
    ],
    metadata: { category: "demo" },
    async handler(args, { session }) {
      const change = runChangeOf(args);
      await updateRunLog(session, change);
      return { ok: true };
    },
  };

  return [evaluate, dataset, classify, runs];
}

/** What an evaluation should record in the run log, if anything. */
type Recording =
  | { kind: "trial"; id: string; optimizerId: string; trial: number }
  | { kind: "evaluation"; record: "you" | "load"; by: string };

function recordingOf(
  args: Readonly<Record<string, JsonValue>>,
  split: string,
): Recording | undefined {
  const text = (name: string, max = 64): string => {
    const v = args[name];
    if (typeof v !== "string" || v === "" || v.length > max) {
      throw new Error(`${name} must be a non-empty string of at most ${max} characters`);
    }
    return v;
  };
  const wantsTrial = args.run_id !== undefined && args.run_id !== null;
  const wantsRecord = args.record !== undefined && args.record !== null;
  if (!wantsTrial && !wantsRecord) return undefined;
  if (split !== "dev") throw new Error("only dev scores are recorded (split must be dev)");
  if (wantsTrial) {
    const trial = args.trial;
    if (typeof trial !== "number" || !Number.isInteger(trial) || trial < 0 || trial > 1000) {
      throw new Error("trial must be an integer from 0 (the initial configuration) to 1000");
    }
    return { kind: "trial", id: text("run_id"), optimizerId: text("optimizer_id"), trial };
  }
  const record = args.record;
  if (record !== "you" && record !== "load") {
    throw new Error(`record must be "you" or "load", got ${JSON.stringify(record)}`);
  }
  return { kind: "evaluation", record, by: text("by") };
}

async function recordResult(
  session: ToolSession,
  recording: Recording,
  result: EvaluationResult,
): Promise<void> {
  const scored = scoredFrom(result, 0);
  const change: RunChange =
    recording.kind === "trial"
      ? { ...recording, kind: "trial", result: scored }
      : {
          kind: "evaluation",
          record: {
            ...scored,
            kind: recording.record,
            by: recording.by,
          } satisfies EvaluationRecord,
        };
  await updateRunLog(session, change);
}

/** Applies one change to the session's run log in one atomic update. */
async function updateRunLog(session: ToolSession, change: RunChange): Promise<void> {
  await session.updateVariable(RUNS_VARIABLE, (current) => {
    let log = applyRunChange(parseRunLog(current.value), change, Date.now());
    let text = JSON.stringify(log);
    // Bounded history: the oldest runs go first when the log outgrows its variable.
    while (text.length > MAX_LOG_CHARS && log.runs.length > 1) {
      log = { ...log, runs: log.runs.slice(1) };
      text = JSON.stringify(log);
    }
    return text;
  });
}

const ENDINGS: readonly RunStatus[] = ["done", "stopped", "failed"];

function runChangeOf(args: Readonly<Record<string, JsonValue>>): RunChange {
  const text = (name: string, max = 64): string => {
    const v = args[name];
    if (typeof v !== "string" || v === "" || v.length > max) {
      throw new Error(`${name} must be a non-empty string of at most ${max} characters`);
    }
    return v;
  };
  const count = (name: string, min: number, max: number): number => {
    const v = args[name];
    if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
      throw new Error(`${name} must be an integer from ${min} to ${max}`);
    }
    return v;
  };
  const id = text("run_id");
  switch (args.action) {
    case "start":
      return {
        kind: "start",
        id,
        optimizerId: text("optimizer_id"),
        owner: text("owner"),
        planned: count("planned", 1, 100),
        seed: count("seed", 0, 2 ** 31),
      };
    case "alive":
      return { kind: "alive", id, optimizerId: text("optimizer_id") };
    case "finish": {
      const status = args.status as RunStatus;
      if (!ENDINGS.includes(status)) {
        throw new Error(`status must be one of ${ENDINGS.join(", ")}`);
      }
      return {
        kind: "finish",
        id,
        optimizerId: text("optimizer_id"),
        status: status as Exclude<RunStatus, "running">,
        message: text("message", 400),
      };
    }
    case "stop":
      return { kind: "stop", id, owner: text("owner") };
    case "abandon":
      return { kind: "abandon", id };
    default:
      throw new Error(
        `action must be start, alive, finish, stop or abandon, got ${JSON.stringify(args.action)}`,
      );
  }
}

/** The program's configuration as the session holds it now, with the versions read. */
async function readSessionConfig(
  session: ToolSession,
): Promise<{ config: ProgramConfig; versions: Record<string, number> }> {
  const values: Record<string, unknown> = {};
  const versions: Record<string, number> = {};
  const present = new Map((await session.listVariables("*")).map((v) => [v.name, v]));
  const missing = PROGRAM_VARIABLES.filter((name) => !present.has(name));
  if (missing.length > 0) {
    throw new Error(
      `this session has no program variables yet (missing ${missing.join(", ")}): open the demo page on it first`,
    );
  }
  for (const name of PROGRAM_VARIABLES) {
    const v = present.get(name);
    if (v === undefined) continue;
    values[name] = v.value;
    versions[name] = v.version;
  }
  return { config: toProgramConfig(values), versions };
}

/** Validates an explicit configuration with the same rules (and messages) as the variables. */
function checkConfig(input: JsonValue): ProgramConfig {
  if (typeof input !== "object" || input === null || Array.isArray(input)) {
    throw new Error("config must be an object of variable values");
  }
  const values: Record<string, unknown> = {};
  for (const name of PROGRAM_VARIABLES) {
    const declaration = programSchema[name];
    const constraints = parseConstraints(
      declaration.type,
      "constraints" in declaration ? declaration.constraints : {},
    );
    const checked = checkValue(declaration.type, input[name], constraints, name);
    if (!checked.ok) throw new Error(checked.message);
    values[name] = checked.value;
  }
  return toProgramConfig(values);
}
