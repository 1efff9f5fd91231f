/**
 * A private `redis-server` for one test: a free port of 127.0.0.1 (never
 * 6379, never the system's Redis), its own temporary directory, and ways to
 * fail it as a real deployment fails: killed, frozen, restarted.
 *
 * Every server is killed when the test process ends, normally or not:
 * vitest stops its workers with SIGTERM, which skips Node's "exit" event,
 * so both are handled.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Options of {@link startRedis}. */
export interface RedisOptions {
  /**
   * Keep an append-only file (fsynced on every write), so data survives
   * {@link TestRedis.kill} followed by {@link TestRedis.restart}. Default
   * off: no persistence at all, a restart starts empty.
   */
  readonly appendonly?: boolean;
  /**
   * Run as a Redis Cluster node (`--cluster-enabled yes`), its cluster bus
   * on a second free port; test/support/redis-cluster.ts joins such nodes
   * into a cluster.
   */
  readonly cluster?: boolean;
}

/** A running private Redis. */
export interface TestRedis extends AsyncDisposable {
  readonly port: number;
  /** `redis://127.0.0.1:<port>`. */
  readonly url: string;
  /** Its working directory (the append-only file lives here). */
  readonly dir: string;
  /** The current process id (a restart changes it). */
  readonly pid: number;
  /** Stops it for good (SIGTERM, SIGKILL after 5 s) and removes its directory. Idempotent. */
  stop(): Promise<void>;
  /** Kills it as a crash would (SIGKILL); {@link restart} brings it back. */
  kill(): Promise<void>;
  /** Freezes it (SIGSTOP): connections stay open, nothing answers. */
  pause(): void;
  /** Lets a paused server run again (SIGCONT); what it was sent meanwhile is answered. */
  resume(): void;
  /**
   * Stops it if it runs (SIGTERM, so the append-only file is complete) and
   * starts it again on the same port and directory.
   */
  restart(): Promise<void>;
}

const binary = process.env.UB_REDIS_SERVER ?? "/usr/bin/redis-server";
const readyTimeoutMs = 10_000;
const exitTimeoutMs = 5000;

const live = new Set<ChildProcess>();
const dirs = new Set<string>();

function killAll(): void {
  for (const child of live) child.kill("SIGKILL");
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
}
process.once("exit", killAll);
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.once(signal, () => {
    killAll();
    // Then die of the signal as the process would have without this
    // listener, unless someone else handles it.
    if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
  });
}

/** A port that was free a moment ago (the OS picks it; never Redis's default). */
async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const probe = net.createServer();
      probe.once("error", reject);
      probe.listen(0, "127.0.0.1", () => {
        const { port } = probe.address() as net.AddressInfo;
        probe.close(() => resolve(port));
      });
    });
    if (port !== 6379) return port;
  }
}

/** Spawns redis-server and resolves once it accepts connections (at most 10 s). */
async function launch(
  port: number,
  dir: string,
  appendonly: boolean,
  busPort: number | undefined,
): Promise<ChildProcess> {
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", ""];
  args.push("--appendonly", appendonly ? "yes" : "no");
  if (appendonly) args.push("--appendfsync", "always");
  if (busPort !== undefined) {
    // The bus port is given: the default (port + 10000) may be taken or past 65535.
    args.push("--cluster-enabled", "yes", "--cluster-port", String(busPort));
    args.push("--cluster-config-file", join(dir, "nodes.conf"), "--cluster-node-timeout", "2000");
  }
  const child = spawn(binary, args, { stdio: ["ignore", "pipe", "pipe"] });
  live.add(child);
  child.once("exit", () => live.delete(child));
  let output = "";
  const collect = (chunk: Buffer) => {
    // The tail is enough to say why it did not start.
    output = (output + chunk.toString()).slice(-4000);
  };
  child.stdout?.on("data", collect);
  child.stderr?.on("data", collect);
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`redis-server not ready within ${readyTimeoutMs} ms:\n${output}`)),
        readyTimeoutMs,
      );
      const onData = () => {
        if (!output.includes("Ready to accept connections")) return;
        clearTimeout(timer);
        child.stdout?.off("data", onData);
        resolve();
      };
      child.stdout?.on("data", onData);
      child.once("error", (error) => {
        clearTimeout(timer);
        reject(error);
      });
      child.once("exit", (code, signal) => {
        clearTimeout(timer);
        reject(
          new Error(`redis-server exited (${code ?? signal}) before it was ready:\n${output}`),
        );
      });
    });
  } catch (error) {
    child.kill("SIGKILL");
    throw error;
  }
  return child;
}

/** Ends `child` with `signal` and waits (SIGKILL after 5 s). */
async function end(child: ChildProcess, signal: "SIGTERM" | "SIGKILL"): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill(signal);
  // A paused process acts on SIGTERM only once it runs again.
  child.kill("SIGCONT");
  const timer = setTimeout(() => child.kill("SIGKILL"), exitTimeoutMs);
  await exited;
  clearTimeout(timer);
}

/**
 * Starts a private Redis on a free loopback port.
 *
 * @example
 * ```ts
 * const redis = await startRedis({ appendonly: true });
 * onTestFinished(() => redis.stop());
 * ```
 */
export async function startRedis(options: RedisOptions = {}): Promise<TestRedis> {
  const appendonly = options.appendonly ?? false;
  let busPort: number | undefined;
  const dir = mkdtempSync(join(tmpdir(), "ub-test-redis-"));
  dirs.add(dir);
  let port = 0;
  let child: ChildProcess | undefined;
  // Another process may take the free port before redis-server binds it.
  for (let attempt = 1; child === undefined; attempt++) {
    port = await freePort();
    if (options.cluster === true) {
      do busPort = await freePort();
      while (busPort === port);
    }
    try {
      child = await launch(port, dir, appendonly, busPort);
    } catch (error) {
      if (attempt === 3) {
        rmSync(dir, { recursive: true, force: true });
        dirs.delete(dir);
        throw error;
      }
    }
  }
  let current: ChildProcess = child;
  let stopped = false;

  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await end(current, "SIGTERM");
    rmSync(dir, { recursive: true, force: true });
    dirs.delete(dir);
  };
  const signal = (name: "SIGSTOP" | "SIGCONT") => {
    if (current.exitCode === null && current.signalCode === null) current.kill(name);
  };
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    dir,
    get pid() {
      return current.pid ?? -1;
    },
    stop,
    [Symbol.asyncDispose]: stop,
    kill: () => end(current, "SIGKILL"),
    pause: () => signal("SIGSTOP"),
    resume: () => signal("SIGCONT"),
    async restart() {
      if (stopped) throw new Error("this Redis was stopped for good");
      await end(current, "SIGTERM");
      current = await launch(port, dir, appendonly, busPort);
    },
  };
}
