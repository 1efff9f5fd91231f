import type { JsonValue } from "../../values/index.js";

/** Types a tool parameter can declare (ParameterSpec.type on the wire). */
export type ToolParameterType =
  | "string"
  | "integer"
  | "float"
  | "number"
  | "boolean"
  | "object"
  | "array"
  | "any";

/** One parameter of a tool. */
export interface ToolParameter {
  readonly name: string;
  readonly type: ToolParameterType;
  readonly description?: string;
  readonly required?: boolean;
  /** Used when the caller leaves the parameter out. */
  readonly default?: JsonValue;
}

/** A variable as a tool sees it. */
export interface ToolVariable {
  readonly id: string;
  readonly name: string;
  readonly type: string;
  readonly value: JsonValue;
  readonly version: number;
}

/**
 * The session a tool runs in. Writes go through the same validation,
 * versioning and watch notification as client writes.
 */
export interface ToolSession {
  readonly id: string;
  getVariable(identifier: string): Promise<ToolVariable>;
  listVariables(pattern?: string): Promise<ToolVariable[]>;
  setVariable(
    identifier: string,
    value: JsonValue,
    options?: { expectedVersion?: number },
  ): Promise<ToolVariable>;
  /**
   * Atomically replaces the variable's value with `fn(current)`: no other
   * write can land between the read and the write. Resolves to the variable
   * as that write left it.
   *
   * `fn` may run more than once. A bridge whose sessions live in Redis
   * applies an update optimistically: when another replica wrote the
   * session first, the update is run again on the newer `current`, until
   * one run's write goes through (or, after the session changed 16 times
   * meanwhile, it fails with ABORTED). Only that last run counts: its
   * value is written and resolved. So `fn` must be a pure function of
   * `current`: no I/O, no counting or logging, no outer variables set for
   * later; act on the resolved value instead.
   *
   * @example
   * ```ts
   * // GOOD: computed from `current` alone.
   * const counter = await session.updateVariable("count", (c) => Number(c.value) + 1);
   * log(`count is now ${counter.value}`);
   * // BAD: a log line or `calls++` inside `fn` happens once per run.
   * ```
   */
  updateVariable(
    identifier: string,
    fn: (current: ToolVariable) => JsonValue,
  ): Promise<ToolVariable>;
  /** Reads free-form session data (e.g. a conversation history). */
  getData(key: string): Promise<JsonValue | undefined>;
  /**
   * Atomically replaces session data with `fn(current)` and returns it.
   * Fails with RESOURCE_EXHAUSTED, changing nothing, when the JSON of the
   * new value is over {@link maxDataBytes} or the session's byte budget.
   * Like {@link updateVariable}'s, `fn` may run more than once, and only the
   * last run's value is stored and returned: keep it a pure function of
   * `current` (build a new value; do not change `current` in place either).
   */
  updateData(key: string, fn: (current: JsonValue | undefined) => JsonValue): Promise<JsonValue>;
  /** Largest JSON size, in UTF-8 bytes, of one session data value. */
  readonly maxDataBytes: number;
}

/** What a tool handler receives besides its arguments. */
export interface ToolContext {
  readonly session: ToolSession;
  /** Request metadata from the caller. */
  readonly metadata: Readonly<Record<string, string>>;
  /** Binary parameters (ExecuteToolRequest.binary_parameters). */
  readonly binaryParameters: ReadonlyMap<string, Uint8Array>;
  /** Aborted when the caller goes away or the server shuts down. */
  readonly signal: AbortSignal;
}

/** Arguments after defaults are applied and types checked. */
export type ToolArguments = Readonly<Record<string, JsonValue>>;

/**
 * A tool defined in TypeScript. Give `handler` for a tool that returns one
 * result, `stream` for one that produces chunks (its return value, if any,
 * travels in the final chunk).
 *
 * @example
 * ```ts
 * server.registerTool({
 *   name: "word_count",
 *   description: "Counts the words of a text.",
 *   parameters: [{ name: "text", type: "string", required: true }],
 *   handler: ({ text }) => String(text).split(/\s+/).filter(Boolean).length,
 * });
 * ```
 */
export interface ToolDefinition {
  readonly name: string;
  readonly description: string;
  readonly parameters?: readonly ToolParameter[];
  readonly metadata?: Readonly<Record<string, string>>;
  /** Variables the tool reads, listed for callers (ToolSpec.required_variables). */
  readonly requiredVariables?: readonly string[];
  /**
   * The tool is CPU- or memory-heavy: its calls run at most
   * `--max-expensive-tool-calls` at once, waiting clients served in turn, so
   * a client calling it many times cannot slow everyone else down.
   */
  readonly expensive?: boolean;
  readonly handler?: (args: ToolArguments, context: ToolContext) => JsonValue | Promise<JsonValue>;
  readonly stream?: (
    args: ToolArguments,
    context: ToolContext,
  ) => AsyncIterable<JsonValue> | AsyncGenerator<JsonValue, JsonValue | undefined>;
}
