/**
 * A private Redis Cluster for one suite: three primaries with a replica
 * each, every node a {@link startRedis} server on free loopback ports,
 * joined by `redis-cli --cluster create`. It is ready once every node says
 * `cluster_state:ok` and knows its replicas; stop() ends every node.
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { Redis } from "ioredis";
import { startRedis, type TestRedis } from "./redis-server.js";

const run = promisify(execFile);
const cli = process.env.UB_REDIS_CLI ?? "/usr/bin/redis-cli";
const readyTimeoutMs = 30_000;

/** A running private Redis Cluster. */
export interface TestRedisCluster extends AsyncDisposable {
  /** Every node, primaries and replicas, in the order they were started. */
  readonly nodes: readonly TestRedis[];
  /** `redis+cluster://127.0.0.1:<port>,…` naming every node, as `--store` takes it. */
  readonly url: string;
  /** The nodes that are primaries now (a failover changes them). */
  primaries(): Promise<TestRedis[]>;
  /** Resolves once every slot is served again and every node says `cluster_state:ok`. */
  healthy(): Promise<void>;
  /** Resolves once every primary has a replica attached and in sync. */
  replicated(): Promise<void>;
  /** Stops every node. Idempotent. */
  stop(): Promise<void>;
}

/** What `CLUSTER INFO` or `INFO replication` say, as a map. */
function fields(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split("\r\n")) {
    const colon = line.indexOf(":");
    if (colon > 0) out.set(line.slice(0, colon), line.slice(colon + 1));
  }
  return out;
}

/** Sends one command to one node, on a connection of its own. */
async function ask(node: TestRedis, ...args: string[]): Promise<string> {
  const c = new Redis(node.port, "127.0.0.1", {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  c.on("error", () => {});
  try {
    await c.connect();
    return String(await c.call(args[0] as string, ...args.slice(1)));
  } finally {
    c.disconnect();
  }
}

/**
 * Starts a cluster of `primaries` primaries (default 3), each with one replica.
 *
 * @example
 * ```ts
 * const cluster = await startRedisCluster();
 * onTestFinished(() => cluster.stop());
 * ```
 */
export async function startRedisCluster(primaries = 3): Promise<TestRedisCluster> {
  const nodes = await Promise.all(
    Array.from({ length: primaries * 2 }, () => startRedis({ cluster: true })),
  );
  const stop = async () => {
    await Promise.all(nodes.map((n) => n.stop()));
  };
  const live = async () => {
    const out: TestRedis[] = [];
    for (const node of nodes) {
      const role = await ask(node, "ROLE").catch(() => "");
      if (role.startsWith("master")) out.push(node);
    }
    return out;
  };
  const healthy = async () => {
    const deadline = Date.now() + readyTimeoutMs;
    for (;;) {
      const states = await Promise.all(
        nodes.map(async (node) => {
          try {
            const info = fields(await ask(node, "CLUSTER", "INFO"));
            return (
              info.get("cluster_state") === "ok" && info.get("cluster_slots_assigned") === "16384"
            );
          } catch {
            // A node that was killed says nothing; the others must be ok.
            return undefined;
          }
        }),
      );
      if (states.every((s) => s !== false)) return;
      if (Date.now() > deadline) {
        throw new Error(`the Redis Cluster was not ok within ${readyTimeoutMs} ms`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const replicated = async () => {
    const deadline = Date.now() + readyTimeoutMs;
    for (;;) {
      const primaryNodes = await live();
      const synced = await Promise.all(
        primaryNodes.map(async (p) => {
          const info = fields(await ask(p, "INFO", "replication"));
          return (
            Number(info.get("connected_slaves") ?? 0) >= 1 &&
            info.get("slave0")?.includes("state=online")
          );
        }),
      );
      if (primaryNodes.length === primaries && synced.every(Boolean)) return;
      if (Date.now() > deadline) throw new Error("the cluster's replicas did not come online");
      await new Promise((r) => setTimeout(r, 100));
    }
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
    await healthy();
    // So that a failover has a replica to promote.
    await replicated();
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    nodes,
    url: `redis+cluster://${nodes.map((n) => `127.0.0.1:${n.port}`).join(",")}`,
    primaries: live,
    healthy,
    replicated,
    stop,
    [Symbol.asyncDispose]: stop,
  };
}
