/**
 * The bridge as the host of unmodified snakepit Python workers (v0.4.3 and
 * v0.13.0, the showcase adapter): it starts them, waits for their ready
 * signal, discovers their tools, lists them to every session and routes
 * their calls from Connect, gRPC-Web and gRPC clients, keeping each
 * session on one worker.
 */
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ToolRegistrationSchema } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { encodeJsonAny } from "../../src/values/index.js";
import { protocols, type RunningBridge, startBridge } from "../support/bridge.js";
import { waitFor } from "../support/wait.js";
import {
  codeOf,
  copySnakepit,
  missing,
  readyWorkers,
  resultJson,
  type SnakepitCopy,
  showcaseTools,
  toolParams,
  versions,
  workersOf,
} from "./snakepit.js";

const decoder = new TextDecoder();

describe.skipIf(missing !== undefined)(
  `stock snakepit workers in the pool ${missing ?? ""}`,
  () => {
    describe.each(versions)("snakepit %s", (version) => {
      let copy: SnakepitCopy;
      let bridge: RunningBridge;

      beforeAll(async () => {
        copy = await copySnakepit(version);
        bridge = await startBridge({
          workers: {
            command: copy.command,
            count: 2,
            // v0.13's showcase also has a tool that emits telemetry events.
            tools: version === "v0.4.3" ? showcaseTools : [...showcaseTools, "telemetry_demo"],
          },
        });
        await readyWorkers(bridge.adminUrl, 2);
      }, 60_000);

      afterAll(async () => {
        await bridge?.stop();
        await copy?.remove();
      }, 30_000);

      it("lists the tools the workers registered and the declared ones, to every session", async () => {
        const workers = await workersOf(bridge.adminUrl);
        for (const w of workers) {
          expect(w).toMatchObject({ kind: "pool", state: "ready", restarts: 0, lastError: null });
          expect(w.pid).toBeGreaterThan(0);
          expect(w.address).toMatch(/^127\.0\.0\.1:\d+$/);
          // What BaseAdapter registers: the @tool methods.
          expect(w.tools).toEqual(expect.arrayContaining(["adapter_info", "echo", "stream_data"]));
        }
        const session = await bridge.client().initializeSession({});
        const names = Object.keys(session.availableTools);
        expect(names).toEqual(expect.arrayContaining([...showcaseTools, "echo", "adapter_info"]));
        expect(names).not.toContain("execute_tool");
        expect(session.availableTools.stream_data?.supportsStreaming).toBe(true);
        const exposed = await bridge
          .client()
          .getExposedElixirTools({ sessionId: session.sessionId });
        expect(exposed.tools.map((t) => t.name)).toEqual(expect.arrayContaining(["ping", "echo"]));
      });

      it.each(protocols)("runs ping, add and echo called over %s", async (protocol) => {
        const client = bridge.client(protocol);
        const { sessionId } = await client.initializeSession({});
        const ping = await client.executeTool({ sessionId, toolName: "ping" });
        expect(ping.errorMessage).toBe("");
        expect(ping.success).toBe(true);
        // The worker's own type (snakepit.map), its JSON carried as is.
        expect(ping.result?.typeUrl).toBe("type.googleapis.com/snakepit.map");
        expect(resultJson(ping.result)).toMatchObject({ message: "pong" });

        const add = await client.executeTool({
          sessionId,
          toolName: "add",
          parameters: toolParams({ a: 2, b: 40 }),
        });
        expect(add.success).toBe(true);
        // v0.4.3 infers an integer, v0.13 always a float.
        expect(add.result?.typeUrl).toMatch(/snakepit\.(integer|float)$/);
        expect(resultJson(add.result)).toBe(42);

        const echo = await client.executeTool({
          sessionId,
          toolName: "echo",
          parameters: toolParams({ message: "héllo", n: [1, { x: true }] }),
        });
        expect(echo.success).toBe(true);
        expect(resultJson(echo.result)).toEqual({
          echoed: { message: "héllo", n: [1, { x: true }] },
        });
      });

      it.each(protocols)("streams stream_progress over %s", async (protocol) => {
        const client = bridge.client(protocol);
        const { sessionId } = await client.initializeSession({});
        const steps: unknown[] = [];
        let finals = 0;
        for await (const chunk of client.executeStreamingTool({
          sessionId,
          toolName: "stream_progress",
          parameters: toolParams({ steps: 3, ...(version === "v0.13.0" ? { delay_ms: 10 } : {}) }),
          stream: true,
        })) {
          if (chunk.data.length > 0) steps.push(JSON.parse(decoder.decode(chunk.data)));
          if (chunk.isFinal) finals++;
        }
        expect(steps.map((s) => (s as { step: number }).step)).toEqual([1, 2, 3]);
        expect(finals).toBe(1);
      });

      it("keeps a session's worker-side state on one worker, and sessions apart", async () => {
        const client = bridge.client("grpc");
        const a = (await client.initializeSession({})).sessionId;
        const b = (await client.initializeSession({})).sessionId;
        const counter = async (sessionId: string) =>
          resultJson(
            (await client.executeTool({ sessionId, toolName: "increment_counter" })).result,
          );
        expect(await counter(a)).toEqual({ value: 1 });
        expect(await counter(b)).toEqual({ value: 1 });
        expect(await counter(a)).toEqual({ value: 2 });
        expect(await counter(a)).toEqual({ value: 3 });
        expect(await counter(b)).toEqual({ value: 2 });
        // The two sessions went to the two workers (the least loaded).
        const workers = await workersOf(bridge.adminUrl);
        expect(workers.every((w) => w.sessions >= 1)).toBe(true);
      });

      it("reports a tool's failure in-band, and a tool nobody serves as not found", async () => {
        const client = bridge.client();
        const { sessionId } = await client.initializeSession({});
        const bad = await client.executeTool({
          sessionId,
          toolName: "add",
          parameters: toolParams({ a: 1 }),
        });
        expect(bad.success).toBe(false);
        expect(bad.errorMessage).toMatch(/missing 1 required positional argument: 'b'/);
        const none = await client.executeTool({ sessionId, toolName: "no_such_tool" });
        expect(none).toMatchObject({
          success: false,
          errorMessage: "Tool not found: no_such_tool",
        });
      });

      it("keeps the pool's tool names for the pool: a self-registering worker cannot take one", async () => {
        const refused = await codeOf(
          bridge.workerClient().registerTools({
            workerId: "other-worker",
            tools: [
              create(ToolRegistrationSchema, {
                name: "echo",
                description: "impostor",
                metadata: { worker_address: "127.0.0.1:1" },
              }),
            ],
          }),
        );
        expect(refused.code).toBe(Code.AlreadyExists);
        expect(refused.message).toMatch(/tool of the bridge itself/);
      });

      it("answers a session's call only when the session may use the tool", async () => {
        const client = bridge.client();
        const { sessionId } = await client.initializeSession({ allowedTools: ["ping"] });
        await expect(client.executeTool({ sessionId, toolName: "ping" })).resolves.toMatchObject({
          success: true,
        });
        const denied = await codeOf(client.executeTool({ sessionId, toolName: "add" }));
        expect(denied.code).toBe(Code.PermissionDenied);
      });

      it("reads each v0.13 worker's telemetry into the bridge's metrics", async () => {
        const metrics = async () => (await fetch(`${bridge.adminUrl}/metrics`)).text();
        if (version === "v0.4.3") {
          // v0.4.3 has no StreamTelemetry: its readers never connect, and
          // after its UNIMPLEMENTED do not ask again (they would have by now:
          // the first retry comes after 250 ms). A negative check: no event
          // marks "did not ask again", so the wait spans several retries.
          await new Promise((r) => setTimeout(r, 1500));
          const text = await metrics();
          expect(text).not.toMatch(/bridge_worker_telemetry_stream_up\{[^}]*\} 1/);
          expect(text).not.toMatch(/bridge_worker_telemetry_reconnects_total\{[^}]*\} [1-9]/);
          return;
        }
        await waitFor(async () => {
          const text = await metrics();
          expect(text).toMatch(/bridge_worker_telemetry_stream_up\{worker="pool-1"\} 1/);
          expect(text).toMatch(/bridge_worker_telemetry_stream_up\{worker="pool-2"\} 1/);
        });
        const client = bridge.client();
        const { sessionId } = await client.initializeSession({});
        const demo = await client.executeTool({
          sessionId,
          toolName: "telemetry_demo",
          parameters: { delay_ms: encodeJsonAny(2) },
        });
        expect(demo.success, demo.errorMessage).toBe(true);
        // The worker's events of that call arrive as counted series.
        await waitFor(async () =>
          expect(await metrics()).toMatch(/bridge_worker_telemetry_events_total\{worker="pool-\d"/),
        );
      });
    });
  },
);
