/**
 * The bridge replicas as docker-compose.yml starts them: the service's own
 * entrypoint script, command and environment, run by sh on the compiled
 * CLI with a real Redis configured as the compose Redis is. What the
 * production stack promises is checked on the running process: the worker
 * listener bound to one network's address only, no session id chosen by a
 * public caller, the default request limit, no demo tool, and a full Redis
 * refusing writes without losing a session.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { rm, symlink } from "node:fs/promises";
import path from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { BridgeService } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { decodeValue, encodeValue } from "../../src/values/index.js";
import { cleanEnv, cliSuite, node } from "../support/cli.js";
import { startRedis, type TestRedis } from "../support/redis-server.js";
import { bridgeEntrypoint, composeFile, operatorEnvironment } from "./compose.js";

const cli = cliSuite();
let redis: TestRedis;
let app: string;
const children: ChildProcess[] = [];

beforeAll(async () => {
  redis = await startRedis();
  // The image's layout: dist/server/cli.js under the working directory.
  app = path.dirname(path.dirname(path.dirname(cli.path())));
  await symlink(path.join(app, "build"), path.join(app, "dist"), "dir");
});

afterEach(() => {
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill("SIGKILL");
});

afterAll(async () => {
  await redis?.stop();
  if (app !== undefined) await rm(path.join(app, "dist"), { force: true });
});

/** A started replica: its listeners, or how it exited before it was ready. */
type Started =
  | { readonly url: string; readonly workerUrl: string; readonly child: ChildProcess }
  | { readonly code: number | null; readonly output: string };

/**
 * Runs the compose bridge's entrypoint with its command and environment,
 * the store pointed at this test's Redis and ports picked free;
 * `workerNetworkPrefix` stands in for the container's network.
 */
async function startReplica(
  workerNetworkPrefix?: string,
  operator: Readonly<Record<string, string>> = operatorEnvironment,
): Promise<Started> {
  const bridge = (await composeFile()).services.bridge;
  const command = [...(bridge?.command ?? [])];
  command[command.indexOf("--store") + 1] = redis.url;
  const env = { ...bridge?.environment, ...operator };
  if (workerNetworkPrefix !== undefined) env.WORKER_NETWORK_PREFIX = workerNetworkPrefix;
  const [shell = "", ...args] = await bridgeEntrypoint();
  const child = spawn(
    shell,
    [...args, ...command, "--port", "0", "--worker-port", "0", "--admin-port", "0"],
    // Node 24 is the `node` the script finds, as in the image.
    { cwd: app, env: cleanEnv({ ...env, PATH: `${path.dirname(node)}:${process.env.PATH}` }) },
  );
  children.push(child);
  let output = "";
  child.stdout.setEncoding("utf8");
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk: string) => {
    output += chunk;
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ready line:\n${output}`)), 20_000);
    child.stdout.on("data", (chunk: string) => {
      output += chunk;
      const m = /listening on (http:\/\/\S+) .*; workers: (\S+);/.exec(output);
      if (m === null) return;
      clearTimeout(timer);
      const url = (m[1] as string).replace("0.0.0.0", "127.0.0.1");
      resolve({ url, workerUrl: m[2] as string, child });
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

/** A replica that must start. */
async function replica(): Promise<{ url: string; workerUrl: string }> {
  const started = await startReplica("127.0.0.");
  if ("code" in started) throw new Error(`exited ${started.code}:\n${started.output}`);
  return started;
}

const clientOf = (url: string) =>
  createClient(BridgeService, createGrpcTransport({ baseUrl: url, writeMaxBytes: 64 * 1024 ** 2 }));

async function codeOf(call: Promise<unknown>): Promise<Code | "ok"> {
  try {
    await call;
    return "ok";
  } catch (e) {
    return ConnectError.from(e).code;
  }
}

describe("the compose bridge replica, run as compose starts it", () => {
  it("binds its worker listener to its address on the workers network only, and will not start without one", {
    timeout: 60_000,
  }, async () => {
    // Loopback stands in for the workers network: the listener takes the
    // address found there, not 0.0.0.0 (which Envoy and the page would reach).
    const { workerUrl } = await replica();
    expect(new URL(workerUrl).hostname).toBe("127.0.0.1");
    // The compose network's own prefix matches no interface here: the
    // replica refuses to start, naming the network, rather than listen
    // for workers everywhere.
    const prefix = (await composeFile()).services.bridge?.environment?.WORKER_NETWORK_PREFIX;
    expect(prefix).toBeDefined();
    const refused = await startReplica();
    expect(refused).toMatchObject({ code: 1 });
    expect("output" in refused ? refused.output : "").toMatch(/workers network/);
  });

  it("lets only the server mint new session ids for public callers; workers may choose", {
    timeout: 60_000,
  }, async () => {
    const { url, workerUrl } = await replica();
    const chosen = "chosen-by-a-public-client-0001";
    const withToken = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
    expect(await codeOf(clientOf(url).initializeSession({ sessionId: chosen }))).toBe(
      Code.NotFound,
    );
    const minted = await clientOf(url).initializeSession({});
    expect(minted.sessionId).not.toBe("");
    // A minted session is reopened on the public port with its token (the
    // id alone opens nothing), and a worker still creates sessions under
    // ids of its choosing.
    expect(await codeOf(clientOf(url).initializeSession({ sessionId: minted.sessionId }))).toBe(
      Code.PermissionDenied,
    );
    expect(
      (
        await clientOf(url).initializeSession(
          { sessionId: minted.sessionId },
          withToken(minted.accessToken),
        )
      ).created,
    ).toBe(false);
    expect((await clientOf(workerUrl).initializeSession({ sessionId: chosen })).created).toBe(true);
  });

  it("needs a token for every public call, and will not start without the key that signs them", {
    timeout: 60_000,
  }, async () => {
    const { url } = await replica();
    const client = clientOf(url);
    const session = await client.initializeSession({
      initialVariables: [
        { name: "n", type: "integer", initialValue: encodeValue("integer", 1).any },
      ],
    });
    const read = { sessionId: session.sessionId, variableIdentifier: "n" };
    expect(await codeOf(client.getVariable(read))).toBe(Code.Unauthenticated);
    const auth = { headers: { authorization: `Bearer ${session.accessToken}` } };
    expect(decodeValue((await client.getVariable(read, auth)).variable?.value).value).toBe(1);
    // Without UB_TOKEN_KEY the replica refuses to start, saying what to set.
    const keyless = await startReplica("127.0.0.", { UB_TOKEN_KEY: "" });
    expect(keyless).toMatchObject({ code: 1 });
    expect("output" in keyless ? keyless.output : "").toMatch(/UB_TOKEN_KEY/);
  });

  it("keeps the default 4 MiB request limit and serves no demo tool", {
    timeout: 60_000,
  }, async () => {
    const { url } = await replica();
    const client = clientOf(url);
    const session = await client.initializeSession({});
    const auth = { headers: { authorization: `Bearer ${session.accessToken}` } };
    expect(await codeOf(client.ping({ message: "x".repeat(6 * 1024 ** 2) }, auth))).toBe(
      Code.ResourceExhausted,
    );
    expect((await client.ping({ message: "x".repeat(1024 ** 2) }, auth)).message).toContain("x");
    expect(Object.keys(session.availableTools).filter((t) => t.startsWith("spam_"))).toEqual([]);
    const reply = await client.executeTool(
      { sessionId: session.sessionId, toolName: "spam_evaluate" },
      auth,
    );
    expect(reply.success).toBe(false);
    expect(reply.errorMessage).toMatch(/not found/i);
  });

  it("fails writes loudly when the compose Redis is full, and loses no session", {
    timeout: 120_000,
  }, async () => {
    const { url } = await replica();
    const client = clientOf(url);
    const kept = await client.initializeSession({
      initialVariables: [
        { name: "kept", type: "string", initialValue: encodeValue("string", "still here").any },
      ],
    });
    // The compose Redis's policy, with a bound this test can reach quickly.
    const command = (await composeFile()).services.redis?.command ?? [];
    const admin = new Redis(redis.port, "127.0.0.1");
    try {
      await admin.config(
        "SET",
        "maxmemory-policy",
        command[command.indexOf("--maxmemory-policy") + 1] ?? "",
      );
      const used = Number(/used_memory:(\d+)/.exec(await admin.info("memory"))?.[1]);
      await admin.config("SET", "maxmemory", String(used + 8 * 1024 ** 2));
      const filler = await client.initializeSession({});
      const asFiller = { headers: { authorization: `Bearer ${filler.accessToken}` } };
      const value = encodeValue("string", "y".repeat(512 * 1024)).any;
      let refused: ConnectError | undefined;
      for (let i = 0; i < 200 && refused === undefined; i++) {
        try {
          await client.registerVariable(
            { sessionId: filler.sessionId, name: `v${i}`, type: "string", initialValue: value },
            asFiller,
          );
        } catch (e) {
          refused = ConnectError.from(e);
        }
      }
      expect(refused, "no write was refused").toBeDefined();
      // An error that says the store is full, not a silent success, and
      // nothing of Redis's own (its address, its OOM text) in it.
      expect(refused?.code, refused?.message).toBe(Code.ResourceExhausted);
      expect(refused?.rawMessage).toContain("the session store is full");
      expect(refused?.rawMessage).not.toMatch(/OOM|redis:\/\/|script/i);
      // Nothing was evicted: the other session reads as it was written.
      await admin.config("SET", "maxmemory", "0");
      const read = await client.getVariable(
        { sessionId: kept.sessionId, variableIdentifier: "kept" },
        { headers: { authorization: `Bearer ${kept.accessToken}` } },
      );
      expect(decodeValue(read.variable?.value).value).toBe("still here");
      expect(Number(/evicted_keys:(\d+)/.exec(await admin.info("stats"))?.[1])).toBe(0);
    } finally {
      admin.disconnect();
    }
  });
});
