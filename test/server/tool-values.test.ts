/**
 * The StringValue Anys of tool values, as peers receive them from a real
 * bridge: well-formed google.protobuf.StringValue messages wherever
 * snakepit's Python workers do not read them (so registry-based protobuf
 * JSON conversion, as buf curl and grpcurl do it, decodes every reply), and
 * the raw JSON form where they do (tool results over gRPC, parameters
 * forwarded to a worker). See src/server/tools/tool-value-form.ts.
 */
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { create, createRegistry, toJson } from "@bufbuild/protobuf";
import { type Any, anyPack, StringValueSchema } from "@bufbuild/protobuf/wkt";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  BridgeService,
  ExecuteToolResponseSchema,
  GetExposedElixirToolsResponseSchema,
  InitializeSessionResponseSchema,
} from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { decodeJsonAny, encodeJsonAny } from "../../src/values/index.js";
import { type RunningBridge, startBridge } from "../support/bridge.js";

const STRING_VALUE = "type.googleapis.com/google.protobuf.StringValue";
/** What a JSON converter knows: the well-known StringValue, nothing of snakepit's. */
const registry = createRegistry(StringValueSchema);
const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

const workerToken = "tool-values-suite-worker-token-0123456789";
let bridge: RunningBridge;
/** A gRPC worker hosting `echo`: records the parameter bytes it receives. */
let worker: { port: number; received: Any[]; close(): Promise<void> };

beforeAll(async () => {
  const received: Any[] = [];
  const server = http2.createServer(
    connectNodeAdapter({
      routes: (router) =>
        router.service(BridgeService, {
          executeTool(req) {
            const value = req.parameters.value;
            if (value !== undefined) received.push(value);
            return { success: true, result: encodeJsonAny(decodeJsonAny(value), "raw-json") };
          },
        }),
    }),
  );
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  worker = {
    port: (server.address() as AddressInfo).port,
    received,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
  bridge = await startBridge({ workerToken });
});

afterAll(async () => {
  await bridge?.stop();
  await worker?.close();
});

describe.each(["connect", "grpc-web", "grpc"] as const)("tool specs over %s", (protocol) => {
  it("carry parameter defaults as well-formed StringValues a JSON converter decodes", async () => {
    const c = bridge.client(protocol);
    const init = await c.initializeSession({});
    const json = toJson(InitializeSessionResponseSchema, init, { registry }) as {
      availableTools: Record<string, { parameters: { name: string; defaultValue?: unknown }[] }>;
    };
    const history = json.availableTools.conversation_history?.parameters.find(
      (p) => p.name === "last",
    );
    expect(history?.defaultValue).toEqual({ "@type": STRING_VALUE, value: "0" });

    const exposed = await c.getExposedElixirTools({ sessionId: init.sessionId });
    const listed = toJson(GetExposedElixirToolsResponseSchema, exposed, { registry }) as {
      tools: { name: string; parameters: { name: string; defaultValue?: unknown }[] }[];
    };
    const exporter = listed.tools.find((t) => t.name === "export_variables");
    expect(exporter?.parameters[0]?.defaultValue).toEqual({ "@type": STRING_VALUE, value: '"*"' });
  });
});

describe("tool results", () => {
  const append = (protocol: "connect" | "grpc-web" | "grpc") => async () => {
    const c = bridge.client(protocol);
    const { sessionId } = await c.initializeSession({});
    return c.executeTool({
      sessionId,
      toolName: "conversation_append",
      parameters: { role: encodeJsonAny("user"), content: encodeJsonAny("hi") },
    });
  };

  it.each(["connect", "grpc-web"] as const)(
    "reach %s callers as well-formed StringValues",
    async (protocol) => {
      const res = await append(protocol)();
      expect(res.success, res.errorMessage).toBe(true);
      const json = toJson(ExecuteToolResponseSchema, res, { registry }) as {
        result: { "@type": string; value: string };
      };
      expect(json.result["@type"]).toBe(STRING_VALUE);
      expect(JSON.parse(json.result.value)).toMatchObject({ count: 1 });
    },
  );

  it("reach gRPC callers in the raw JSON form snakepit's Python client reads", async () => {
    const res = await append("grpc")();
    expect(res.result?.typeUrl).toBe(STRING_VALUE);
    expect(JSON.parse(text(res.result?.value ?? new Uint8Array()))).toMatchObject({ count: 1 });
  });
});

describe("parameters forwarded to a worker", () => {
  it("are in the raw JSON form whichever form the caller sent", async () => {
    const c = bridge.client("connect");
    const { sessionId } = await c.initializeSession({});
    const registered = await c.registerTools(
      {
        sessionId,
        workerId: "echo-worker",
        tools: [
          {
            name: "echo",
            description: "Returns its value.",
            parameters: [{ name: "value", type: "string", required: true }],
            metadata: { worker_address: `127.0.0.1:${worker.port}` },
          },
        ],
      },
      { headers: { authorization: `Bearer ${workerToken}` } },
    );
    expect(registered.success, registered.errorMessage).toBe(true);
    const sent = [
      encodeJsonAny("well-formed"),
      encodeJsonAny("raw", "raw-json"),
      anyPack(StringValueSchema, create(StringValueSchema, { value: '"packed by anyPack"' })),
    ];
    for (const value of sent) {
      const res = await c.executeTool({ sessionId, toolName: "echo", parameters: { value } });
      expect(res.success, res.errorMessage).toBe(true);
    }
    expect(worker.received.map((a) => [a.typeUrl, text(a.value)])).toEqual([
      [STRING_VALUE, '"well-formed"'],
      [STRING_VALUE, '"raw"'],
      [STRING_VALUE, '"packed by anyPack"'],
    ]);
    // And the worker's raw result reaches a Connect caller well-formed.
    const res = await c.executeTool({
      sessionId,
      toolName: "echo",
      parameters: { value: encodeJsonAny({ a: [1] }) },
    });
    const json = toJson(ExecuteToolResponseSchema, res, { registry }) as {
      result: { value: string };
    };
    expect(JSON.parse(json.result.value)).toEqual({ a: [1] });
  });
});
