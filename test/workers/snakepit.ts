/**
 * Stock snakepit Python workers for the pool's suites: the unmodified
 * `priv/` of snakepit v0.4.3 and v0.13.0 (from UB_SNAKEPIT_DIR, default
 * /work/shared/snakepit), copied into a temporary directory with its gRPC
 * stubs generated there by Debian's protoc (the shipped ones need a newer
 * protobuf), never written where they come from.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { cp, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { type Code, ConnectError } from "@connectrpc/connect";
import { decodeJsonAny, encodeJsonAny, type JsonValue } from "../../src/values/index.js";
import { waitFor } from "../support/wait.js";

const run = promisify(execFile);

/** Debian's Python 3, which has grpcio and protobuf. */
export const python = "/usr/bin/python3";

export const snakepitDir = process.env.UB_SNAKEPIT_DIR ?? "/work/shared/snakepit";
export const versions = ["v0.4.3", "v0.13.0"] as const;
export type SnakepitVersion = (typeof versions)[number];

/** Why the suites cannot run here, or undefined when they can. */
export const missing: string | undefined = versions.every((v) =>
  existsSync(path.join(snakepitDir, v, "priv/python/grpc_server.py")),
)
  ? undefined
  : `needs snakepit's Python workers (v0.4.3 and v0.13.0, each with priv/python/grpc_server.py) under ${snakepitDir}; set UB_SNAKEPIT_DIR`;

/** The showcase adapter's tools served only through execute_tool (not registered). */
export const showcaseTools = [
  "ping",
  "add",
  "increment_counter",
  "get_counter",
  "stream_progress",
  "sleep_task",
  "get_worker_info",
];

/** A temporary copy of one version's worker code, stubs generated. */
export interface SnakepitCopy {
  /** The worker command: Python, grpc_server.py, the showcase adapter. */
  readonly command: string[];
  readonly dir: string;
  remove(): Promise<void>;
}

/** Copies `version`'s priv/ to a temporary directory and generates its stubs. */
export async function copySnakepit(version: SnakepitVersion): Promise<SnakepitCopy> {
  const root = await mkdtemp(path.join(tmpdir(), `ub-snakepit-${version}-`));
  await cp(path.join(snakepitDir, version, "priv"), root, { recursive: true });
  const dir = path.join(root, "python");
  await run(
    "protoc",
    [
      "-I",
      "../proto",
      "--python_out=.",
      "--grpc_python_out=.",
      "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin",
      "../proto/snakepit_bridge.proto",
    ],
    { cwd: dir, timeout: 30_000 },
  );
  return {
    dir,
    command: [
      python,
      path.join(dir, "grpc_server.py"),
      "--adapter",
      "snakepit_bridge.adapters.showcase.ShowcaseAdapter",
    ],
    remove: () => rm(root, { recursive: true, force: true }),
  };
}

/** A worker as `GET /workers` shows it. */
export interface WorkerEntry {
  readonly kind: string;
  readonly id: string;
  readonly pid: number | null;
  readonly address: string | null;
  readonly state: string;
  readonly tools: string[];
  readonly restarts: number;
  readonly lastError: string | null;
  readonly inFlight: number;
  readonly sessions: number;
}

/** `GET /workers` of a bridge's admin listener. */
export async function workersOf(adminUrl: string): Promise<WorkerEntry[]> {
  const res = await fetch(`${adminUrl}/workers`);
  if (res.status !== 200) throw new Error(`GET /workers answered ${res.status}`);
  return ((await res.json()) as { workers: WorkerEntry[] }).workers;
}

/** Waits (up to 30 s) until `count` workers are ready; resolves to them. */
export async function readyWorkers(adminUrl: string, count: number): Promise<WorkerEntry[]> {
  return waitFor(
    async () => {
      const list = await workersOf(adminUrl);
      if (list.length !== count || !list.every((w) => w.state === "ready")) {
        throw new Error(`waiting for ${count} ready workers; now: ${JSON.stringify(list)}`);
      }
      return list;
    },
    { timeoutMs: 30_000, intervalMs: 50 },
  );
}

/** Whether a process is gone (exited; a zombie nobody reaped counts as gone). */
export async function processGone(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    return true;
  }
}

/** The ConnectError code of a rejected promise. */
export async function codeOf(p: Promise<unknown>): Promise<{ code: Code; message: string }> {
  try {
    await p;
  } catch (e) {
    const err = ConnectError.from(e);
    return { code: err.code, message: err.rawMessage };
  }
  throw new Error("the call succeeded");
}

/** A tool call's parameters, each as the bridge's clients encode a JSON value. */
export function toolParams(values: Record<string, JsonValue>) {
  return Object.fromEntries(Object.entries(values).map(([k, v]) => [k, encodeJsonAny(v)]));
}

const decoder = new TextDecoder();

/** The JSON a snakepit result carries (snakepit.map / float / integer: JSON bytes; or a StringValue). */
export function resultJson(result: { typeUrl: string; value: Uint8Array } | undefined): unknown {
  if (result === undefined) throw new Error("no result");
  if (result.typeUrl.endsWith("google.protobuf.StringValue")) {
    return decodeJsonAny(result as Parameters<typeof decodeJsonAny>[0]);
  }
  return JSON.parse(decoder.decode(result.value));
}
