/**
 * Log lines for events any client can repeat at will (a refused request, a
 * wrong token, a failing call): one line per event would let a single
 * client write 30,000 lines in as many calls, drowning what matters and
 * costing the server a write each. A sampler writes the first event of each
 * window with its fields, counts the rest, and ends the window with one
 * line saying how many it left out.
 */
import type { LogFields, Logger, LogLevel } from "./logger.js";

/** Reports events of one kind; see the module comment. */
export interface LogSampler {
  /** One event: logged now if it is the window's first, else counted. */
  report(fields?: LogFields): void;
  /** Events left out of the log since the process started. */
  readonly suppressed: number;
}

/** Options of {@link createLogSampler}. */
export interface LogSamplerOptions {
  readonly level: LogLevel;
  readonly msg: string;
  /** Length of a window (default 10 s). */
  readonly windowMs?: number;
}

/**
 * Creates a sampler writing to `logger`.
 *
 * @example
 * ```ts
 * const refused = createLogSampler(logger, { level: "warn", msg: "bad worker token" });
 * refused.report({ client });
 * // {"level":"warn","client":"10.0.0.7","msg":"bad worker token"}
 * // … 10 s later, if more came:
 * // {"level":"warn","suppressed":2999,"windowMs":10000,"msg":"bad worker token (more of the same)"}
 * ```
 */
export function createLogSampler(logger: Logger, options: LogSamplerOptions): LogSampler {
  const windowMs = options.windowMs ?? 10_000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let inWindow = 0;
  let suppressed = 0;
  const endWindow = () => {
    timer = undefined;
    const left = inWindow - 1;
    inWindow = 0;
    if (left > 0) {
      logger[options.level](`${options.msg} (more of the same)`, { suppressed: left, windowMs });
    }
  };
  return {
    report(fields) {
      inWindow++;
      if (inWindow === 1) {
        if (logger.isLevelEnabled(options.level)) logger[options.level](options.msg, fields);
        timer = setTimeout(endWindow, windowMs);
        // A pending summary must not keep a stopping process alive.
        timer.unref();
        return;
      }
      suppressed++;
    },
    get suppressed() {
      return suppressed;
    },
  };
}
