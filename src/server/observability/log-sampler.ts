/**
 * Log lines for events any client can repeat at will (a refused request, a
 * wrong token, a failing call): one line per event would let a single
 * client write 30,000 lines in as many calls, drowning what matters and
 * costing the server a write each. A sampler writes the first event of each
 * window with its fields, counts the rest, and ends the window with one
 * line saying how many it left out.
 */

import { type ServerTimers, systemTimers, type TimerHandle } from "../common/timers.js";
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
  /** Fields the window's summary line carries too, e.g. which outcome it counts. */
  readonly fields?: LogFields;
  /** Ends the windows (default: Node's timers). */
  readonly timers?: ServerTimers;
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
  const timers = options.timers ?? systemTimers;
  let timer: TimerHandle | undefined;
  let inWindow = 0;
  let suppressed = 0;
  const endWindow = () => {
    timer = undefined;
    const left = inWindow - 1;
    inWindow = 0;
    if (left > 0) {
      logger[options.level](`${options.msg} (more of the same)`, {
        ...options.fields,
        suppressed: left,
        windowMs,
      });
    }
  };
  return {
    report(fields) {
      inWindow++;
      if (inWindow === 1) {
        if (logger.isLevelEnabled(options.level)) logger[options.level](options.msg, fields);
        timer = timers.setTimeout(endWindow, windowMs);
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

/** Samplers of one message, one per key; see {@link createKeyedLogSampler}. */
export interface KeyedLogSampler {
  /**
   * One event of the kind `key` names (e.g. `{ outcome: "denied" }`): logged
   * with `key` and `fields` if it is the first of its window, else counted.
   */
  report(key: Readonly<Record<string, string>>, fields?: LogFields): void;
  /** Events left out of the log since the process started, all keys together. */
  readonly suppressed: number;
}

/**
 * Creates samplers of one message, one per key, so that one kind of event
 * (one outcome) never hides another in its count; each summary line names
 * its key. Keys should come from a small closed set (outcomes, codes): past
 * `maxKeys` (default 64) distinct keys, the others share one sampler,
 * whose summary says so, so a caller inventing keys cannot grow the map.
 *
 * @example
 * ```ts
 * const executed = createKeyedLogSampler(logger, { level: "info", msg: "tool executed" });
 * executed.report({ outcome: "not_found" }, { tool, session });
 * ```
 */
export function createKeyedLogSampler(
  logger: Logger,
  options: LogSamplerOptions & { readonly maxKeys?: number },
): KeyedLogSampler {
  const maxKeys = options.maxKeys ?? 64;
  const samplers = new Map<string, LogSampler>();
  let others: LogSampler | undefined;
  const samplerOf = (key: Readonly<Record<string, string>>): LogSampler => {
    const id = JSON.stringify(key);
    let sampler = samplers.get(id);
    if (sampler !== undefined) return sampler;
    if (samplers.size >= maxKeys) {
      others ??= createLogSampler(logger, { ...options, fields: { others: true } });
      return others;
    }
    sampler = createLogSampler(logger, { ...options, fields: { ...options.fields, ...key } });
    samplers.set(id, sampler);
    return sampler;
  };
  return {
    report(key, fields) {
      samplerOf(key).report({ ...fields, ...key });
    },
    get suppressed() {
      let n = others?.suppressed ?? 0;
      for (const sampler of samplers.values()) n += sampler.suppressed;
      return n;
    },
  };
}
