/**
 * The worker token and the log against hostile callers, on the real CLI in
 * a process of its own: weak tokens stop start-up, a token read from a file
 * never shows in `ps`, wrong-token guesses from one client are throttled
 * without holding back another client's right token, and neither guesses
 * nor thousands of failing calls write a log line each.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BridgeService } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { cleanEnv, cliSuite, publicOnly, type ServedCli } from "../support/cli.js";

const cli = cliSuite();
/** What `openssl rand -base64 32` makes. */
const token = randomBytes(32).toString("base64");
let dir = "";
let tokenFile = "";

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "ub-tokens-"));
  tokenFile = path.join(dir, "worker-token");
  // As `openssl rand -base64 32 > file` writes it: with a trailing newline.
  await writeFile(tokenFile, `${token}\n`, { mode: 0o600 });
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const grpcClient = (url: string) =>
  createClient(BridgeService, createGrpcTransport({ baseUrl: url, defaultTimeoutMs: 10_000 }));

/** Headers of a call from `client` (behind the trusted proxy 127.0.0.1) with `bearer`. */
const from = (client: string, bearer?: string) => ({
  headers: {
    "x-forwarded-for": client,
    ...(bearer === undefined ? {} : { authorization: `Bearer ${bearer}` }),
  },
});

/** The log lines the server wrote after its ready line. */
function logLines(server: ServedCli): string[] {
  return server
    .stdout()
    .split("\n")
    .filter((l) => l.startsWith("{"));
}

/** Runs `call` `count` times, `width` at a time; returns each outcome's code name. */
async function repeat(
  count: number,
  width: number,
  call: (i: number) => Promise<unknown>,
): Promise<string[]> {
  const codes: string[] = new Array(count);
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < count) {
        const i = next++;
        try {
          await call(i);
          codes[i] = "OK";
        } catch (e) {
          codes[i] = Code[ConnectError.from(e).code];
        }
      }
    }),
  );
  return codes;
}

const tool = (name: string) => ({
  name,
  description: "",
  metadata: { worker_address: "127.0.0.1:50100" },
});

describe("a weak worker token", () => {
  it.each([
    ["one character repeated", "a".repeat(44)],
    ["a short pattern repeated", "abcdefghijk1".repeat(4)],
    ["few distinct characters", "0101001011100101010011101001010110100101"],
  ])(
    "stops start-up (%s), naming the flag and how to make a token",
    async (_, weak) => {
      const byFlag = await cli.run(["serve", ...publicOnly, "--worker-token", weak]);
      expect(byFlag.code).toBe(1);
      expect(byFlag.stderr).toMatch(/--worker-token: .*openssl rand -base64 32/);
      expect(byFlag.stderr).not.toContain(weak);

      const byEnv = await cli.run(["serve", ...publicOnly], cleanEnv({ UB_WORKER_TOKEN: weak }));
      expect(byEnv.code).toBe(1);
      expect(byEnv.stderr).toMatch(/UB_WORKER_TOKEN: .*openssl rand -base64 32/);

      const weakFile = path.join(dir, "weak");
      await writeFile(weakFile, `${weak}\n`);
      const byFile = await cli.run(["serve", ...publicOnly, "--worker-token-file", weakFile]);
      expect(byFile.code).toBe(1);
      expect(byFile.stderr).toMatch(/--worker-token-file: .*openssl rand -base64 32/);
      expect(byFile.stderr).not.toContain(weak);
    },
    60_000,
  );
});

describe("--worker-token-file", () => {
  it("makes a caller a worker with the file's token, which the process's command line never shows", async () => {
    const server = await cli.serve([...publicOnly, "--worker-token-file", tokenFile]);
    const cmdline = await readFile(`/proc/${server.pid}/cmdline`, "utf8");
    expect(cmdline).toContain("--worker-token-file");
    expect(cmdline).not.toContain(token);
    const c = grpcClient(server.url);
    const registered = await c.registerTools(
      { workerId: "w1", tools: [tool("from_file")] },
      { headers: { authorization: `Bearer ${token}` } },
    );
    expect(registered.success).toBe(true);
    const wrong = await c
      .registerTools(
        { workerId: "w1", tools: [tool("from_file")] },
        { headers: { authorization: `Bearer ${token}x` } },
      )
      .then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
    expect(wrong?.code).toBe(Code.Unauthenticated);
  }, 30_000);

  it("is read from UB_WORKER_TOKEN_FILE too", async () => {
    const server = await cli.serve(publicOnly, cleanEnv({ UB_WORKER_TOKEN_FILE: tokenFile }));
    const registered = await grpcClient(server.url).registerTools(
      { workerId: "w1", tools: [tool("from_env_file")] },
      { headers: { authorization: `Bearer ${token}` } },
    );
    expect(registered.success).toBe(true);
  }, 30_000);

  it("refuses a missing or empty file, and a token given both ways, naming the flags", async () => {
    const missing = await cli.run([
      "serve",
      ...publicOnly,
      "--worker-token-file",
      path.join(dir, "nowhere"),
    ]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/--worker-token-file: cannot read .*nowhere/);

    const emptyFile = path.join(dir, "empty");
    await writeFile(emptyFile, "\n");
    const empty = await cli.run(["serve", ...publicOnly, "--worker-token-file", emptyFile]);
    expect(empty.code).toBe(1);
    expect(empty.stderr).toMatch(/--worker-token-file: .*empty/);

    const both = await cli.run(
      ["serve", ...publicOnly, "--worker-token-file", tokenFile],
      cleanEnv({ UB_WORKER_TOKEN: token }),
    );
    expect(both.code).toBe(1);
    expect(both.stderr).toMatch(/--worker-token .*--worker-token-file .*one of them/);
    expect(both.stderr).not.toContain(token);
  }, 60_000);
});

describe("guessing the worker token", () => {
  it("1,000 wrong tokens from one client: refused without comparison after the threshold, in a bounded number of log lines, while another client's right token works", async () => {
    const server = await cli.serve(
      [...publicOnly, "--trusted-proxy", "127.0.0.1"],
      cleanEnv({ UB_WORKER_TOKEN: token }),
    );
    const c = grpcClient(server.url);
    const before = logLines(server).length;
    const guess = (i: number) =>
      c.registerTools(
        { workerId: "guesser", tools: [tool(`guess_${i}`)] },
        from("10.9.9.9", randomBytes(32).toString("base64")),
      );
    const started = performance.now();
    const codes = await repeat(1000, 1, guess);
    const seconds = (performance.now() - started) / 1000;
    const counts = Object.fromEntries(
      [...new Set(codes)].map((code) => [code, codes.filter((x) => x === code).length]),
    );
    // A negative check (an upper bound on lines): nothing marks the server's
    // last line written, so a short wait lets late ones reach its stdout.
    await new Promise((r) => setTimeout(r, 300));
    const lines = logLines(server).length - before;
    console.log(
      `1,000 wrong tokens: ${JSON.stringify(counts)} in ${seconds.toFixed(1)} s, ${lines} log lines`,
    );
    // The first few are compared and refused as wrong; then the client is
    // told to wait, whatever it sends.
    expect(codes.slice(0, 10)).toEqual(new Array(10).fill("Unauthenticated"));
    expect(codes.slice(10)).toEqual(new Array(990).fill("ResourceExhausted"));
    const waiting = await guess(0).then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(waiting?.rawMessage).toMatch(/wrong worker tokens.* wait \d+ s/);
    // Not even the right token is compared during the cool-down.
    const right = await c
      .registerTools({ workerId: "w1", tools: [tool("right")] }, from("10.9.9.9", token))
      .then(
        () => "OK",
        (e: unknown) => Code[ConnectError.from(e).code],
      );
    expect(right).toBe("ResourceExhausted");
    // Another client's right token works all the same.
    const other = await c.registerTools(
      { workerId: "w2", tools: [tool("other")] },
      from("10.7.7.7", token),
    );
    expect(other.success).toBe(true);
    expect(lines).toBeLessThanOrEqual(10);
  }, 60_000);
});

describe("failing calls", () => {
  it("thousands of failing tool calls and refused registrations from one client write a bounded number of log lines; metrics count each", async () => {
    const server = await cli.serve(["--port", "0", "--worker-port", "off", "--admin-port", "0"]);
    const c = grpcClient(server.url);
    const { sessionId } = await c.initializeSession({});
    const before = logLines(server).length;
    const calls = 3000;
    const started = performance.now();
    const codes = await repeat(calls, 16, async (i) => {
      if (i % 3 === 0) {
        // No token at all: a public caller's registration is refused.
        await c.registerTools({ workerId: "w", tools: [tool(`t${i}`)] });
        return;
      }
      const reply = await c.executeTool({ sessionId, toolName: `missing_${i}` });
      if (reply.success) throw new Error("an unregistered tool ran");
    });
    const seconds = (performance.now() - started) / 1000;
    expect(codes.filter((x) => x === "PermissionDenied")).toHaveLength(calls / 3);
    expect(codes.filter((x) => x === "OK")).toHaveLength((calls * 2) / 3);
    // A successful execution is still logged, one line each (the audit log).
    const ok = await c.executeTool({ sessionId, toolName: "conversation_history" });
    expect(ok.success).toBe(true);

    // A negative check (an upper bound on lines): nothing marks the server's
    // last line written, so a short wait lets late ones reach its stdout.
    await new Promise((r) => setTimeout(r, 300));
    const lines = logLines(server).length - before;
    expect(
      logLines(server).filter((l) =>
        /"tool executed".*"tool":"conversation_history"|"tool":"conversation_history".*"tool executed"/.test(
          l,
        ),
      ),
    ).toHaveLength(1);
    console.log(`log lines for ${calls} failing calls in ${seconds.toFixed(1)} s: ${lines}`);
    expect(lines).toBeLessThanOrEqual(10);
    const metrics = await (await fetch(`${server.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(
      new RegExp(
        `bridge_tool_executions_total\\{tool="\\(unregistered\\)",outcome="not_found"\\} ${(calls * 2) / 3}\\b`,
      ),
    );
    expect(metrics).toMatch(
      new RegExp(
        `bridge_tool_registrations_total\\{action="register",outcome="denied"\\} ${calls / 3}\\b`,
      ),
    );
  }, 60_000);
});
