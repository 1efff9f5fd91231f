/**
 * The private Redis the store and CLI suites run against
 * (test/support/redis-server.ts): that it really starts, dies, freezes and
 * comes back, so that a suite testing the store under those failures tests
 * what it says.
 */
import { spawn } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import { fileURLToPath } from "node:url";
import { Cluster, Redis } from "ioredis";
import { describe, expect, it, onTestFinished } from "vitest";
import { node } from "../support/cli.js";
import { startRedisCluster } from "../support/redis-cluster.js";
import { startRedis, type TestRedis } from "../support/redis-server.js";
import { until } from "../support/wait.js";

/** A client that fails fast instead of retrying, so a dead server shows at once. */
function client(redis: TestRedis, commandTimeout?: number): Redis {
  const c = new Redis(redis.url, {
    lazyConnect: true,
    connectTimeout: 2000,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
    ...(commandTimeout === undefined ? {} : { commandTimeout }),
  });
  // Failures are asserted through the commands; this only keeps them off stderr.
  c.on("error", () => {});
  onTestFinished(() => c.disconnect());
  return c;
}

/** Whether `pid` still runs; a zombie (killed, not yet reaped by init) does not. */
function alive(pid: number): boolean {
  try {
    // /proc/<pid>/stat: "pid (comm) state ...".
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    // ENOENT: no such process.
    return false;
  }
}

/** The error code of a plain TCP connect to the port ("connected" when it is accepted). */
function connectOutcome(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve("connected");
    });
    socket.once("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
  });
}

async function started(options?: { appendonly?: boolean }): Promise<TestRedis> {
  const redis = await startRedis(options);
  onTestFinished(() => redis.stop());
  return redis;
}

describe("test Redis", () => {
  it("starts on a free loopback port with its own directory, answers PING, and stop() removes it", async () => {
    const redis = await startRedis();
    const other = await started();
    expect(redis.url).toBe(`redis://127.0.0.1:${redis.port}`);
    expect(redis.port).not.toBe(6379);
    expect(other.port).not.toBe(redis.port);
    expect(other.dir).not.toBe(redis.dir);
    expect(existsSync(redis.dir)).toBe(true);
    const c = client(redis);
    await c.connect();
    expect(await c.ping()).toBe("PONG");
    expect(await c.config("GET", "bind")).toEqual(["bind", "127.0.0.1"]);

    const pid = redis.pid;
    await redis.stop();
    expect(alive(pid)).toBe(false);
    expect(existsSync(redis.dir)).toBe(false);
    expect(await connectOutcome(redis.port)).toBe("ECONNREFUSED");
    // Stopping twice is harmless.
    await redis.stop();
  });

  it("kill() ends the process at once, and restart() brings it back on the same port", async () => {
    const redis = await started();
    const c = client(redis);
    await c.connect();
    const pid = redis.pid;
    await redis.kill();
    expect(alive(pid)).toBe(false);
    await expect(c.ping()).rejects.toThrow();
    expect(await connectOutcome(redis.port)).toBe("ECONNREFUSED");

    await redis.restart();
    expect(redis.pid).not.toBe(pid);
    const again = client(redis);
    await again.connect();
    expect(await again.ping()).toBe("PONG");
  });

  it("with appendonly, a key written before a kill is there after the restart; without, it is gone", async () => {
    for (const appendonly of [true, false]) {
      const redis = await started({ appendonly });
      const before = client(redis);
      await before.connect();
      expect(await before.set("k", `written with appendonly ${appendonly}`)).toBe("OK");
      await redis.kill();
      await redis.restart();
      const after = client(redis);
      await after.connect();
      expect([appendonly, await after.get("k")]).toEqual([
        appendonly,
        appendonly ? "written with appendonly true" : null,
      ]);
    }
  });

  it("pause() makes commands time out on an open connection; resume() answers again", async () => {
    const redis = await started();
    const c = client(redis, 300);
    await c.connect();
    expect(await c.set("k", "v")).toBe("OK");
    redis.pause();
    const t0 = performance.now();
    await expect(c.get("k")).rejects.toThrow(/timed out/i);
    expect(performance.now() - t0).toBeLessThan(2000);
    redis.resume();
    expect(await c.get("k")).toBe("v");
    expect(await c.ping()).toBe("PONG");
  });

  it("stop() ends a paused server too", async () => {
    const redis = await startRedis();
    const pid = redis.pid;
    redis.pause();
    const t0 = performance.now();
    await redis.stop();
    expect(alive(pid)).toBe(false);
    expect(performance.now() - t0).toBeLessThan(4000);
  });

  it.each([
    ["throws", "throw new Error('a failing test process');"],
    ["is stopped with SIGTERM", "process.kill(process.pid, 'SIGTERM');"],
    ["calls process.exit", "process.exit(3);"],
  ])("dies with its test process when that %s", async (_, ending) => {
    const harness = fileURLToPath(new URL("../support/redis-server.ts", import.meta.url));
    const script = [
      `import { startRedis } from ${JSON.stringify(harness)};`,
      "const redis = await startRedis({ appendonly: true });",
      "console.log(JSON.stringify({ pid: redis.pid, dir: redis.dir }));",
      ending,
    ].join("\n");
    const child = spawn(node, ["--input-type=module", "-e", script], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    onTestFinished(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    });
    let stdout = "";
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => {
      stdout += chunk;
    });
    child.stderr.resume();
    const exited = await new Promise<{ code: number | null; signal: string | null }>((resolve) =>
      child.once("exit", (code, signal) => resolve({ code, signal })),
    );
    expect(exited.code === 0).toBe(false);
    const { pid, dir } = JSON.parse(stdout) as { pid: number; dir: string };
    // Should the harness fail at this, the test still leaves nothing behind.
    onTestFinished(() => {
      if (alive(pid)) process.kill(pid, "SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    });
    // SIGKILL is sent as the test process dies; the kernel needs a moment.
    await until(() => !alive(pid), "the orphaned redis-server to be gone");
    expect(existsSync(dir)).toBe(false);
  });
});

describe("test Redis Cluster", () => {
  it("serves every slot on three primaries with a replica each, and stop() ends every node", async () => {
    const cluster = await startRedisCluster();
    onTestFinished(() => cluster.stop());
    const primaries = await cluster.primaries();
    expect(primaries).toHaveLength(3);
    expect(cluster.nodes).toHaveLength(6);
    const c = new Cluster(
      cluster.nodes.map((n) => ({ host: "127.0.0.1", port: n.port })),
      { lazyConnect: true },
    );
    onTestFinished(() => c.disconnect());
    await c.connect();
    // Keys of many slots, so every primary is written.
    const keys = Array.from({ length: 64 }, (_, i) => `k${i}`);
    for (const k of keys) await c.set(k, k);
    for (const k of keys) expect(await c.get(k)).toBe(k);
    const sizes = await Promise.all(c.nodes("master").map((n) => n.dbsize()));
    expect(sizes).toHaveLength(3);
    expect(sizes.every((n) => n > 0)).toBe(true);
    c.disconnect();
    await cluster.stop();
    for (const node of cluster.nodes) expect(await connectOutcome(node.port)).toBe("ECONNREFUSED");
  });
});
