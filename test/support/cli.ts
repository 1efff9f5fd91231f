/**
 * The `unified-bridge` command as users run it: compiled, in a process of
 * its own, under Node 24.
 *
 * Each suite builds it into a temporary directory of its own, never into
 * dist/, which other runs may be reading or writing; a `node_modules` link
 * there makes the project's dependencies resolve from the build.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll } from "vitest";

const root = fileURLToPath(new URL("../..", import.meta.url));

/** Node 24, the version npm scripts run on. */
export const node = path.join(root, "node_modules/.bin/node");

/** `serve` arguments: the public listener alone, on a free port. */
export const publicOnly: readonly string[] = [
  "--port",
  "0",
  "--worker-port",
  "off",
  "--admin-port",
  "off",
];

/** `serve` arguments: the public, worker and admin listeners, each on a free port. */
export const freePorts: readonly string[] = [
  "--port",
  "0",
  "--worker-port",
  "0",
  "--admin-port",
  "0",
];

/** What a finished process printed and how it exited. */
export interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `file` with `args` from the project root (at most 60 s). */
export function run(
  file: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv = cleanEnv(),
): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(file, args, { cwd: root, env, timeout: 60_000 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === "number" ? error.code : -1;
      resolve({ code, stdout, stderr });
    });
  });
}

/** The environment without any UB_* variable of the machine running the tests. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("UB_")) env[k] = v;
  return { ...env, ...extra };
}

/** A running `unified-bridge serve`, once it printed its ready line. */
export interface ServedCli {
  readonly child: ChildProcess;
  readonly pid: number;
  /** The public listener. */
  readonly url: string;
  /** The worker and admin listeners, or "off". */
  readonly workerUrl: string;
  readonly adminUrl: string;
  readonly stdout: () => string;
  readonly stderr: () => string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** What {@link cliSuite} gives a suite. */
export interface CliSuite {
  /** The compiled cli.js (set once the suite's beforeAll has run). */
  readonly path: () => string;
  /** Runs the CLI to completion with `args`. */
  run(args: readonly string[], env?: NodeJS.ProcessEnv): Promise<RunResult>;
  /** Starts `unified-bridge serve` and waits (up to 10 s) for its ready line. */
  serve(args: readonly string[], env?: NodeJS.ProcessEnv): Promise<ServedCli>;
}

/**
 * For suites that run the CLI: builds it before the suite, removes the
 * build after it, and kills whatever `serve` started that is still running
 * after each test.
 */
export function cliSuite(): CliSuite {
  let buildRoot: string | undefined;
  let cli: string | undefined;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    buildRoot = await mkdtemp(path.join(tmpdir(), "ub-cli-"));
    // The compiled files are ES modules ("type": "module"), and the CLI reads
    // its version from the package.json two levels above it, as from dist/.
    const pkg = JSON.parse(await readFile(path.join(root, "package.json"), "utf8")) as {
      version: string;
    };
    await writeFile(
      path.join(buildRoot, "package.json"),
      JSON.stringify({ type: "module", version: pkg.version }),
    );
    await symlink(path.join(root, "node_modules"), path.join(buildRoot, "node_modules"), "dir");
    const tsc = path.join(root, "node_modules/typescript/bin/tsc");
    const outDir = path.join(buildRoot, "build");
    const build = await run(node, [tsc, "-p", "tsconfig.build.json", "--outDir", outDir]);
    if (build.code !== 0) {
      throw new Error(`the build failed (exit ${build.code}):\n${build.stdout}${build.stderr}`);
    }
    cli = path.join(outDir, "server/cli.js");
  }, 120_000);

  afterEach(() => {
    for (const child of children.splice(0)) {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    }
  });

  afterAll(async () => {
    if (buildRoot !== undefined) await rm(buildRoot, { recursive: true, force: true });
  });

  const built = () => {
    if (cli === undefined) throw new Error("the CLI is not built yet (use it inside tests)");
    return cli;
  };

  return {
    path: built,
    run: (args, env = cleanEnv()) => run(node, [built(), ...args], env),
    async serve(args, env = cleanEnv()) {
      const child = spawn(node, [built(), "serve", ...args], { cwd: root, env });
      children.push(child);
      let stdout = "";
      let stderr = "";
      child.stdout.setEncoding("utf8");
      child.stderr.setEncoding("utf8");
      child.stdout.on("data", (chunk: string) => {
        stdout += chunk;
      });
      child.stderr.on("data", (chunk: string) => {
        stderr += chunk;
      });
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>(
        (resolve) => child.once("exit", (code, signal) => resolve({ code, signal })),
      );
      const ready = await new Promise<RegExpExecArray>((resolve, reject) => {
        const timer = setTimeout(() => {
          child.stdout.off("data", onData);
          reject(new Error(`no ready line within 10 s:\n${stdout}${stderr}`));
        }, 10_000);
        const onData = () => {
          const line =
            /^unified-bridge listening on (http:\/\/\S+) .*; workers: (\S+); admin: (\S+)$/m.exec(
              stdout,
            );
          if (line === null) return;
          clearTimeout(timer);
          child.stdout.off("data", onData);
          resolve(line);
        };
        child.stdout.on("data", onData);
        void exited.then(({ code }) => {
          clearTimeout(timer);
          reject(new Error(`exited with ${code} before its ready line:\n${stdout}${stderr}`));
        });
      });
      return {
        child,
        pid: child.pid as number,
        url: ready[1] as string,
        workerUrl: ready[2] as string,
        adminUrl: ready[3] as string,
        stdout: () => stdout,
        stderr: () => stderr,
        exited,
      };
    },
  };
}
