/**
 * Python interop: an unmodified grpcio client, with code generated from our
 * proto by Debian's protoc, drives a real bridge server, and hosts a remote
 * tool the bridge forwards to, registered on the bridge's worker listener
 * (the public port refuses it). The checks live in test/python/interop.py.
 *
 * Needs the Debian packages protobuf-compiler, protobuf-compiler-grpc,
 * libprotobuf-dev (google/protobuf/*.proto), python3-grpcio and
 * python3-protobuf. Missing ones FAIL the test (with the
 * package to install); this test never skips.
 */
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeBridgePythonStubs } from "../scripts/python-stubs.ts";
import { type RunningBridge, startBridge } from "./support/bridge.js";

const run = promisify(execFile);

const root = resolve(fileURLToPath(new URL(".", import.meta.url)), "..");
const python = "/usr/bin/python3";
const protoc = "protoc";
const grpcPlugin = "/usr/bin/grpc_python_plugin";
const script = join(root, "test/python/interop.py");

/** Every check interop.py prints, in order: a silently skipped one fails the test. */
const expectedChecks = [
  "ping",
  "session_minted",
  "session_idempotent",
  "register_variable",
  "get_variable",
  "set_variable",
  "set_variable_constraint",
  "batch_get",
  "batch_set_non_atomic",
  "batch_set_atomic",
  "list_variables",
  "delete_variable",
  "execute_tool",
  "execute_elixir_tool",
  "exposed_tools",
  "unknown_tool_in_band",
  "watch_initial_value",
  "watch_value_changed",
  "watch_cancel",
  "register_tools_public_refused",
  "register_tools",
  "remote_tool_forwarded",
  "remote_streaming_tool_forwarded",
  "remote_worker_down",
  "cleanup_session",
];

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command without blocking the event loop (the in-process server keeps serving). */
async function exec(
  file: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; timeout?: number } = {},
): Promise<RunResult> {
  try {
    const { stdout, stderr } = await run(file, args, {
      cwd: root,
      env: options.env ?? process.env,
      timeout: options.timeout ?? 30_000,
      maxBuffer: 16 * 1024 * 1024,
    });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as NodeJS.ErrnoException & {
      stdout?: string;
      stderr?: string;
      code?: unknown;
      signal?: string;
    };
    if (err.code === "ENOENT") throw err;
    return {
      code: typeof err.code === "number" ? err.code : -1,
      stdout: err.stdout ?? "",
      stderr: `${err.stderr ?? ""}${err.signal ? `\n(killed by ${err.signal})` : ""}`,
    };
  }
}

/** Fails with the Debian package to install when a prerequisite is missing. */
async function requireTool(what: string, pkg: string, file: string, args: string[]): Promise<void> {
  let result: RunResult;
  try {
    result = await exec(file, args, { timeout: 15_000 });
  } catch (e) {
    throw new Error(
      `${what} is missing (${(e as Error).message}); install the Debian package ${pkg} (apt-get install ${pkg})`,
    );
  }
  if (result.code !== 0) {
    throw new Error(
      `${what} does not work (exit ${result.code}: ${result.stderr.trim()}); install the Debian package ${pkg} (apt-get install ${pkg})`,
    );
  }
}

let bridge: RunningBridge | undefined;
let outDir: string | undefined;

beforeAll(async () => {
  outDir = await mkdtemp(join(tmpdir(), "ub-python-interop-"));
  bridge = await startBridge();
}, 60_000);

afterAll(async () => {
  await bridge?.stop();
  if (outDir !== undefined) await rm(outDir, { recursive: true, force: true });
});

describe("Python interop (grpcio against the bridge)", () => {
  it("an unmodified grpcio client and worker pass every interop check", async () => {
    if (bridge === undefined || outDir === undefined) throw new Error("setup failed");

    await requireTool("protoc", "protobuf-compiler", protoc, ["--version"]);
    await requireTool("grpc_python_plugin", "protobuf-compiler-grpc", "test", ["-x", grpcPlugin]);
    await requireTool("protoc's well-known types", "libprotobuf-dev", "test", [
      "-f",
      "/usr/include/google/protobuf/any.proto",
    ]);
    await requireTool(`${python} (Debian's python3)`, "python3", python, ["--version"]);
    await requireTool("grpc for /usr/bin/python3", "python3-grpcio", python, ["-c", "import grpc"]);
    await requireTool("protobuf for /usr/bin/python3", "python3-protobuf", python, [
      "-c",
      "import google.protobuf.any_pb2",
    ]);

    await writeBridgePythonStubs(outDir, { protoc, plugin: grpcPlugin });

    const workerTarget = new URL(bridge.workerUrl).host;
    const args = [script, "--target", `127.0.0.1:${bridge.port}`, "--worker-target", workerTarget];
    const result = await exec(python, args, {
      env: {
        ...process.env,
        PYTHONPATH: outDir,
        PYTHONDONTWRITEBYTECODE: "1",
        PYTHONUNBUFFERED: "1",
      },
      timeout: 45_000,
    });
    if (process.env.UB_TEST_LOGS) console.log(result.stdout, result.stderr);
    const report = `exit ${result.code}\n--- stdout\n${result.stdout}\n--- stderr\n${result.stderr}`;
    expect(result.code, report).toBe(0);

    const lines = result.stdout.split("\n").filter((l) => l !== "");
    const passed = lines.filter((l) => l.startsWith("ok ")).map((l) => l.slice(3));
    expect(passed, report).toEqual(expectedChecks);
    const summary = JSON.parse(lines.at(-1) ?? "{}") as { checks?: number };
    expect(summary, report).toEqual({ checks: expectedChecks.length });
  }, 60_000);
});
