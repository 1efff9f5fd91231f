/**
 * demo/server/serve.ts, the server of the compose file's opt-in demo
 * profile: started from source on Node 24 as the Dockerfile's `demo-bridge`
 * target starts it, on a real Redis, it lists the demo's tools, runs one,
 * takes the demo's larger requests, and exits 0 on SIGTERM.
 */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BridgeService } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { decodeJsonAny, decodeValue, encodeJsonAny, encodeValue } from "../../src/values/index.js";
import { cleanEnv, node } from "../support/cli.js";
import { startRedis, type TestRedis } from "../support/redis-server.js";

const root = fileURLToPath(new URL("../..", import.meta.url));

describe("demo/server/serve.ts", () => {
  let redis: TestRedis;

  beforeAll(async () => {
    redis = await startRedis();
  });

  afterAll(async () => {
    await redis?.stop();
  });

  it("serves the spam tools on the Redis store and exits 0 on SIGTERM", {
    timeout: 60_000,
  }, async () => {
    const child = spawn(
      node,
      [
        "--disable-warning=ExperimentalWarning",
        "--experimental-transform-types",
        "--import",
        "./scripts/ts-source-hooks.mjs",
        "demo/server/serve.ts",
        "serve",
        "--port",
        "0",
        "--worker-port",
        "0",
        "--admin-port",
        "0",
        "--store",
        redis.url,
      ],
      { cwd: root, env: cleanEnv() },
    );
    const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
    try {
      let out = "";
      let err = "";
      child.stdout.setEncoding("utf8");
      child.stderr.setEncoding("utf8");
      child.stderr.on("data", (chunk: string) => {
        err += chunk;
      });
      const ready = await new Promise<RegExpExecArray>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ready line:\n${out}${err}`)), 30_000);
        child.stdout.on("data", (chunk: string) => {
          out += chunk;
          const m = /^unified-bridge listening on (http:\/\/\S+) .*; store: (\S+)/m.exec(out);
          if (m !== null) {
            clearTimeout(timer);
            resolve(m);
          }
        });
        void exited.then((code) => {
          clearTimeout(timer);
          reject(new Error(`exited ${code}:\n${out}${err}`));
        });
      });
      expect(ready[2]).toBe(redis.url);
      const client = createClient(
        BridgeService,
        createGrpcTransport({ baseUrl: ready[1] as string }),
      );

      const session = await client.initializeSession({
        initialVariables: [
          {
            name: "tuning_runs",
            type: "string",
            initialValue: encodeValue("string", "").any,
            constraintsJson: JSON.stringify({ max_length: 400_000 }),
          },
        ],
      });
      expect(session.success).toBe(true);
      expect(Object.keys(session.availableTools)).toEqual(
        expect.arrayContaining(["spam_evaluate", "spam_classify", "spam_runs"]),
      );

      // The cheapest of them: spam_runs records a run in the session's variable.
      const reply = await client.executeTool({
        sessionId: session.sessionId,
        toolName: "spam_runs",
        parameters: Object.fromEntries(
          Object.entries({
            action: "start",
            run_id: "run-1",
            optimizer_id: "opt-1",
            owner: "tab-1",
            planned: 3,
            seed: 7,
          }).map(([k, v]) => [k, encodeJsonAny(v)]),
        ),
      });
      expect(reply.errorMessage).toBe("");
      expect(reply.success).toBe(true);
      expect(decodeJsonAny(reply.result)).toEqual({ ok: true });
      const runs = await client.getVariable({
        sessionId: session.sessionId,
        variableIdentifier: "tuning_runs",
      });
      expect(String(decodeValue(runs.variable?.value).value)).toContain("run-1");

      // The demo's request limit (16 MiB), not the CLI's default 4 MiB.
      const big = "x".repeat(6 * 1024 * 1024);
      const ping = await client.ping({ message: big });
      expect(ping.message).toContain(big);

      child.kill("SIGTERM");
      expect(await exited).toBe(0);
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
    }
  });
});
