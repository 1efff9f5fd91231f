/**
 * Worker liveness: a real Python grpcio worker registers a tool with its
 * worker_address; killed with SIGKILL, its tool is withdrawn within a few
 * health-check intervals (not listed, calls refused with UNAVAILABLE
 * "gone"), on every replica of a Redis store; started again on the same
 * port, or registering again, it is restored. Checks stay bounded when a
 * worker registers many addresses that hang. Needs python3-grpcio,
 * python3-protobuf, protobuf-compiler, protobuf-compiler-grpc, redis-server.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import http2 from "node:http2";
import net, { type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { type Client, Code } from "@connectrpc/connect";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { writeBridgePythonStubs } from "../../scripts/python-stubs.ts";
import type { BridgeService } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import type { RegisteredWorker } from "../../src/server/index.js";
import { decodeJsonAny, encodeJsonAny } from "../../src/values/index.js";
import { bridgePerTest, type RunningBridge } from "../support/bridge.js";
import { rejectionOf } from "../support/errors.js";
import { startRedis, type TestRedis } from "../support/redis-server.js";
import { replicasPerTest } from "../support/replicas.js";
import { until, waitFor } from "../support/wait.js";

const root = resolve(fileURLToPath(new URL(".", import.meta.url)), "../..");

const INTERVAL_MS = 400;
/** How the bridges under test check their workers. */
const checks = {
  workerCheckIntervalMs: INTERVAL_MS,
  workerCheckTimeoutMs: 300,
  workerCheckFailures: 3,
} as const;
/** Three failed checks in a row, after the last good one, plus a loaded machine's lag. */
const WITHDRAWN_WITHIN_MS = 3 * INTERVAL_MS + 1000;

let stubs: string;
let redis: TestRedis;

beforeAll(async () => {
  stubs = await mkdtemp(join(tmpdir(), "ub-liveness-"));
  await writeBridgePythonStubs(stubs);
  redis = await startRedis();
}, 60_000);

afterAll(async () => {
  await redis?.stop();
  if (stubs !== undefined) await rm(stubs, { recursive: true, force: true });
});

/** A running Python worker. */
interface PyWorker {
  readonly port: number;
  /** SIGKILL, as a crash (or the OOM killer) ends it; resolves once it is gone. */
  kill(): Promise<void>;
}

const workers = new Set<ChildProcess>();
afterEach(async () => {
  for (const child of workers) child.kill("SIGKILL");
  workers.clear();
});

/** Starts test/python/liveness_worker.py; resolves once it serves (and registered). */
async function startWorker(options: {
  readonly bridgeWorker: string;
  readonly port?: number;
  readonly register?: boolean;
}): Promise<PyWorker> {
  const args = [join(root, "test/python/liveness_worker.py"), "--bridge", options.bridgeWorker];
  if (options.port !== undefined) args.push("--port", String(options.port));
  if (options.register === false) args.push("--no-register");
  const child = spawn("/usr/bin/python3", args, {
    env: { ...process.env, PYTHONPATH: stubs, PYTHONDONTWRITEBYTECODE: "1" },
    stdio: ["pipe", "pipe", "pipe"],
  });
  workers.add(child);
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-2000);
  });
  const exited = once(child, "exit");
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  const ready = new Promise<number>((resolveReady, reject) => {
    lines.once("line", (line) => {
      const parsed = JSON.parse(line) as { ready?: boolean; port?: number };
      if (parsed.ready === true && typeof parsed.port === "number") resolveReady(parsed.port);
      else reject(new Error(`unexpected worker line: ${line}`));
    });
    child.once("exit", (code) => reject(new Error(`worker exited (${code}): ${stderr}`)));
  });
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  try {
    const port = await ready;
    return {
      port,
      async kill() {
        child.kill("SIGKILL");
        await exited;
        workers.delete(child);
      },
    };
  } finally {
    clearTimeout(timer);
  }
}

const workerHost = (bridge: RunningBridge) => new URL(bridge.workerUrl).host;

/** The tool names a session is offered, as clients list them. */
async function listed(client: Client<typeof BridgeService>, sessionId: string): Promise<string[]> {
  const res = await client.getExposedElixirTools({ sessionId });
  return res.tools.map((t) => t.name);
}

async function echo(client: Client<typeof BridgeService>, sessionId: string, text: string) {
  const res = await client.executeTool({
    sessionId,
    toolName: "py_echo",
    parameters: { text: encodeJsonAny(text) },
  });
  expect(res.errorMessage).toBe("");
  return decodeJsonAny(res.result);
}

const stateOf = (bridge: RunningBridge, address: string): RegisteredWorker | undefined =>
  bridge.server.registeredWorkers().find((w) => w.address === address);

describe("a self-registered worker that dies", () => {
  const bridgeFor = bridgePerTest();

  it("has its tool withdrawn within three intervals and restored when it serves again", async () => {
    const bridge = await bridgeFor(checks);
    const client = bridge.client("grpc");
    const { sessionId } = await client.initializeSession({});
    const worker = await startWorker({ bridgeWorker: workerHost(bridge) });
    const address = `127.0.0.1:${worker.port}`;
    expect(await listed(client, sessionId)).toContain("py_echo");
    expect(await echo(client, sessionId, "hello")).toBe("hello");
    // Checked and answering (over Ping: the worker has no health service).
    await until(() => stateOf(bridge, address)?.state === "up", "the worker to be up");

    const killedAt = Date.now();
    await worker.kill();
    await waitFor(
      async () => {
        expect(await listed(client, sessionId)).not.toContain("py_echo");
      },
      { timeoutMs: WITHDRAWN_WITHIN_MS },
    );
    expect(Date.now() - killedAt).toBeLessThan(WITHDRAWN_WITHIN_MS);
    // Nor offered at InitializeSession.
    const fresh = await client.initializeSession({});
    expect(Object.keys(fresh.availableTools)).not.toContain("py_echo");
    // A call says the worker is gone, not "try again later".
    const refused = await rejectionOf(
      client.executeTool({
        sessionId,
        toolName: "py_echo",
        parameters: { text: encodeJsonAny("x") },
      }),
      Code.Unavailable,
    );
    expect(refused.rawMessage).toMatch(/^the worker hosting tool 'py_echo' is gone/);
    expect(refused.rawMessage).not.toContain(address);
    // The operator sees which worker, why, and since when.
    const gone = stateOf(bridge, address);
    expect(gone).toMatchObject({ state: "gone", tools: ["py_echo"], workerIds: ["py-liveness"] });
    expect(gone?.lastError).toMatch(/UNAVAILABLE|ECONNREFUSED/);
    expect(Date.parse(gone?.since ?? "")).toBeGreaterThanOrEqual(killedAt);
    const listing = (await (await fetch(`${bridge.adminUrl}/workers`)).json()) as {
      workers: Record<string, unknown>[];
    };
    expect(listing.workers).toEqual([{ ...gone, kind: "registered" }]);
    const metrics = await (await fetch(`${bridge.adminUrl}/metrics`)).text();
    expect(metrics).toContain('bridge_registered_workers{state="gone"} 1');

    // Started again on the same port, without registering: the next check restores it.
    await startWorker({ bridgeWorker: workerHost(bridge), port: worker.port, register: false });
    await waitFor(
      async () => {
        expect(await listed(client, sessionId)).toContain("py_echo");
      },
      { timeoutMs: 2 * INTERVAL_MS + 1000 },
    );
    expect(await echo(client, sessionId, "back")).toBe("back");
    expect(stateOf(bridge, address)).toMatchObject({ state: "up", lastError: null });
  }, 60_000);

  it("is restored at once when it registers again, and withdrawn again if it still does not answer", async () => {
    const bridge = await bridgeFor(checks);
    const client = bridge.client();
    const { sessionId } = await client.initializeSession({});
    const worker = await startWorker({ bridgeWorker: workerHost(bridge) });
    await worker.kill();
    await waitFor(
      async () => {
        expect(await listed(client, sessionId)).not.toContain("py_echo");
      },
      { timeoutMs: WITHDRAWN_WITHIN_MS },
    );
    // The same registration again (nothing listens there any more).
    await bridge.workerClient().registerTools({
      workerId: "py-liveness",
      tools: [
        {
          name: "py_echo",
          description: "Returns its text.",
          metadata: { worker_address: `127.0.0.1:${worker.port}` },
        },
      ],
    });
    expect(await listed(client, sessionId)).toContain("py_echo");
    // Its checks still fail: withdrawn again, once, and it stays so.
    await waitFor(
      async () => {
        expect(await listed(client, sessionId)).not.toContain("py_echo");
      },
      { timeoutMs: WITHDRAWN_WITHIN_MS },
    );
    const stableUntil = Date.now() + 3 * INTERVAL_MS;
    while (Date.now() < stableUntil) {
      expect(await listed(client, sessionId)).not.toContain("py_echo");
    }
  }, 60_000);

  it("is not checked when checks are off", async () => {
    const bridge = await bridgeFor({ workerCheckIntervalMs: 0 });
    const client = bridge.client();
    const { sessionId } = await client.initializeSession({});
    const worker = await startWorker({ bridgeWorker: workerHost(bridge) });
    await worker.kill();
    // Well past the time checks would have withdrawn it: still offered, and
    // a call fails as before, as transient.
    const deadline = Date.now() + WITHDRAWN_WITHIN_MS + 1000;
    while (Date.now() < deadline) expect(await listed(client, sessionId)).toContain("py_echo");
    const res = await client.executeTool({
      sessionId,
      toolName: "py_echo",
      parameters: { text: encodeJsonAny("x") },
    });
    expect(res.errorMessage).toMatch(/unreachable/);
    expect(bridge.server.registeredWorkers()).toMatchObject([{ state: "unchecked" }]);
  }, 60_000);
});

describe("on two replicas of a Redis store", () => {
  const replica = replicasPerTest(() => redis.url);

  it("both withdraw a dead worker's tool and both restore it", async () => {
    const keyPrefix = `liveness-${Date.now()}-${Math.random().toString(36).slice(2)}:`;
    const a = await replica({ keyPrefix, bridge: checks });
    const b = await replica({ keyPrefix, bridge: checks });
    const { sessionId } = await a.bridge.client().initializeSession({});
    const clients = [a.bridge.client(), b.bridge.client()];
    // It registers with replica A; B learns of it from the store.
    const worker = await startWorker({ bridgeWorker: workerHost(a.bridge) });
    const address = `127.0.0.1:${worker.port}`;
    for (const c of clients) {
      await waitFor(async () => expect(await listed(c, sessionId)).toContain("py_echo"));
    }
    expect(await echo(clients[1] as Client<typeof BridgeService>, sessionId, "via b")).toBe(
      "via b",
    );

    await worker.kill();
    await waitFor(
      async () => {
        for (const c of clients) expect(await listed(c, sessionId)).not.toContain("py_echo");
      },
      { timeoutMs: WITHDRAWN_WITHIN_MS },
    );
    for (const r of [a, b]) expect(stateOf(r.bridge, address)?.state).toBe("gone");
    const onB = await rejectionOf(
      b.bridge.client().executeTool({
        sessionId,
        toolName: "py_echo",
        parameters: { text: encodeJsonAny("x") },
      }),
      Code.Unavailable,
    );
    expect(onB.rawMessage).toContain("is gone");
    // They agree and hold: no replica flaps back while the worker is dead.
    const stableUntil = Date.now() + 3 * INTERVAL_MS;
    while (Date.now() < stableUntil) {
      for (const c of clients) expect(await listed(c, sessionId)).not.toContain("py_echo");
    }

    await startWorker({ bridgeWorker: workerHost(a.bridge), port: worker.port, register: false });
    await waitFor(
      async () => {
        for (const c of clients) expect(await listed(c, sessionId)).toContain("py_echo");
      },
      { timeoutMs: 2 * INTERVAL_MS + 1000 },
    );
    for (const c of clients) expect(await echo(c, sessionId, "again")).toBe("again");
  }, 60_000);
});

describe("a worker registering many addresses", () => {
  const bridgeFor = bridgePerTest();
  const servers: (net.Server | http2.Http2Server)[] = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) {
      s.close();
    }
  });

  it("cannot make the bridge run unbounded checks: a fixed number in flight, one per address", async () => {
    // Workers that accept every connection and call, and never answer.
    const ADDRESSES = 40;
    const TIMEOUT_MS = 500;
    const starts: number[] = [];
    const perAddress = new Map<number, { now: number; max: number }>();
    for (let i = 0; i < ADDRESSES; i++) {
      const server = http2.createServer();
      server.on("stream", (stream) => {
        const port = (server.address() as AddressInfo).port;
        const mine = perAddress.get(port) ?? { now: 0, max: 0 };
        perAddress.set(port, mine);
        starts.push(performance.now());
        mine.now++;
        mine.max = Math.max(mine.max, mine.now);
        stream.on("error", () => undefined);
        stream.once("close", () => {
          mine.now--;
        });
      });
      server.on("sessionError", () => undefined);
      server.listen(0, "127.0.0.1");
      await once(server, "listening");
      servers.push(server);
    }
    const bridge = await bridgeFor({
      workerCheckIntervalMs: 200,
      workerCheckTimeoutMs: TIMEOUT_MS,
      workerCheckFailures: 3,
    });
    const w = bridge.workerClient();
    for (const [i, server] of servers.entries()) {
      await w.registerTools({
        workerId: `hostile-${i}`,
        tools: [
          {
            name: `hang_${i}`,
            description: "",
            metadata: { worker_address: `127.0.0.1:${(server.address() as AddressInfo).port}` },
          },
        ],
      });
    }
    // Every address is checked, timed out three times, withdrawn.
    await waitFor(
      () => {
        const states = bridge.server.registeredWorkers().map((x) => x.state);
        expect(states).toHaveLength(ADDRESSES);
        expect(states.every((s) => s === "gone")).toBe(true);
      },
      { timeoutMs: 20_000, intervalMs: 50 },
    );
    expect(starts.length).toBeGreaterThanOrEqual(3 * ADDRESSES);
    // Never two at once at one address.
    expect(Math.max(...[...perAddress.values()].map((p) => p.max))).toBe(1);
    // A fixed number of checks in flight (16): each of these holds its slot
    // for the whole timeout, so a slot begins at most one check per 500 ms;
    // in any 2 s, with up to 500 ms more for the time connecting takes on a
    // loaded machine, 16 slots begin at most 16 × 6 checks. Without the
    // bound, the 40 addresses, each checked again right after its timeout,
    // begin about 150. (Counting calls open at once instead would race with
    // the servers seeing a timed-out call's connection close.)
    const window = 4 * TIMEOUT_MS;
    let busiest = 0;
    for (let first = 0, last = 0; last < starts.length; last++) {
      while ((starts[last] as number) - (starts[first] as number) >= window) first++;
      busiest = Math.max(busiest, last - first + 1);
    }
    expect(busiest).toBeLessThanOrEqual(16 * ((window + TIMEOUT_MS) / TIMEOUT_MS + 1));
    // ...and they do run side by side.
    expect(busiest).toBeGreaterThan(16);
    const { sessionId } = await bridge.client().initializeSession({});
    expect((await listed(bridge.client(), sessionId)).filter((n) => n.startsWith("hang_"))).toEqual(
      [],
    );
    // Then they all shut down gracefully at once (a GOAWAY on every
    // connection, idle or not) while checks go on: nothing escapes as an
    // uncaught error (connect-node's own session manager let one through
    // here), and the bridge keeps answering.
    for (const server of servers.splice(0)) server.close();
    const deadline = Date.now() + 5 * 200;
    while (Date.now() < deadline) {
      expect(await listed(bridge.client(), sessionId)).not.toContain("hang_0");
    }
  }, 60_000);

  it("cannot crash or stall the bridge by hanging up, saying GOAWAY at once, or sending garbage", async () => {
    const rude: { name: string; port: number }[] = [];
    const listen = async (name: string, server: net.Server | http2.Http2Server) => {
      server.listen(0, "127.0.0.1");
      await once(server, "listening");
      servers.push(server);
      rude.push({ name, port: (server.address() as AddressInfo).port });
    };
    // A GOAWAY on a connection without streams, as soon as it opens.
    const goaway = http2.createServer();
    goaway.on("session", (session) => session.goaway(http2.constants.NGHTTP2_NO_ERROR));
    goaway.on("sessionError", () => undefined);
    await listen("goaway", goaway);
    // The same, after answering the first call of each connection.
    const late = http2.createServer();
    late.on("stream", (stream) => {
      stream.on("error", () => undefined);
      stream.respond(
        { ":status": 200, "content-type": "application/grpc", "grpc-status": "12" },
        {
          endStream: true,
        },
      );
      stream.session?.goaway(http2.constants.NGHTTP2_NO_ERROR);
    });
    late.on("sessionError", () => undefined);
    await listen("late-goaway", late);
    await listen(
      "hang-up",
      net.createServer((socket) => socket.destroy()),
    );
    await listen(
      "garbage",
      net.createServer((socket) => {
        socket.on("error", () => undefined);
        socket.end(Buffer.alloc(64 * 1024, 0x41));
      }),
    );
    const bridge = await bridgeFor({
      workerCheckIntervalMs: 100,
      workerCheckTimeoutMs: 200,
      workerCheckFailures: 3,
    });
    for (const { name, port } of rude) {
      await bridge.workerClient().registerTools({
        workerId: name,
        tools: [
          {
            name: `rude_${name}`,
            description: "",
            metadata: { worker_address: `127.0.0.1:${port}` },
          },
        ],
      });
    }
    // Many rounds of checks against them: the bridge stays up and answers,
    // the ones that never answer a call are withdrawn, the one that answers
    // with a status (then GOAWAY) stays offered.
    await waitFor(
      () => {
        const states = Object.fromEntries(
          bridge.server.registeredWorkers().map((w) => [w.workerIds[0], w.state]),
        );
        expect(states).toEqual({
          goaway: "gone",
          "late-goaway": "up",
          "hang-up": "gone",
          garbage: "gone",
        });
      },
      { timeoutMs: 10_000, intervalMs: 50 },
    );
    const { sessionId } = await bridge.client().initializeSession({});
    const deadline = Date.now() + 1500;
    while (Date.now() < deadline) {
      const offered = (await listed(bridge.client(), sessionId)).filter((n) =>
        n.startsWith("rude_"),
      );
      expect(offered).toEqual(["rude_late-goaway"]);
    }
  }, 60_000);
});
