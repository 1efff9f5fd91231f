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
    ],
    metadata: { category: "demo", streaming: "true" },
    async *stream(args, { session, signal }) {
      const split: "dev" | "test" | undefined =
        args.split === "test" ? "test" : args.split === "dev" ? "dev" : undefined;
      if (split === undefined)
        throw new Error(`split must be "dev" or "test", got ${JSON.stringify(args.split)}`);
      const { config, versions } =
        args.config === null || args.config === undefined
          ? await readSessionConfig(session)
          : { config: checkConfig(args.config), versions: {} };
      const key = JSON.stringify([split, config]);
      const known = results.get(key);
      if (known !== undefined)
        return { ...known, versions, cached: true } satisfies EvaluationResult;

      const queue: EvaluationProgress[] = [];
      let wake: (() => void) | undefined;
      const push = async (p: EvaluationProgress) => {
        queue.push(p);
        wake?.();
      };
      let finished = false;
      const run = program.evaluate(config, split, { onProgress: push, signal }).finally(() => {
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
      const evaluation = await run;
      const result = { kind: "result" as const, split, config, ...evaluation };
      results.set(key, result);
      if (results.size > 500) results.delete(results.keys().next().value as string);
      return { ...result, versions, cached: false } satisfies EvaluationResult;
    },
  };

  const dataset: ToolDefinition = {
    name: DATASET_TOOL,
    description:
      "Loads (once) and summarizes the SpamAssassin corpus: messages and spam per split of the deterministic train/dev/test split.",
    metadata: { category: "demo" },
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
    metadata: { category: "demo" },
    async handler(args, { session }) {
      const text = String(args.text).slice(0, 50_000);
      const { config } = await readSessionConfig(session);
      const parts =
        /^[A-Za-z-]+:/m.test(text) && /\r?\n\r?\n/.test(text)
          ? parseMail(text)
          : { subject: "", from: "", headers: "", body: text };
      const outcome = await program.classify(config, parts);
      return { ...outcome, config } as unknown as JsonValue;
    },
  };

  return [evaluate, dataset, classify];
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
