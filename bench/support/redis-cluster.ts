/**
 * A private Redis Cluster for one benchmark: three primaries with a replica
 * each, every node a {@link startRedisServer} on free loopback ports (its
 * cluster bus port too), joined by `redis-cli --cluster create`. Ready
 * once every node says `cluster_state:ok` and every primary has its replica
 * in sync (so `WAIT` has one to wait for).
 */
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { Redis } from "ioredis";
import { freePort, startRedisServer } from "./redis-server.ts";

const run = promisify(execFile);
const cli = process.env.UB_REDIS_CLI ?? "/usr/bin/redis-cli";

/** A running private Redis Cluster. */
export interface RedisCluster {
  /** `redis+cluster://127.0.0.1:<port>,…`, as `--store` takes it. */
  readonly url: string;
  stop(): Promise<void>;
}

/** Polls `ok` every 100 ms for up to 30 s. */
async function until(what: string, ok: () => Promise<boolean>): Promise<void> {
  const deadline = performance.now() + 30_000;
  while (!(await ok().catch(() => false))) {
    if (performance.now() > deadline) throw new Error(`Redis Cluster: ${what} not within 30 s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Starts the cluster; see the module comment. */
export async function startRedisCluster(): Promise<RedisCluster> {
  const nodes = await Promise.all(
    Array.from({ length: 6 }, async () => {
      const bus = await freePort();
      return startRedisServer((dir) => [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        join(dir, "nodes.conf"),
        "--cluster-port",
        String(bus),
        "--cluster-node-timeout",
        "2000",
      ]);
    }),
  );
  const clients = nodes.map((n) => new Redis({ host: "127.0.0.1", port: n.port }));
  const stop = async () => {
    for (const c of clients) c.disconnect();
    await Promise.all(nodes.map((n) => n.stop()));
  };
  try {
    await run(cli, [
      "--cluster",
      "create",
      ...nodes.map((n) => `127.0.0.1:${n.port}`),
      "--cluster-replicas",
      "1",
      "--cluster-yes",
    ]);
    await until("cluster_state:ok on every node", async () => {
      const infos = await Promise.all(clients.map((c) => c.cluster("INFO")));
      return infos.every((i) => String(i).includes("cluster_state:ok"));
    });
    await until("a replica in sync for every primary", async () => {
      const infos = await Promise.all(clients.map((c) => c.info("replication")));
      const primaries = infos.filter((i) => i.includes("role:master"));
      return primaries.length === 3 && primaries.every((i) => /slave0:.*state=online/.test(i));
    });
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    url: `redis+cluster://${nodes.map((n) => `127.0.0.1:${n.port}`).join(",")}`,
    stop,
  };
}
