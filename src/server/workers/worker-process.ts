/**
 * One run of a Python worker process, started the way snakepit's own host
 * starts `grpc_server.py`: the operator's command plus `--port 0` (the OS
 * picks a free port, as v0.13's host does), `--elixir-address` (the
 * bridge's worker listener, which the worker calls back) and
 * `--snakepit-run-id`, each unless the command already has it. Ready when
 * either readiness signal arrives: a `GRPC_READY:<port>` line on stdout
 * (v0.4.3) or the port written to the file named by `SNAKEPIT_READY_FILE`
 * (v0.13). Its output goes to the bridge's log line by line, each line
 * clipped and the lines per second bounded.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readFile, rm } from "node:fs/promises";
import type { Readable } from "node:stream";
import type { ServerTimers } from "../common/timers.js";
import type { Logger } from "../observability/logger.js";

/** How a worker process ended. */
export interface WorkerExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  /** Set when it never ran (the program was not found, not executable). */
  readonly error?: string;
}

/** What {@link startWorkerProcess} needs. */
export interface WorkerProcessOptions {
  /** The program and its arguments, as the operator gave them. */
  readonly command: readonly string[];
  /** host:port of the bridge's worker listener. */
  readonly bridgeAddress: string;
  /** Names this bridge's workers in `ps` (`--snakepit-run-id`). */
  readonly runId: string;
  /** Where a v0.13 worker writes its port. */
  readonly readyFile: string;
  /** Added to the bridge's environment. */
  readonly env: Readonly<Record<string, string>>;
  /** Working directory (default: the bridge's). */
  readonly cwd?: string;
  /** Lines of output logged per second; the rest are counted. */
  readonly maxLinesPerSecond: number;
  readonly logger: Logger;
  /** Polls the ready file and times the output limit's windows. */
  readonly timers: ServerTimers;
}

/** A started worker process. */
export interface WorkerProcess {
  readonly pid: number | undefined;
  /** The port it serves on, once ready; rejects when it exits first. */
  readonly ready: Promise<number>;
  readonly exited: Promise<WorkerExit>;
  /** Signals its process group (its own children too). */
  kill(signal: NodeJS.Signals): void;
}

/** Longest line of worker output logged; longer ones are cut. */
const MAX_LINE = 2000;
const READY_LINE = /GRPC_READY:(\d+)/;

/** The operator's command plus what snakepit's host adds, unless already there. */
export function workerArguments(
  command: readonly string[],
  bridgeAddress: string,
  runId: string,
): string[] {
  const args = command.slice(1);
  const has = (flag: string) => args.some((a) => a === flag || a.startsWith(`${flag}=`));
  if (!has("--port")) args.push("--port", "0");
  if (!has("--elixir-address")) args.push("--elixir-address", bridgeAddress);
  if (!has("--snakepit-run-id")) args.push("--snakepit-run-id", runId);
  return args;
}

/** Starts one run of the worker command. */
export function startWorkerProcess(options: WorkerProcessOptions): WorkerProcess {
  const { logger } = options;
  const [program] = options.command;
  let child: ChildProcess | undefined;
  let spawnError: string | undefined;
  try {
    child = spawn(
      program as string,
      workerArguments(options.command, options.bridgeAddress, options.runId),
      {
        stdio: ["ignore", "pipe", "pipe"],
        // Its own process group: the bridge stops it in order on Ctrl-C,
        // and a signal to the group reaches the worker's own children.
        detached: true,
        ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
        env: { ...process.env, ...options.env, SNAKEPIT_READY_FILE: options.readyFile },
      },
    );
  } catch (e) {
    spawnError = e instanceof Error ? e.message : String(e);
  }

  let resolveReady: (port: number) => void = () => undefined;
  let rejectReady: (error: Error) => void = () => undefined;
  const ready = new Promise<number>((resolve, reject) => {
    resolveReady = resolve;
    rejectReady = reject;
  });
  // Callers may stop caring about readiness; an unobserved rejection is not an error.
  ready.catch(() => undefined);
  let isReady = false;
  const becameReady = (port: number) => {
    if (isReady || port <= 0 || port > 65_535) return;
    isReady = true;
    resolveReady(port);
  };

  const exited = new Promise<WorkerExit>((resolve) => {
    if (child === undefined) {
      resolve({ code: null, signal: null, error: spawnError ?? "spawn failed" });
      return;
    }
    let done = false;
    child.once("error", (e) => {
      // Only a failure to start ends the run here; once it ran, 'exit' does.
      if (child?.pid !== undefined || done) return;
      done = true;
      resolve({ code: null, signal: null, error: e.message });
    });
    child.once("exit", (code, signal) => {
      if (done) return;
      done = true;
      resolve({ code, signal });
    });
  });
  exited.then((exit) => {
    rejectReady(new Error(`the worker exited before it was ready (${describeExit(exit)})`));
    timers.clearInterval(readyPoll);
    void rm(options.readyFile, { force: true });
  });

  const { timers } = options;
  const limiter = lineLimiter(options.maxLinesPerSecond, logger, timers);
  const follow = (stream: Readable | null, name: "stdout" | "stderr") => {
    if (stream === null) return;
    forEachLine(stream, (line) => {
      if (!isReady && name === "stdout") {
        const m = READY_LINE.exec(line);
        if (m !== null) becameReady(Number(m[1]));
      }
      limiter.log(line, name);
    });
  };
  follow(child?.stdout ?? null, "stdout");
  follow(child?.stderr ?? null, "stderr");

  // v0.13 writes the file once (atomically, by rename); polling it is
  // cheap and needs no file-system watcher.
  const readyPoll = timers.setInterval(() => {
    if (isReady) {
      timers.clearInterval(readyPoll);
      return;
    }
    readFile(options.readyFile, "utf8").then(
      (text) => {
        if (/^\s*\d+\s*$/.test(text)) becameReady(Number(text.trim()));
      },
      () => undefined, // not written yet
    );
  }, 50);
  readyPoll.unref();

  return {
    pid: child?.pid,
    ready,
    exited,
    kill(signal) {
      const pid = child?.pid;
      if (pid === undefined || child?.exitCode !== null || child.signalCode !== null) return;
      try {
        process.kill(-pid, signal);
      } catch {
        // The group is gone already (or was never made): the process alone.
        child.kill(signal);
      }
    },
  };
}

/** "code 1", "signal SIGKILL", or why it never ran. */
export function describeExit(exit: WorkerExit): string {
  if (exit.error !== undefined) return `could not start: ${exit.error}`;
  if (exit.signal !== null) return `signal ${exit.signal}`;
  return `code ${exit.code ?? "?"}`;
}

/** Calls `onLine` for each line of `stream`, each cut at {@link MAX_LINE} characters. */
function forEachLine(stream: Readable, onLine: (line: string) => void): void {
  stream.setEncoding("utf8");
  let partial = "";
  // A line longer than the limit is cut, and the rest of it skipped, so a
  // worker writing without newlines cannot grow the buffer.
  let skipping = false;
  stream.on("data", (chunk: string) => {
    let text = partial + chunk;
    partial = "";
    for (;;) {
      const nl = text.indexOf("\n");
      if (nl < 0) break;
      const line = text.slice(0, nl).replace(/\r$/, "");
      text = text.slice(nl + 1);
      if (skipping) skipping = false;
      else onLine(line.length > MAX_LINE ? `${line.slice(0, MAX_LINE)}…` : line);
    }
    if (skipping) return;
    if (text.length > MAX_LINE) {
      onLine(`${text.slice(0, MAX_LINE)}…`);
      skipping = true;
    } else partial = text;
  });
  stream.on("end", () => {
    if (partial !== "" && !skipping) onLine(partial);
  });
  stream.on("error", () => undefined);
}

/** Logs lines up to `max` per second, then one line saying how many were left out. */
function lineLimiter(max: number, logger: Logger, timers: ServerTimers) {
  let windowStart = 0;
  let count = 0;
  let dropped = 0;
  return {
    log(line: string, stream: "stdout" | "stderr") {
      const now = timers.now();
      if (now - windowStart >= 1000) {
        if (dropped > 0) {
          logger.warn(`(${dropped} more lines of worker output left out)`, { stream });
        }
        windowStart = now;
        count = 0;
        dropped = 0;
      }
      if (count >= max) {
        dropped++;
        return;
      }
      count++;
      if (line.trim() !== "") logger.info(line, { stream });
    },
  };
}
