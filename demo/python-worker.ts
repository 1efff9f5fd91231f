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

  try {
    const runtime = await ready(child, options.timeoutMs ?? 30_000, () => stderr);
    return { running: true, runtime, stop };
  } catch (error) {
    await stop();
    return { running: false, reason: message(error) };
  }
}

/** Waits for the worker's `{"ready": true}` line. */
function ready(child: ChildProcess, timeoutMs: number, stderr: () => string): Promise<string> {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
    const fail = (why: string) => {
      clearTimeout(timer);
      lines.close();
      const tail = stderr().trim().split("\n").slice(-3).join(" | ");
      reject(new Error(tail === "" ? why : `${why}: ${tail}`));
    };
    const timer = setTimeout(() => fail(`no registration within ${timeoutMs} ms`), timeoutMs);
    const exit = (code: number | null) => fail(`the worker exited (code ${code})`);
    child.once("exit", exit);
    lines.on("line", (line) => {
      try {
        const parsed = JSON.parse(line) as { ready?: boolean; sklearn?: string };
        if (parsed.ready === true) {
          clearTimeout(timer);
          child.removeListener("exit", exit);
          resolve(`scikit-learn ${parsed.sklearn ?? "?"}`);
        }
      } catch {
        // Not the ready line (e.g. a library's warning): keep waiting.
      }
    });
  });
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
