/**
 * A private redis-server for one benchmark: a free port on 127.0.0.1, no
 * persistence (`--save "" --appendonly no`), its own temp dir, stopped and
 * removed afterwards. Never the system Redis on 6379.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { trackProcess } from "./child-processes.ts";

/** A running private Redis. */
export interface RedisServer {
  readonly port: number;
  stop(): Promise<void>;
}

const binary = process.env.UB_REDIS_SERVER ?? "/usr/bin/redis-server";

/** A port that was free a moment ago (the OS picks it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

/** Starts redis-server and resolves once it accepts connections; `extraArgs` go last. */
export async function startRedisServer(
  extraArgs: (dir: string) => readonly string[] = () => [],
): Promise<RedisServer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "ub-bench-redis-"));
  const child = spawn(
    binary,
    [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
      "--dir",
      dir,
      ...extraArgs(dir),
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  trackProcess(child);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(timer);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await new Promise<void>((resolve, reject) => {
      let output = "";
      const timer = setTimeout(
        () => reject(new Error(`redis-server not ready after 10 s:\n${output}`)),
        10_000,
      );
      child.once("error", (error) => {
        clearTimeout(timer);
        reject(error);
      });
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`redis-server exited with ${code}:\n${output}`));
      });
      child.stdout.on("data", (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes("Ready to accept connections")) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.stderr.on("data", (chunk: Buffer) => {
        output += chunk.toString();
      });
    });
  } catch (error) {
    await stop();
    throw error;
  }
  // Keep draining its output so a full pipe can never block it.
  child.stdout.resume();
  child.stderr.resume();
  return { port, stop };
}
