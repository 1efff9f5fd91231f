/**
 * Structured JSON-lines logging for the bridge server, on pino.
 *
 * One line per event, `{"level","time",...fields,"msg"}`, so that log
 * shippers (Docker, journald, Loki) can index fields without parsing prose.
 * On a terminal the same lines are written for a person instead
 * (`format: "pretty"`, pino-pretty): time, level, message, then the fields.
 * The server logs in one place; the client library never logs. The
 * {@link Logger} interface is what the server's code calls (message first,
 * then fields), so an embedder can hand in any logger of that shape.
 */
import { type DestinationStream, type Logger as PinoLogger, pino } from "pino";
import { prettyFactory } from "pino-pretty";

/** Severity, lowest first. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** Every level, lowest first: the order `level` thresholds compare against. */
export const logLevels: readonly LogLevel[] = ["debug", "info", "warn", "error"];

/** Type guard for strings from flags and environment variables. */
export function isLogLevel(value: string): value is LogLevel {
  return (logLevels as readonly string[]).includes(value);
}

/** Structured fields attached to one line. Values must be JSON-serializable or `Error`s. */
export type LogFields = Readonly<Record<string, unknown>>;

/** A structured logger. Obtain one from {@link createLogger} or use {@link silentLogger}. */
export interface Logger {
  /** Lines below this level are dropped before any formatting work. */
  readonly level: LogLevel;
  /** Whether a line at `level` would be written; use it to skip costly field construction. */
  isLevelEnabled(level: LogLevel): boolean;
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A logger that adds `fields` to every line (call-site fields win on conflicts). */
  child(fields: LogFields): Logger;
}

/**
 * Where lines go: anything with a string `write`, e.g. `process.stdout`, a
 * test sink, or `pino.destination()` (buffered, flushed with `flushSync()`).
 * Each line is written whole, with its newline, in one `write` call.
 */
export interface LogSink {
  write(chunk: string): unknown;
}

/** How lines are written: JSON for machines, or one readable line for a person. */
export type LogFormat = "json" | "pretty";

/** Options for {@link createLogger}; fixed at construction. */
export interface LoggerOptions {
  /** Default `"json"`. */
  format?: LogFormat;
  /** With `format: "pretty"`: colour the level (for a terminal). Default false. */
  colorize?: boolean;
  /** Default `"info"`. */
  level?: LogLevel;
  /**
   * Default `process.stdout`, written synchronously: containers collect
   * stdout, and stderr stays free for crashes.
   */
  sink?: LogSink;
  /** Clock for the `time` field; replaceable so tests get stable output. */
  now?: () => Date;
  /** Fields on every line. */
  fields?: LogFields;
}

// Keys the line format owns; a field with one of these names is renamed rather
// than allowed to overwrite the envelope (or silently dropped).
const reservedKeys = new Set(["time", "level", "msg"]);

/**
 * Fields that hold a session id. Session ids are bearer secrets, so these are
 * redacted by the logger itself, whatever the call site passed: the last
 * line of defence behind {@link redactSessionId} at the call sites.
 */
const sessionKeys = ["session", "sessionId", "session_id"];

/**
 * Fields that hold a credential (an access or identity token, the worker
 * token, a signing key): never written, whatever the call site passed.
 */
const secretKeys = [
  "token",
  "accessToken",
  "access_token",
  "authorization",
  "workerToken",
  "tokenKeys",
];

/**
 * Create a JSON-lines logger.
 *
 * @example
 * ```ts
 * const logger = createLogger({ level: "debug" });
 * logger.child({ rpc: "Ping" }).info("call finished", { ms: 3 });
 * // {"level":"info","time":"2025-01-01T00:00:00.000Z","rpc":"Ping","ms":3,"msg":"call finished"}
 * ```
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  const now = options.now ?? (() => new Date());
  const level = options.level ?? "info";
  const base = pino(
    {
      level,
      base: null,
      messageKey: "msg",
      timestamp: () => `,"time":"${now().toISOString()}"`,
      formatters: {
        level: (label) => ({ level: label }),
        log: loggable,
      },
      redact: {
        paths: [...sessionKeys, ...secretKeys],
        censor: (value, path) =>
          secretKeys.includes(path.at(-1) ?? "") ? "[Redacted]" : censorSessionId(value),
      },
    },
    (options.format === "pretty"
      ? prettySink(options.sink ?? process.stdout, options.colorize ?? false)
      : (options.sink ?? process.stdout)) as DestinationStream,
  );
  const fields = options.fields ?? {};
  return wrap(Object.keys(fields).length === 0 ? base : base.child(loggable(fields)), level);
}

/**
 * A sink that writes each JSON line as one readable line, at once and in
 * order: pino-pretty's formatter called in the write itself, not its
 * stream transport, which formats asynchronously and so could let a line
 * written straight to the sink (the ready line) overtake earlier ones.
 */
function prettySink(sink: LogSink, colorize: boolean): LogSink {
  const format = prettyFactory({
    colorize,
    translateTime: "SYS:HH:MM:ss.l",
    singleLine: true,
  });
  return { write: (line: string) => sink.write(format(line)) };
}

function wrap(p: PinoLogger, level: LogLevel): Logger {
  const threshold = logLevels.indexOf(level);
  return {
    level,
    isLevelEnabled: (l) => logLevels.indexOf(l) >= threshold,
    // pino's argument order is (fields, message); an absent fields object
    // costs nothing, so it is passed as is.
    debug: (msg, fields) => p.debug(fields, msg),
    info: (msg, fields) => p.info(fields, msg),
    warn: (msg, fields) => p.warn(fields, msg),
    error: (msg, fields) => p.error(fields, msg),
    // (pino applies its bindings formatter to the root logger's only.)
    child: (fields) => wrap(p.child(loggable(fields)), level),
  };
}

/**
 * The fields of one line as they are written: envelope keys renamed,
 * errors with name, message, code, cause and stack (JSON would print `{}`),
 * bigints as strings (JSON has no such numbers), also inside a list.
 */
function loggable(fields: LogFields): Record<string, unknown> {
  let out: Record<string, unknown> | undefined;
  for (const key in fields) {
    const value = fields[key];
    const renamed = reservedKeys.has(key);
    if (!renamed && !needsPlain(value)) continue;
    out ??= { ...fields };
    if (renamed) delete out[key];
    out[renamed ? `field.${key}` : key] = plain(value);
  }
  return out ?? (fields as Record<string, unknown>);
}

function needsPlain(value: unknown): boolean {
  return (
    value instanceof Error ||
    typeof value === "bigint" ||
    (Array.isArray(value) && value.some((v) => v instanceof Error || typeof v === "bigint"))
  );
}

function plain(value: unknown): unknown {
  if (typeof value === "bigint") return value.toString();
  if (Array.isArray(value)) return needsPlain(value) ? value.map(plain) : value;
  if (!(value instanceof Error)) return value;
  const out: Record<string, unknown> = { name: value.name, message: value.message };
  const code = (value as { code?: unknown }).code;
  if (code !== undefined) out.code = code;
  if (value.cause !== undefined) out.cause = plain(value.cause);
  if (value.stack !== undefined) out.stack = value.stack;
  return out;
}

function censorSessionId(value: unknown): unknown {
  if (typeof value !== "string") return "[Redacted]";
  // Already shortened at the call site, or a marker such as "(global)".
  if (value.endsWith("…") || (value.startsWith("(") && value.endsWith(")"))) return value;
  return redactSessionId(value);
}

/** A logger that discards everything; for tests and embedding. */
export const silentLogger: Logger = {
  level: "error",
  isLevelEnabled: () => false,
  debug: () => {},
  info: () => {},
  warn: () => {},
  error: () => {},
  child: () => silentLogger,
};

/**
 * Shorten a session id for logs: at most its first 6 characters, then "…".
 *
 * Session ids are bearer secrets (whoever holds one may read and write the
 * session), so a log line must never carry one whole. Short ids (fewer than 12
 * characters, e.g. client-chosen test ids) reveal at most half their
 * characters, so even those are not recoverable from a log.
 *
 * @example
 * ```ts
 * redactSessionId("3f2a9c41-7d0e-4b8a-9c55-0e1f2a3b4c5d"); // "3f2a9c…"
 * ```
 */
export function redactSessionId(id: string): string {
  const chars = Array.from(id); // by code point, so a surrogate pair is never split
  const shown = Math.min(6, Math.floor(chars.length / 2));
  return `${chars.slice(0, shown).join("")}…`;
}
