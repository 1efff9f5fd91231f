/**
 * The `unified-bridge` command as users run it: compiled, in a process of
 * its own, under Node 24, talked to over the network and stopped by signal.
 */
import { existsSync } from "node:fs";
import http2 from "node:http2";
import net from "node:net";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { describe, expect, it } from "vitest";
import {
  BridgeService,
  PingRequestSchema,
  PingResponseSchema,
  type VariableUpdate,
} from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { formatDefault } from "../../src/server/config/config.js";
import { optionEntries } from "../../src/server/config/config-options.js";
import { encodeValue } from "../../src/values/index.js";
import { cleanEnv, cliSuite, freePorts as freePortsArgs } from "../support/cli.js";
import { startRedis } from "../support/redis-server.js";
import { startTcpProbe } from "../support/tcp-probe.js";
import { waitFor } from "../support/wait.js";

const cli = cliSuite();
const serve = cli.serve;

const grpcClient = (url: string) =>
  createClient(BridgeService, createGrpcTransport({ baseUrl: url, defaultTimeoutMs: 5000 }));

/** A gRPC Ping over raw HTTP/2 whose request body the test sends in two parts. */
function pingInTwoParts(url: string, message: string) {
  const session = http2.connect(url);
  const stream = session.request({
    ":method": "POST",
    ":path": "/snakepit.bridge.BridgeService/Ping",
    "content-type": "application/grpc",
    te: "trailers",
  });
  const body = toBinary(PingRequestSchema, create(PingRequestSchema, { message }));
  const frame = Buffer.alloc(5 + body.length);
  frame.writeUInt32BE(body.length, 1);
  frame.set(body, 5);
  const half = 5 + Math.floor(body.length / 2);
  // Received once the server acknowledged a PING sent after the first half:
  // it reads a connection's frames in order.
  const received = new Promise<void>((resolve, reject) => {
    stream.write(frame.subarray(0, half), (error) => {
      if (error != null) reject(error);
      else session.ping((e) => (e == null ? resolve() : reject(e)));
    });
  });
  const chunks: Buffer[] = [];
  stream.on("data", (chunk: Buffer) => chunks.push(chunk));
  const response = new Promise<{ status: unknown; grpcStatus: unknown; message: string }>(
    (resolve, reject) => {
      let status: unknown;
      let grpcStatus: unknown;
      stream.on("response", (headers) => {
        status = headers[":status"];
        grpcStatus = headers["grpc-status"] ?? grpcStatus;
      });
      stream.on("trailers", (trailers) => {
        grpcStatus = trailers["grpc-status"];
      });
      stream.on("error", reject);
      stream.on("end", () => {
        const data = Buffer.concat(chunks);
        const reply =
          data.length >= 5 ? fromBinary(PingResponseSchema, data.subarray(5)).message : "";
        session.close();
        resolve({ status, grpcStatus, message: reply });
      });
    },
  );
  return {
    received,
    finish: () => stream.end(frame.subarray(half)),
    response,
  };
}

describe("unified-bridge serve", () => {
  it("prints the URL it listens on, answers gRPC, and on SIGTERM ends watches with UNAVAILABLE, lets the call in flight finish and exits 0", async () => {
    const server = await serve([
      "--port",
      "0",
      // Not the default worker port: suites run side by side.
      "--worker-port",
      "0",
      "--host",
      "127.0.0.1",
      "--shutdown-grace-ms",
      "4000",
    ]);
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(server.url).not.toBe("http://127.0.0.1:0");
    expect(server.stdout()).toMatch(
      /^unified-bridge listening on .*; store: memory; access: session-id; workers: /m,
    );
    const c = grpcClient(server.url);
    expect((await c.ping({ message: "hello" })).message).toBe("hello");

    const { sessionId } = await c.initializeSession({});
    const updates: VariableUpdate[] = [];
    const watchEnded = (async () => {
      try {
        for await (const u of c.watchVariables(
          { sessionId, syncMarker: true },
          { timeoutMs: 30_000 },
        )) {
          updates.push(u);
        }
        return "ended without an error";
      } catch (e) {
        return Code[ConnectError.from(e).code];
      }
    })();
    await waitFor(() => expect(updates[0]?.updateType).toBe("sync"));

    const inFlight = pingInTwoParts(server.url, "sent across the shutdown");
    await inFlight.received;
    server.child.kill("SIGTERM");
    // The watch ending shows the shutdown has begun; only then does the
    // rest of the in-flight request arrive.
    expect(await watchEnded).toBe("Unavailable");
    inFlight.finish();
    expect(await inFlight.response).toEqual({
      status: 200,
      grpcStatus: "0",
      message: "sent across the shutdown",
    });
    expect(await server.exited).toEqual({ code: 0, signal: null });
    const logged = server
      .stdout()
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => (JSON.parse(l) as { msg: string }).msg);
    expect(logged).toEqual(expect.arrayContaining(["stopping", "stopped"]));
  }, 30_000);

  it("honours UB_* environment variables, and a flag wins over its variable", async () => {
    const port = await freePort();
    const server = await serve(
      ["--max-sessions", "2"],
      cleanEnv({
        UB_PORT: String(port),
        UB_WORKER_PORT: "0",
        UB_HOST: "127.0.0.1",
        UB_MAX_SESSIONS: "1",
        UB_HISTORY_LIMIT: "2",
        UB_LOG_LEVEL: "warn",
      }),
    );
    expect(server.url).toBe(`http://127.0.0.1:${port}`);
    const c = grpcClient(server.url);
    const { sessionId } = await c.initializeSession({
      initialVariables: [
        { name: "x", type: "string", initialValue: encodeValue("string", "a").any },
      ],
    });
    await c.initializeSession({});
    const third = await c.initializeSession({}).then(
      () => "ok",
      (e: unknown) => Code[ConnectError.from(e).code],
    );
    expect(third).toBe("ResourceExhausted");
    for (const v of ["b", "c", "d"]) {
      await c.setVariable({
        sessionId,
        variableIdentifier: "x",
        value: encodeValue("string", v).any,
      });
    }
    const history = await c.getVariableHistory({ sessionId, variableIdentifier: "x" });
    expect(history.entries.map((e) => e.version)).toEqual([3, 2]);
    server.child.kill("SIGTERM");
    expect(await server.exited).toEqual({ code: 0, signal: null });
    // At warn, the info lines ("stopping", "stopped") are not written.
    expect(
      server
        .stdout()
        .split("\n")
        .filter((l) => l.startsWith("{")),
    ).toEqual([]);
  }, 30_000);
});

describe("unified-bridge serve --help", () => {
  it("lists every option of the server config with its variable and default", async () => {
    const { code, stdout, stderr } = await cli.run(["serve", "--help"]);
    expect([code, stderr]).toEqual([0, ""]);
    // One block per option: "  --flag <placeholder>", its description, then
    // "env UB_X, default D".
    const blocks = new Map<string, string>();
    for (const block of stdout.split(/\n(?= {2}--)/).slice(1)) {
      blocks.set(block.trim().split(/\s/, 1)[0] ?? "", block);
    }
    expect([...blocks.keys()].sort()).toEqual(optionEntries.map(([, o]) => `--${o.flag}`).sort());
    for (const [, option] of optionEntries) {
      const line = (blocks.get(`--${option.flag}`) ?? "")
        .split("\n")
        .find((l) => l.includes(`env ${option.env},`));
      expect(line?.trim()).toBe(`env ${option.env}, default ${formatDefault(option.default)}`);
    }
    // A flag's value shows in ps: the help steers the token elsewhere.
    const tokenHelp = (blocks.get("--worker-token") ?? "").replace(/\s+/g, " ");
    expect(tokenHelp).toContain("prefer --worker-token-file or the environment variable");
    expect(tokenHelp).toContain("openssl rand -base64 32");
  });

  it.each([
    [["serve", "--bogus"], {}, "unknown option --bogus"],
    [["serve", "--port", "99999"], {}, "--port"],
    [["serve", "--port"], {}, "--port needs a value"],
    [["serve", "stray"], {}, 'unexpected argument "stray"'],
    [["serve"], { UB_PORT: "abc" }, "UB_PORT"],
    [["serve"], { UB_LOG_LEVEL: "loud" }, "UB_LOG_LEVEL"],
    [["serve", "--store", "redis"], {}, '--store: "redis" is not a URL'],
    [["serve"], { UB_STORE: "redis://127.0.0.1:0" }, 'UB_STORE: port "0"'],
    [["serve", "--store-key-prefix", "has space"], {}, "--store-key-prefix"],
    [["serve", "--worker-token", "x".repeat(40)], {}, "--worker-token: must not be easy to guess"],
    [
      ["serve", "--worker-token-file", "/nonexistent/token"],
      {},
      "--worker-token-file: cannot read",
    ],
  ] as const)("%j %j exits 1 with a message naming %s", async (args, env, fragment) => {
    const { code, stdout, stderr } = await cli.run(args, cleanEnv(env));
    expect(code).toBe(1);
    expect(stdout).toBe("");
    expect(stderr).toMatch(/^unified-bridge: [^\n]+\n$/);
    expect(stderr).toContain(fragment);
  });

  it("says in one line, written last, which port is taken and which option chose it", async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      for (const [flag, named] of [
        ["--port", "--port (UB_PORT)"],
        ["--worker-port", "--worker-port (UB_WORKER_PORT)"],
        ["--admin-port", "--admin-port (UB_ADMIN_PORT)"],
      ] as const) {
        const ports = ["--port", "0", "--worker-port", "0", "--admin-port", "0"];
        ports[ports.indexOf(flag) + 1] = String(port);
        // Debug lines on stdout come before the reason, never after it.
        const { code, stdout, stderr } = await cli.run([
          "serve",
          ...ports,
          "--log-level",
          "debug",
          "--log-format",
          "json",
        ]);
        expect(code).toBe(1);
        expect(stdout).toContain('"msg":"tool registered"');
        expect(stderr).toBe(
          `unified-bridge: cannot listen on 127.0.0.1:${port}: the port is already in use (another bridge running?); choose another with ${named}\n`,
        );
      }
    } finally {
      blocker.close();
    }
  });

  it("writes readable lines with --log-format pretty, JSON with json, and refuses other formats", async () => {
    const pretty = await cli.serve([...freePortsArgs, "--log-format", "pretty"]);
    pretty.child.kill("SIGTERM");
    await pretty.exited;
    const stopping = pretty
      .stdout()
      .split("\n")
      .find((line) => line.includes("stopping"));
    // e.g. `[19:24:54.451] INFO: stopping {"signal":"SIGTERM","graceMs":10000}`
    expect(stopping).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: stopping \{"signal":"SIGTERM",/);

    const json = await cli.serve([...freePortsArgs, "--log-format", "json"]);
    json.child.kill("SIGTERM");
    await json.exited;
    const line = json
      .stdout()
      .split("\n")
      .find((l) => l.includes("stopping"));
    expect(JSON.parse(line ?? "")).toMatchObject({ level: "info", msg: "stopping" });

    const refused = await cli.run(["serve", "--log-format", "xml"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("must be one of auto, json, pretty");
  });
});

// Tests that need the Redis store itself run once it is part of the build;
// the others hold with or without it (without, the store cannot be loaded).
const hasRedisStore = existsSync(new URL("../../src/server/store/redis-store.ts", import.meta.url));

describe("unified-bridge serve --store <redis-url>", () => {
  it("exits 1 within seconds with the URL, password hidden, when Redis cannot be reached", async () => {
    const port = await freePort();
    const t0 = performance.now();
    const { code, stdout, stderr } = await cli.run([
      "serve",
      "--port",
      "0",
      "--store",
      `redis://alice:s3cret-pw@127.0.0.1:${port}/0`,
    ]);
    // The default connect timeout is 5 s; the loader gives up 2 s after it at the latest.
    expect(performance.now() - t0).toBeLessThan(9000);
    expect(code).toBe(1);
    expect(stdout).toBe("");
    expect(stderr).toMatch(/^unified-bridge: [^\n]+\n$/);
    expect(stderr).toContain(
      `unified-bridge: cannot open the Redis store at redis://alice:***@127.0.0.1:${port}/0: nothing accepts connections there (connection refused): is redis-server running, and is --store right?`,
    );
    expect(`${stdout}${stderr}`).not.toContain("s3cret");
  });

  it.skipIf(!hasRedisStore)(
    "gives up after --store-connect-timeout-ms on a Redis that accepts but never answers",
    async () => {
      const silent = await startTcpProbe();
      try {
        const t0 = performance.now();
        const { code, stderr } = await cli.run([
          "serve",
          "--port",
          "0",
          "--store",
          `redis://:s3cret-pw@${silent.address}`,
          "--store-connect-timeout-ms",
          "500",
        ]);
        expect(performance.now() - t0).toBeLessThan(6000);
        expect(code).toBe(1);
        expect(stderr).toContain(`cannot open the Redis store at redis://:***@${silent.address}: `);
        expect(stderr).not.toContain("s3cret");
        expect(silent.connections).toBeGreaterThanOrEqual(1);
      } finally {
        await silent.close();
      }
    },
  );

  it("refuses a malformed URL at startup, before connecting anywhere, without echoing its password", async () => {
    const probe = await startTcpProbe();
    try {
      for (const [args, env, fragment] of [
        [["--store", `redis://alice:s3cret-pw@${probe.address}/db`], {}, '--store: path "/db"'],
        [[], { UB_STORE: `redis://alice:s3cret-pw@${probe.address}?tls=1` }, "UB_STORE: "],
        [["--store", `http://alice:s3cret-pw@${probe.address}`], {}, '--store: scheme "http:"'],
        [["--store", `redis://alice:s3cr/et@${probe.address}`], {}, "percent-encoded"],
      ] as const) {
        const { code, stdout, stderr } = await cli.run(["serve", ...args], cleanEnv(env));
        expect([code, stdout]).toEqual([1, ""]);
        expect(stderr).toMatch(/^unified-bridge: [^\n]+\n$/);
        expect(stderr).toContain(fragment);
        expect(stderr).not.toMatch(/s3cr/);
      }
      expect(probe.connections).toBe(0);
    } finally {
      await probe.close();
    }
  });

  it.skipIf(!hasRedisStore)(
    "serves from Redis: two bridges share sessions, /healthz follows Redis, SIGTERM exits 0",
    async () => {
      const redis = await startRedis();
      try {
        const store = `${redis.url}/0`;
        const args = ["--port", "0", "--worker-port", "0", "--admin-port", "0"];
        const prefix = ["--store", store, "--store-key-prefix", "cli-test:"];
        const a = await serve([...args, ...prefix]);
        const b = await serve([...args, ...prefix]);
        expect(a.stdout()).toContain(
          `; store: ${redis.url}/0 (key prefix cli-test:); access: session-id; workers: `,
        );

        const { sessionId } = await grpcClient(a.url).initializeSession({
          initialVariables: [
            { name: "x", type: "string", initialValue: encodeValue("string", "from a").any },
          ],
        });
        const seen = await grpcClient(b.url).getVariable({ sessionId, variableIdentifier: "x" });
        expect(seen.variable?.name).toBe("x");

        const health = async () => {
          const res = await fetch(`${a.adminUrl}/healthz`);
          return [res.status, ((await res.json()) as { store?: string }).store];
        };
        expect(await health()).toEqual([200, "ok"]);
        await redis.kill();
        expect(await until(health, [503, "unavailable"])).toEqual([503, "unavailable"]);
        await redis.restart();
        expect(await until(health, [200, "ok"])).toEqual([200, "ok"]);

        for (const served of [a, b]) served.child.kill("SIGTERM");
        expect(await a.exited).toEqual({ code: 0, signal: null });
        expect(await b.exited).toEqual({ code: 0, signal: null });
      } finally {
        await redis.stop();
      }
    },
    30_000,
  );
});

/** Polls `probe` (every 100 ms, at most 10 s) until it returns `expected`; returns the last value. */
async function until<T>(probe: () => Promise<T>, expected: T): Promise<T> {
  let value = await probe();
  const same = (v: T) => JSON.stringify(v) === JSON.stringify(expected);
  await waitFor(
    async () => {
      if (same(value)) return;
      value = await probe();
      if (!same(value)) throw new Error("not yet");
    },
    { timeoutMs: 10_000, intervalMs: 100 },
  ).catch(() => undefined); // the caller's assertion reports the last value
  return value;
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  const { port } = s.address() as net.AddressInfo;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}
