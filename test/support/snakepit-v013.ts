/**
 * A real snakepit v0.13.0 Python worker for tests: the stock grpc_server.py
 * with the showcase adapter, from /work/shared/snakepit, run by Debian's
 * python3 (grpcio, protobuf, numpy). Its generated stubs are not shipped
 * (they need a newer protobuf), so each test regenerates them with Debian's
 * protoc into a temporary copy of priv/. test/python/v013_worker.py adds two
 * tools (a binary result, the call's correlation id) to the stock ones.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { copySnakepit, snakepitDir } from "../workers/snakepit.js";
import { waitFor } from "./wait.js";

/** Where snakepit's own code is kept (see its README.md). */
const priv = join(snakepitDir, "v0.13.0/priv");
const python = "/usr/bin/python3";
const repo = resolve(fileURLToPath(new URL(".", import.meta.url)), "../..");
const wrapper = join(repo, "test/python/v013_worker.py");

/**
 * Why a v0.13 worker cannot run here, or undefined when it can: snakepit's
 * code missing (a clear skip), or a Debian package missing (named).
 */
export function v013Unavailable(): string | undefined {
  if (!existsSync(join(priv, "python/grpc_server.py"))) {
    return `snakepit v0.13.0 is not at ${priv} (set UB_SNAKEPIT_DIR to the folder holding v0.4.3/ and v0.13.0/)`;
  }
  for (const [file, pkg] of [
    [python, "python3"],
    ["/usr/bin/protoc", "protobuf-compiler"],
    ["/usr/bin/grpc_python_plugin", "protobuf-compiler-grpc"],
  ] as const) {
    if (!existsSync(file)) return `${file} is missing: install the Debian package ${pkg}`;
  }
  return undefined;
}

/** A copy of v0.13's priv/ with generated stubs, shared by the workers of a suite. */
export interface V013Tree {
  /** priv/python of the copy: the workers' working directory and PYTHONPATH. */
  readonly pythonDir: string;
  remove(): Promise<void>;
}

/** Copies priv/ to a temporary directory and generates the Python stubs there. */
export async function prepareV013Tree(): Promise<V013Tree> {
  // The same copy the worker pool's suites make (stubs generated in it).
  const copy = await copySnakepit("v0.13.0");
  return { pythonDir: copy.dir, remove: copy.remove };
}

/** A running v0.13 worker. */
export interface V013Worker {
  /** Its gRPC port on 127.0.0.1. */
  readonly port: number;
  /** `127.0.0.1:<port>`, as RegisterTools' metadata.worker_address wants it. */
  readonly address: string;
  /** What it wrote to stdout and stderr so far (for failure messages). */
  output(): string;
  /** Stops it (SIGTERM, then SIGKILL after a few seconds) and waits for its exit. */
  stop(): Promise<void>;
}

/**
 * Starts the worker on a free port (port 0; its ready file says which),
 * calling back the host at `hostAddress` (host:port), as v0.13's host
 * starts it. It pings the host before it listens, so the host must be up.
 */
export async function startV013Worker(tree: V013Tree, hostAddress: string): Promise<V013Worker> {
  const readyFile = join(
    tree.pythonDir,
    `ready-${process.pid}-${Math.random().toString(36).slice(2)}`,
  );
  const child: ChildProcess = spawn(
    python,
    [
      wrapper,
      "--port",
      "0",
      "--adapter",
      "snakepit_bridge.adapters.showcase.ShowcaseAdapter",
      "--elixir-address",
      hostAddress,
    ],
    {
      cwd: tree.pythonDir,
      env: {
        ...process.env,
        PYTHONPATH: tree.pythonDir,
        SNAKEPIT_READY_FILE: readyFile,
        PYTHONUNBUFFERED: "1",
      },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let output = "";
  const keep = (chunk: Buffer) => {
    // The last 64 KiB is enough to say why a worker failed.
    output = (output + chunk.toString("utf8")).slice(-65_536);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const exited = new Promise<void>((done) => child.once("exit", () => done()));
  let port: number;
  try {
    port = await waitFor(
      async () => {
        if (child.exitCode !== null || child.signalCode !== null) {
          throw new Error(
            `the v0.13 worker exited (${child.exitCode ?? child.signalCode}):\n${output}`,
          );
        }
        const text = await readFile(readyFile, "utf8");
        const n = Number(text.trim());
        if (!Number.isInteger(n) || n <= 0) throw new Error(`ready file says '${text}'`);
        return n;
      },
      { timeoutMs: 30_000, intervalMs: 50 },
    );
  } catch (e) {
    child.kill("SIGKILL");
    await exited;
    throw e;
  }
  return {
    port,
    address: `127.0.0.1:${port}`,
    output: () => output,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const killer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(killer);
    },
  };
}
