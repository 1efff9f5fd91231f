import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { writeBridgePythonStubs } from "../scripts/python-stubs.ts";
import type { WorkerPoolConfig } from "../src/server/workers/worker-pool.ts";

/**
 * The demo's Python worker (demo/python/spam_worker.py), run by the bridge's
 * worker pool when this machine has what it needs: Debian's python3 with
 * grpcio and scikit-learn, and protoc with the gRPC Python plugin, which
 * compile the bridge's own proto for it (nothing is downloaded). Without
 * them the demo runs without the Python module and says why.
 */

/** Whether the worker can run here. */
export type PythonWorker =
  | {
      readonly running: true;
      /** e.g. "scikit-learn 1.4.2". */
      readonly runtime: string;
      /** What the bridge's worker pool runs (`createBridgeServer({ workers })`). */
      readonly pool: WorkerPoolConfig;
      /** Removes the generated modules (once the bridge has stopped the worker). */
      cleanup(): Promise<void>;
    }
  | { readonly running: false; readonly reason: string };

const run = promisify(execFile);
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

/**
 * Checks what the worker needs and compiles the bridge's proto for it; the
 * worker itself is run by the bridge's worker pool, which starts it, waits
 * for its ready line, restarts it when it dies and stops it with the bridge.
 */
export async function preparePythonWorker(): Promise<PythonWorker> {
  const lacking = await missing();
  if (lacking !== undefined) return { running: false, reason: lacking };
  let sklearn: string;
  try {
    const { stdout } = await run(PYTHON, ["-c", "import sklearn; print(sklearn.__version__)"], {
      timeout: 20_000,
    });
    sklearn = stdout.trim();
  } catch (error) {
    return { running: false, reason: `scikit-learn does not load: ${message(error)}` };
  }

  const out = await mkdtemp(join(tmpdir(), "ub-demo-python-"));
  const cleanup = () => rm(out, { recursive: true, force: true });
  try {
    await writeBridgePythonStubs(out, { plugin: GRPC_PLUGIN });
  } catch (error) {
    await cleanup();
    return { running: false, reason: `protoc could not compile the proto: ${message(error)}` };
  }
  return {
    running: true,
    runtime: `scikit-learn ${sklearn}`,
    pool: {
      command: [PYTHON, join(import.meta.dirname, "python/spam_worker.py")],
      count: 1,
      env: { PYTHONPATH: out, PYTHONDONTWRITEBYTECODE: "1" },
      // A killed worker is back within a few seconds.
      restartBackoffMs: 500,
      maxRestarts: 10,
    },
    cleanup,
  };
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
