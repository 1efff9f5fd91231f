/**
 * The bridge's proto compiled for Python (what snakepit ships pregenerated):
 * `snakepit/bridge/bridge_pb2.py` and `bridge_pb2_grpc.py` under `outDir`,
 * as regular packages, so that another `snakepit` on `sys.path` cannot
 * shadow them. The demo's Python worker and the suites that run Python
 * against the bridge put `outDir` on the worker's `PYTHONPATH`.
 * Needs Debian's protobuf-compiler and protobuf-compiler-grpc.
 */
import { execFile } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);
const root = join(import.meta.dirname, "..");

/** Where protoc and its Python gRPC plugin are (Debian's paths by default). */
export interface PythonStubTools {
  readonly protoc?: string;
  readonly plugin?: string;
}

/**
 * Writes the stubs; rejects with protoc's own error output when it fails.
 *
 * @example
 * ```ts
 * await writeBridgePythonStubs(dir);
 * spawn("python3", ["worker.py"], { env: { ...process.env, PYTHONPATH: dir } });
 * ```
 */
export async function writeBridgePythonStubs(
  outDir: string,
  tools: PythonStubTools = {},
): Promise<void> {
  await run(
    tools.protoc ?? "protoc",
    [
      "-I",
      join(root, "proto"),
      `--python_out=${outDir}`,
      `--grpc_python_out=${outDir}`,
      `--plugin=protoc-gen-grpc_python=${tools.plugin ?? "/usr/bin/grpc_python_plugin"}`,
      join(root, "proto/snakepit/bridge/bridge.proto"),
    ],
    { timeout: 30_000 },
  );
  for (const dir of ["snakepit", "snakepit/bridge"]) {
    await mkdir(join(outDir, dir), { recursive: true });
    await writeFile(join(outDir, dir, "__init__.py"), "");
  }
}
