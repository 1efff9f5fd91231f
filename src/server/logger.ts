/**
 * Structured JSON-lines logging for the bridge server.
 *
 * One line per event, `{"time","level","msg",...fields}`, so that log shippers
 * (Docker, journald, Loki) can index fields without parsing prose. The server
 * logs in one place; the client library never logs (it runs inside other
 * people's applications, and emits events they can subscribe to instead).
 */

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

/** Where lines go: anything with a string `write`, e.g. `process.stdout` or a test sink. */
export interface LogSink {
  write(chunk: string): unknown;
}

/** Options for {@link createLogger}; fixed at construction. */
export interface LoggerOptions {
  /** Default `"info"`. */
  level?: LogLevel;
  /** Default `process.stdout`: containers collect stdout, and stderr stays free for crashes. */
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
 * Create a JSON-lines logger.
 *
 * @example
 * ```ts
 * const logger = createLogger({ level: "debug" });
 * logger.child({ rpc: "Ping" }).info("call finished", { ms: 3 });
 * // {"time":"2025-01-01T00:00:00.000Z","level":"info","msg":"call finished","rpc":"Ping","ms":3}
 * ```
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  const sink = options.sink ?? process.stdout;
  const now = options.now ?? (() => new Date());
  return makeLogger(options.level ?? "info", sink, now, options.fields ?? {});
}

function makeLogger(level: LogLevel, sink: LogSink, now: () => Date, bound: LogFields): Logger {
  const threshold = logLevels.indexOf(level);
  const enabled = (l: LogLevel) => logLevels.indexOf(l) >= threshold;
  const write = (l: LogLevel, msg: string, fields: LogFields | undefined) => {
    if (!enabled(l)) return;
    sink.write(`${formatLine(now(), l, msg, bound, fields)}\n`);
  };
  return {
    level,
    isLevelEnabled: enabled,
    debug: (msg, fields) => write("debug", msg, fields),
    info: (msg, fields) => write("info", msg, fields),
    warn: (msg, fields) => write("warn", msg, fields),
    error: (msg, fields) => write("error", msg, fields),
    child: (fields) => makeLogger(level, sink, now, { ...bound, ...fields }),
  };
}

function formatLine(
  time: Date,
  level: LogLevel,
  msg: string,
  bound: LogFields,
  fields: LogFields | undefined,
): string {
  const line: Record<string, unknown> = { time: time.toISOString(), level, msg };
  for (const source of [bound, fields ?? {}]) {
    for (const [key, value] of Object.entries(source)) {
      line[reservedKeys.has(key) ? `field.${key}` : key] = value;
    }
  }
  try {
    return JSON.stringify(line, replacer);
  } catch (e) {
    // A field that cannot be serialized (a cycle, a throwing toJSON) must not
    // lose the event itself: keep the envelope and say why the fields are gone.
    return JSON.stringify({
      time: line.time,
      level,
      msg,
      logError: `fields not serializable: ${e instanceof Error ? e.message : String(e)}`,
    });
  }
}

// Errors have no enumerable own properties, so JSON.stringify would print `{}`.
function replacer(_key: string, value: unknown): unknown {
  if (typeof value === "bigint") return value.toString();
  if (value instanceof Error) {
    const out: Record<string, unknown> = { name: value.name, message: value.message };
    const code = (value as { code?: unknown }).code;
    if (code !== undefined) out.code = code;
    if (value.cause !== undefined) out.cause = value.cause;
    if (value.stack !== undefined) out.stack = value.stack;
    return out;
  }
  return value;
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
