/**
 * Python grpcio probing the bridge's grpc.health.v1.Health service (what
 * Kubernetes gRPC probes and grpc_health_probe do) on the public and admin
 * listeners. The stubs come from our health.proto via Debian's protoc and
 * grpc_python_plugin (Debian has no grpcio-health-checking package). Needs
 * protobuf-compiler, protobuf-compiler-grpc, python3-grpcio, python3-protobuf.
 */
import { execFile } from "node:child_process";
import { copyFile, mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RunningBridge, startBridge } from "./support/bridge.js";

const run = promisify(execFile);
const root = resolve(fileURLToPath(new URL(".", import.meta.url)), "..");

let bridge: RunningBridge;
let outDir: string;

beforeAll(async () => {
  outDir = await mkdtemp(join(tmpdir(), "ub-python-health-"));
  bridge = await startBridge();
}, 60_000);

afterAll(async () => {
  await bridge?.stop();
  if (outDir !== undefined) await rm(outDir, { recursive: true, force: true });
});

describe("gRPC health checks from Python grpcio", () => {
  it("sees SERVING for the server and BridgeService, NOT_FOUND for others, on both listeners", async () => {
    const src = join(outDir, "src/grpc_health/v1");
    await mkdir(src, { recursive: true });
    await copyFile(join(root, "proto/grpc/health/v1/health.proto"), join(src, "health.proto"));
    await run(
      "/usr/bin/protoc",
      [
        "-I",
        join(outDir, "src"),
        `--python_out=${outDir}`,
        `--grpc_python_out=${outDir}`,
        "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin",
        join(src, "health.proto"),
      ],
      { timeout: 30_000 },
    );
    const targets = [`127.0.0.1:${bridge.port}`, new URL(bridge.adminUrl).host];
    const { stdout } = await run(
      "/usr/bin/python3",
      [join(root, "test/python/health_check.py"), ...targets.flatMap((t) => ["--target", t])],
      {
        env: { ...process.env, PYTHONPATH: outDir, PYTHONDONTWRITEBYTECODE: "1" },
        timeout: 30_000,
      },
    );
    const expected = {
      server: "SERVING",
      bridge: "SERVING",
      unknown: "NOT_FOUND",
      watch_first: "SERVING",
    };
    expect(JSON.parse(stdout)).toEqual(Object.fromEntries(targets.map((t) => [t, expected])));
  }, 60_000);
});
