import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { promisify } from "node:util";

/**
 * Starts the demo's Python worker (demo/python/spam_worker.py) when this
 * machine has what it needs: Debian's python3 with grpcio and scikit-learn,
 * and protoc with the gRPC Python plugin, which compile the bridge's own
 * proto for it (nothing is downloaded). Without them the demo runs without
 * the Python module and says why.
 */

/** Where the worker stands. */
export type PythonWorker =
  | {
      readonly running: true;
      /** e.g. "scikit-learn 1.4.2". */
      readonly runtime: string;
      /**
       * Has the worker register its tool again, e.g. on a bridge that was
       * stopped and started again with an empty tool registry; rejects
       * with the bridge's refusal, or when no answer comes within 15 s.
       */
      register(): Promise<void>;
      stop(): Promise<void>;
    }
  | { readonly running: false; readonly reason: string };

const run = promisify(execFile);
const root = join(import.meta.dirname, "..");
const PYTHON = process.env.UB_PYTHON ?? "/usr/bin/python3";
const GRPC_PLUGIN = "/usr/bin/grpc_python_plugin";

/** What is missing, in the words of the Debian packages that provide it. */
async function missing(): Promise<string | undefined> {
  const probes: [string, string, string[]][] = [
    ["python3", PYTHON, ["--version"]],
    ["python3-grpcio", PYTHON, ["-c", "import grpc"]],
    ["python3-sklearn", PYTHON, ["-c", "import sklearn, scipy, numpy"]],
    ["protobuf-compiler", "protoc", ["--version"]],
    ["protobuf-compiler-grpc", "test", ["-x", GRPC_PLUGIN]],
  ];
  for (const [pkg, file, args] of probes) {
    try {
      await run(file, args, { timeout: 20_000 });
    } catch {
      return `the Debian package ${pkg} is not installed`;
    }
  }
  return undefined;
}

/** Starts the worker against the bridge's worker listener (host:port). */
export async function startPythonWorker(options: {
  readonly bridgeWorker: string;
  /** How long to wait for the worker's registration (default 30 s). */
  readonly timeoutMs?: number;
}): Promise<PythonWorker> {
  const lacking = await missing();
  if (lacking !== undefined) return { running: false, reason: lacking };

  const out = await mkdtemp(join(tmpdir(), "ub-demo-python-"));
  const cleanup = () => rm(out, { recursive: true, force: true });
  try {
    await run(
      "protoc",
      [
        "-I",
        join(root, "proto"),
        `--python_out=${out}`,
        `--grpc_python_out=${out}`,
        `--plugin=protoc-gen-grpc_python=${GRPC_PLUGIN}`,
        join(root, "proto/snakepit/bridge/bridge.proto"),
      ],
      { timeout: 20_000 },
    );
    for (const dir of ["snakepit", "snakepit/bridge"]) {
      await mkdir(join(out, dir), { recursive: true });
      await writeFile(join(out, dir, "__init__.py"), "");
    }
  } catch (error) {
    await cleanup();
    return { running: false, reason: `protoc could not compile the proto: ${message(error)}` };
  }

  const child = spawn(
    PYTHON,
    [join(import.meta.dirname, "python/spam_worker.py"), "--bridge", options.bridgeWorker],
    {
      env: { ...process.env, PYTHONPATH: out, PYTHONDONTWRITEBYTECODE: "1", PYTHONUNBUFFERED: "1" },
      stdio: ["pipe", "pipe", "pipe"],
    },
  );
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4000);
  });
  const tail = () => stderr.trim().split("\n").slice(-3).join(" | ");
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.stdin?.end();
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
      await exited;
      clearTimeout(timer);
    }
    await cleanup();
  };
  const replies = jsonLines(child);
  // Writing to a worker that has just exited fails with EPIPE; the exit
  // itself is what the waiting call reports.
  child.stdin?.on("error", () => undefined);

  try {
    const line = await replies.next(
      (l) => l.ready === true,
      options.timeoutMs ?? 30_000,
      "registration",
    );
    const runtime = `scikit-learn ${typeof line.sklearn === "string" ? line.sklearn : "?"}`;
    // One registration at a time: each waits for its own answer line.
    let turn: Promise<unknown> = Promise.resolve();
    const register = () => {
      const next = turn.then(async () => {
        const answer = replies.next((l) => "registered" in l, 15_000, "answer");
        child.stdin?.write("register\n");
        const reply = await answer;
        if (reply.registered !== true) {
          throw new Error(`the worker could not register its tool again: ${String(reply.error)}`);
        }
      });
      turn = next.catch(() => undefined);
      return next;
    };
    return { running: true, runtime, register, stop };
  } catch (error) {
    await stop();
    const why = message(error);
    return { running: false, reason: tail() === "" ? why : `${why}: ${tail()}` };
  }
}

/**
 * The worker's JSON lines on stdout; `next(match)` waits for the next one
 * that matches (lines that are not JSON, e.g. a library's warning, are
 * skipped), failing when the worker exits or `timeoutMs` passes (the
 * message names `what` was awaited).
 */
function jsonLines(child: ChildProcess) {
  type Line = Record<string, unknown>;
  const waiting = new Set<{ match: (line: Line) => boolean; resolve: (line: Line) => void }>();
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  lines.on("line", (text) => {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      return; // Not one of the worker's answers.
    }
    if (typeof parsed !== "object" || parsed === null) return;
    for (const waiter of waiting) {
      if (waiter.match(parsed as Line)) {
        waiting.delete(waiter);
        waiter.resolve(parsed as Line);
      }
    }
  });
  let exit: string | undefined;
  const failures = new Set<(why: string) => void>();
  child.once("exit", (code) => {
    exit = `the worker exited (code ${code})`;
    for (const fail of failures) fail(exit);
  });
  return {
    next(match: (line: Line) => boolean, timeoutMs: number, what: string): Promise<Line> {
      return new Promise((resolve, reject) => {
        if (exit !== undefined) {
          reject(new Error(exit));
          return;
        }
        const done = () => {
          clearTimeout(timer);
          waiting.delete(waiter);
          failures.delete(fail);
        };
        const fail = (why: string) => {
          done();
          reject(new Error(why));
        };
        const waiter = {
          match,
          resolve: (line: Line) => {
            done();
            resolve(line);
          },
        };
        const timer = setTimeout(() => fail(`no ${what} within ${timeoutMs} ms`), timeoutMs);
        waiting.add(waiter);
        failures.add(fail);
      });
    },
  };
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
