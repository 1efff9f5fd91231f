/**
 * Tool values between a real, stock snakepit v0.13.0 worker (its
 * grpc_server.py and showcase adapter, by Debian's python3) and Node
 * clients over Connect, gRPC-Web and gRPC, through a real bridge: the
 * worker's `snakepit.map` / `snakepit.float` results decoded by the client,
 * its binary_result relayed, the correlation id carried both ways, and its
 * call_elixir_tool's google.protobuf.Value parameters read by the bridge.
 *
 * The stock worker registers its tools without metadata.worker_address,
 * which the bridge refuses, so the test registers them on its behalf on the
 * bridge's worker listener (with the worker's port), as a launcher does; the
 * worker calls back that listener as its host. Skipped, saying why, when
 * snakepit's code is not at /work/shared/snakepit.
 */
import { create, fromJson, toBinary } from "@bufbuild/protobuf";
import { type Any, AnySchema, anyPack, ValueSchema } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createSessionContext, type SessionContext } from "../../src/client/index.js";
import { createLogger } from "../../src/server/index.js";
import { decodeJsonAny, encodeJsonAny } from "../../src/values/index.js";
import { type Protocol, protocols, type RunningBridge, startBridge } from "../support/bridge.js";
import {
  prepareV013Tree,
  startV013Worker,
  type V013Tree,
  type V013Worker,
  v013Unavailable,
} from "../support/snakepit-v013.js";
import { until } from "../support/wait.js";

const unavailable = v013Unavailable();
const CORRELATION = "x-snakepit-correlation-id";
const toolNames = [
  "ping",
  "add",
  "echo",
  "make_blob",
  "telemetry_demo",
  "request_context",
  "call_bridge_tool",
];

let bridge: RunningBridge;
let tree: V013Tree | undefined;
let worker: V013Worker | undefined;
/** The bridge's log lines, parsed. */
const logLines: Record<string, unknown>[] = [];

describe.skipIf(unavailable !== undefined)(
  `a stock snakepit v0.13.0 worker behind the bridge${unavailable === undefined ? "" : ` (skipped: ${unavailable})`}`,
  () => {
    beforeAll(async () => {
      bridge = await startBridge({
        logger: createLogger({
          level: "info",
          sink: { write: (line: string) => logLines.push(JSON.parse(line)) },
        }),
      });
      tree = await prepareV013Tree();
      worker = await startV013Worker(tree, new URL(bridge.workerUrl).host);
      const registered = await bridge.workerClient().registerTools({
        sessionId: "",
        workerId: "snakepit-v013",
        tools: toolNames.map((name) => ({
          name,
          description: `v0.13 showcase: ${name}`,
          metadata: { worker_address: worker?.address ?? "" },
        })),
      });
      expect(Object.keys(registered.toolIds).sort()).toEqual([...toolNames].sort());
    }, 120_000);

    afterAll(async () => {
      await worker?.stop();
      await bridge?.stop();
      await tree?.remove();
    });

    const contexts: SessionContext[] = [];
    afterAll(async () => {
      await Promise.all(contexts.map((c) => c.close()));
    });
    const contextOver = async (protocol: Protocol) => {
      const ctx = await createSessionContext({ transport: bridge.transport(protocol) });
      contexts.push(ctx);
      return ctx;
    };

    describe.each(protocols)("over %s", (protocol) => {
      it("ping: the worker's snakepit.map result is a plain object", async () => {
        const ctx = await contextOver(protocol);
        const result = await ctx.callToolResult("ping", { message: `hi over ${protocol}` });
        expect(result.value).toEqual({
          message: `hi over ${protocol}`,
          timestamp: expect.any(String),
        });
        expect(result.binary).toBeUndefined();
        // The worker really answered in v0.13's form: the bridge relays the type URL.
        const raw = await bridge.client(protocol).executeTool({
          sessionId: ctx.sessionId,
          toolName: "ping",
          parameters: { message: encodeJsonAny("x") },
        });
        expect(raw.result?.typeUrl).toBe("type.googleapis.com/snakepit.map");
      });

      it("add: the worker's snakepit.float result is a number", async () => {
        const ctx = await contextOver(protocol);
        expect(await ctx.callTool("add", { a: 2, b: 3.5 })).toBe(5.5);
        expect(await ctx.callTool("add", { a: -1, b: 1 })).toBe(0);
        const raw = await bridge.client(protocol).executeTool({
          sessionId: ctx.sessionId,
          toolName: "add",
          parameters: { a: encodeJsonAny(1), b: encodeJsonAny(2) },
        });
        expect(raw.result?.typeUrl).toBe("type.googleapis.com/snakepit.float");
        expect(decodeJsonAny(raw.result)).toBe(3);
      });

      it("echo: nested arguments come back as they were sent", async () => {
        const ctx = await contextOver(protocol);
        const args = { text: "é ✓", list: [1, { deep: [true, null] }], n: -0.25 };
        expect(await ctx.callTool("echo", args)).toEqual({ echoed: args });
      });

      it("make_blob: the binary result reaches the caller byte for byte", async () => {
        const ctx = await contextOver(protocol);
        const result = await ctx.callToolResult("make_blob", { size: 300 });
        expect(result.value).toEqual({ size: 300, format: "raw" });
        const expected = Uint8Array.from({ length: 300 }, (_, i) => i % 256);
        expect(result.binary).toEqual(expected);
      });

      it("carries the caller's correlation id to the worker (header and metadata) and the log", async () => {
        const ctx = await contextOver(protocol);
        const id = `cid-${protocol}-${Date.now()}`;
        const client = bridge.client(protocol);
        let answered: string | null = null;
        const demo = await client.executeTool(
          {
            sessionId: ctx.sessionId,
            toolName: "telemetry_demo",
            parameters: { delay_ms: encodeJsonAny(1) },
          },
          { headers: { [CORRELATION]: id }, onHeader: (h) => (answered = h.get(CORRELATION)) },
        );
        // The stock tool reports the id its telemetry span took from the header.
        expect(decodeJsonAny(demo.result)).toMatchObject({ correlation_id: id });
        expect(answered).toBe(id);
        const seen = await client.executeTool(
          { sessionId: ctx.sessionId, toolName: "request_context", parameters: {} },
          { headers: { [CORRELATION]: id } },
        );
        expect(decodeJsonAny(seen.result)).toEqual({
          header: id,
          metadata: { correlation_id: id },
        });
        await until(
          () =>
            logLines.some(
              (l) =>
                l.msg === "tool executed" &&
                l.tool === "request_context" &&
                l.correlation_id === id,
            ),
          "the bridge's log line of the call, with its correlation id",
        );
      });

      it("mints a correlation id when the caller sends none, the same everywhere", async () => {
        const ctx = await contextOver(protocol);
        let minted: string | null = null;
        const seen = await bridge
          .client(protocol)
          .executeTool(
            { sessionId: ctx.sessionId, toolName: "request_context", parameters: {} },
            { onHeader: (h) => (minted = h.get(CORRELATION)) },
          );
        expect(minted).toMatch(/^[0-9a-f]{32}$/);
        expect(decodeJsonAny(seen.result)).toEqual({
          header: minted,
          metadata: { correlation_id: minted },
        });
        await until(
          () => logLines.some((l) => l.msg === "tool executed" && l.correlation_id === minted),
          "the log line with the minted id",
        );
      });

      it("the worker's call_elixir_tool (google.protobuf.Value numbers) runs a bridge tool", async () => {
        const ctx = await contextOver(protocol);
        await ctx.register("counter", "integer", 1);
        // v0.13 sends delta as JSON text under google.protobuf.Value and
        // name as a packed StringValue.
        const out = await ctx.callTool("call_bridge_tool", {
          elixir_tool: "increment_variable",
          name: "counter",
          delta: 2,
        });
        expect(out).toEqual({
          tool: "increment_variable",
          result: { name: "counter", value: 3, version: 1 },
        });
        expect(await ctx.get("counter")).toBe(3);
      });
    });

    describe("hostile values on the public port", () => {
      const packedValue = (json: unknown): Any =>
        anyPack(ValueSchema, fromJson(ValueSchema, json as never));
      /** A Value holding a list holding a list … `levels` deep. */
      function deepValue(levels: number): Any {
        let json: unknown = 1;
        for (let i = 0; i < levels; i++) json = [json];
        return packedValue(json);
      }
      const nanValue = create(AnySchema, {
        typeUrl: "type.googleapis.com/google.protobuf.Value",
        value: toBinary(
          ValueSchema,
          create(ValueSchema, { kind: { case: "numberValue", value: Number.NaN } }),
        ),
      });
      const hugeList = (() => {
        // 1.5 million empty Values: 3 MB, under the 4 MiB request limit.
        const bytes = new Uint8Array(3_000_000);
        for (let i = 0; i < bytes.length; i += 2) bytes[i] = 0x0a;
        return create(AnySchema, {
          typeUrl: "type.googleapis.com/google.protobuf.ListValue",
          value: bytes,
        });
      })();

      it.each([
        ["a Value nested 80 levels", () => deepValue(80), "nests deeper than 64 levels"],
        ["a packed NaN", () => nanValue, "holds the number NaN"],
        [
          "Python's NaN in a Value's JSON text",
          () =>
            create(AnySchema, {
              typeUrl: "type.googleapis.com/google.protobuf.Value",
              value: new TextEncoder().encode("NaN"),
            }),
          "NaN and Infinity are not JSON",
        ],
        ["a list of 1.5 million nulls", () => hugeList, "must be of type number"],
      ])(
        "%s is INVALID_ARGUMENT for a bridge tool, and the bridge serves on",
        async (_what, make, message) => {
          const ctx = await contextOver("grpc");
          await ctx.register("n", "integer", 0);
          const response = await bridge.client("grpc").executeTool({
            sessionId: ctx.sessionId,
            toolName: "increment_variable",
            parameters: { name: encodeJsonAny("n"), delta: make() },
          });
          expect(response.success).toBe(false);
          expect(response.metadata.error_kind).toBe("invalid_arguments");
          expect(response.errorMessage).toContain(message);
          expect((await bridge.client("grpc").ping({ message: "still here" })).message).toBe(
            "still here",
          );
        },
      );
    });
  },
);
