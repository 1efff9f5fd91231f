/**
 * The tool RPCs against a real server: server-side, streaming,
 * session-scoped and remote worker tools.
 *
 * (Over 400 lines: the four kinds share one server and its sessions.)
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { anyPack, StringValueSchema } from "@bufbuild/protobuf/wkt";
import { Code, type ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ToolChunk } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import {
  decodeJsonAny,
  encodeJsonAny,
  encodeValue,
  type JsonValue,
} from "../../src/values/index.js";
import { type RunningBridge, startBridge } from "../support/bridge.js";
import { rejectionOf } from "../support/errors.js";

let bridge: RunningBridge;
beforeAll(async () => {
  bridge = await startBridge();
  bridge.server.registerTool({
    name: "fail_always",
    description: "Throws.",
    handler: () => {
      throw new Error("the model is offline");
    },
  });
  bridge.server.registerTool({
    name: "count_to",
    description: "Streams 1..n, fails at `fail_at` if given.",
    parameters: [
      { name: "n", type: "integer", required: true },
      { name: "fail_at", type: "integer", default: 0 },
    ],
    async *stream(args) {
      for (let i = 1; i <= Number(args.n); i++) {
        if (i === args.fail_at) throw new Error(`failed at ${i}`);
        yield i;
      }
      return { total: Number(args.n) };
    },
  });
});
afterAll(async () => {
  await bridge.stop();
});

const params = (o: Record<string, JsonValue>) =>
  Object.fromEntries(Object.entries(o).map(([k, v]) => [k, encodeJsonAny(v)]));
const session = async (allowedTools: string[] = []) =>
  (await bridge.client().initializeSession({ allowedTools })).sessionId;
const text = (chunk: ToolChunk | undefined) =>
  chunk === undefined || chunk.data.length === 0
    ? null
    : JSON.parse(new TextDecoder().decode(chunk.data));

async function chunks(stream: AsyncIterable<ToolChunk>) {
  const out: ToolChunk[] = [];
  for await (const c of stream) out.push(c);
  return out;
}

describe("server-side tools", () => {
  it("lists the exposed tools with their parameter specs", async () => {
    const sessionId = await session();
    const { tools } = await bridge.client("grpc").getExposedElixirTools({ sessionId });
    const names = tools.map((t) => t.name);
    expect(names).toEqual(
      expect.arrayContaining(["conversation_append", "increment_variable", "export_variables"]),
    );
    const append = tools.find((t) => t.name === "conversation_append");
    expect(append?.parameters.map((p) => [p.name, p.type, p.required])).toEqual([
      ["role", "string", true],
      ["content", "string", true],
      ["max_messages", "integer", false],
    ]);
    expect(decodeJsonAny(append?.parameters[2]?.defaultValue)).toBe(100);
    expect(tools.find((t) => t.name === "export_variables")?.supportsStreaming).toBe(true);
  });

  it("runs a tool with raw-JSON and packed StringValue parameters", async () => {
    const sessionId = await session();
    const packed = anyPack(StringValueSchema, create(StringValueSchema, { value: '"assistant"' }));
    const res = await bridge.client("grpc").executeTool({
      sessionId,
      toolName: "conversation_append",
      parameters: { ...params({ content: "hello" }), role: packed },
    });
    expect(res.errorMessage).toBe("");
    expect(res.success).toBe(true);
    const result = decodeJsonAny(res.result) as {
      count: number;
      messages: { role: string; content: string }[];
    };
    expect(result.count).toBe(1);
    expect(result.messages[0]).toMatchObject({ role: "assistant", content: "hello" });
    expect(toBinary(StringValueSchema, create(StringValueSchema, { value: "x" }))[0]).toBe(0x0a);
  });

  it("keeps every message when many callers append at once", async () => {
    const sessionId = await session();
    const c = bridge.client();
    await Promise.all(
      Array.from({ length: 25 }, (_, i) =>
        c.executeElixirTool({
          sessionId,
          toolName: "conversation_append",
          parameters: params({ role: "user", content: `m${i}` }),
        }),
      ),
    );
    const res = await c.executeTool({
      sessionId,
      toolName: "conversation_history",
      parameters: {},
    });
    const history = decodeJsonAny(res.result) as { count: number; messages: { content: string }[] };
    expect(history.count).toBe(25);
    expect(new Set(history.messages.map((m) => m.content)).size).toBe(25);
  });

  it("increments a variable atomically under concurrency, notifying through normal writes", async () => {
    const sessionId = await session();
    const c = bridge.client();
    await c.registerVariable({
      sessionId,
      name: "n",
      type: "integer",
      initialValue: encodeValue("integer", 0).any,
      constraintsJson: '{"max":1000}',
    });
    const results = await Promise.all(
      Array.from({ length: 30 }, () =>
        c.executeTool({
          sessionId,
          toolName: "increment_variable",
          parameters: params({ name: "n", delta: 1 }),
        }),
      ),
    );
    expect(results.every((r) => r.success)).toBe(true);
    const { variable } = await c.getVariable({ sessionId, variableIdentifier: "n" });
    expect(variable?.version).toBe(30);
    const over = await c.executeTool({
      sessionId,
      toolName: "increment_variable",
      parameters: params({ name: "n", delta: 5000 }),
    });
    expect(over.success).toBe(false);
    expect(over.errorMessage).toContain("above maximum");
  });

  it("reports tool failures in-band: bad arguments, unknown tools, handler errors", async () => {
    const sessionId = await session();
    const c = bridge.client();
    const missing = await c.executeTool({
      sessionId,
      toolName: "conversation_append",
      parameters: params({ role: "user" }),
    });
    expect(missing.success).toBe(false);
    expect(missing.errorMessage).toContain("missing required parameter 'content'");
    const wrongType = await c.executeTool({
      sessionId,
      toolName: "conversation_append",
      parameters: params({ role: 1, content: "x" }),
    });
    expect(wrongType.errorMessage).toContain("must be of type string");
    const unknownParam = await c.executeTool({
      sessionId,
      toolName: "conversation_history",
      parameters: params({ lats: 1 }),
    });
    expect(unknownParam.errorMessage).toContain("unknown parameter 'lats'");
    const unknown = await c.executeTool({ sessionId, toolName: "nope", parameters: {} });
    expect(unknown.success).toBe(false);
    expect(unknown.errorMessage).toContain("not found");
    const failing = await c.executeTool({ sessionId, toolName: "fail_always", parameters: {} });
    expect(failing).toMatchObject({ success: false, errorMessage: "the model is offline" });
  });

  it("lists tools in code point order, the same on every machine", async () => {
    // localeCompare would put "alpha_case" first; code point order puts capitals first.
    const sessionId = await session(["alpha_case", "Zeta_case", "conversation_history"]);
    for (const name of ["alpha_case", "Zeta_case"]) {
      bridge.server.registerTool(
        { name, description: "Listed.", handler: () => null },
        { sessionId },
      );
    }
    const { tools } = await bridge.client().getExposedElixirTools({ sessionId });
    expect(tools.map((t) => t.name)).toEqual(["Zeta_case", "alpha_case", "conversation_history"]);
  });

  it("enforces the session's tool allowlist with PERMISSION_DENIED", async () => {
    const sessionId = await session(["conversation_history"]);
    const c = bridge.client();
    const { tools } = await c.getExposedElixirTools({ sessionId });
    expect(tools.map((t) => t.name)).toEqual(["conversation_history"]);
    const denied = await c
      .executeTool({ sessionId, toolName: "increment_variable", parameters: {} })
      .catch((e: unknown) => e);
    expect((denied as ConnectError).code).toBe(Code.PermissionDenied);
    const ok = await c.executeTool({ sessionId, toolName: "conversation_history", parameters: {} });
    expect(ok.success).toBe(true);
    const entries = bridge.server.auditTrail({ sessionId });
    expect(entries.map((e) => [e.tool, e.outcome])).toEqual([
      ["increment_variable", "denied"],
      ["conversation_history", "ok"],
    ]);
  });

  it("records every execution in the audit trail", async () => {
    const sessionId = await session();
    const seen: string[] = [];
    const off = bridge.server.onAudit((e) => {
      if (e.sessionId === sessionId) seen.push(e.outcome);
    });
    const c = bridge.client();
    await c.executeTool({ sessionId, toolName: "fail_always", parameters: {} });
    await c.executeTool({ sessionId, toolName: "conversation_history", parameters: {} });
    off();
    const entries = bridge.server.auditTrail({ sessionId });
    expect(entries).toHaveLength(2);
    expect(entries[0]).toMatchObject({
      tool: "fail_always",
      outcome: "error",
      error: "the model is offline",
      target: "local",
    });
    expect(seen).toEqual(["error", "ok"]);
  });
});

describe("streaming tools", () => {
  it("streams chunks, then a final chunk", async () => {
    const sessionId = await session();
    const got = await chunks(
      bridge
        .client("grpc")
        .executeStreamingTool({ sessionId, toolName: "count_to", parameters: params({ n: 3 }) }),
    );
    expect(got.map((c) => [c.chunkId, text(c), c.isFinal])).toEqual([
      ["1", 1, false],
      ["2", 2, false],
      ["3", 3, false],
      ["4", { total: 3 }, true],
    ]);
  });

  it("ends a failing stream with a final chunk carrying the error", async () => {
    const sessionId = await session();
    const got = await chunks(
      bridge.client().executeStreamingTool({
        sessionId,
        toolName: "count_to",
        parameters: params({ n: 5, fail_at: 3 }),
      }),
    );
    expect(got.map((c) => text(c))).toEqual([1, 2, null]);
    expect(got.at(-1)?.isFinal).toBe(true);
    expect(got.at(-1)?.metadata.error).toBe("failed at 3");
  });

  it("streams the session's variables with the built-in export tool", async () => {
    const sessionId = await session();
    const c = bridge.client();
    for (const [name, v] of [
      ["a", 1],
      ["b", 2],
    ] as const) {
      await c.registerVariable({
        sessionId,
        name,
        type: "integer",
        initialValue: encodeValue("integer", v).any,
      });
    }
    const got = await chunks(
      c.executeStreamingTool({ sessionId, toolName: "export_variables", parameters: {} }),
    );
    expect(got.map((x) => text(x))).toEqual([
      { name: "a", type: "integer", value: 1, version: 0 },
      { name: "b", type: "integer", value: 2, version: 0 },
      { count: 2 },
    ]);
  });

  it("exports the variables a glob selects, in ListVariables' order", async () => {
    const sessionId = await session();
    const c = bridge.client();
    for (const name of ["ab", "B", "a_b", "aB", "zz", "a.b", "a"]) {
      await c.registerVariable({
        sessionId,
        name,
        type: "integer",
        initialValue: encodeValue("integer", 1).any,
      });
    }
    const listed = await c.listVariables({ sessionId, pattern: "a*" });
    const got = await chunks(
      c.executeStreamingTool({
        sessionId,
        toolName: "export_variables",
        parameters: params({ pattern: "a*" }),
      }),
    );
    const exported = got.map((x) => text(x)?.name).filter((n) => n !== undefined);
    // By code point, as ListVariables sorts; a locale would put 'ab' before 'aB'.
    expect(exported).toEqual(["a", "a.b", "aB", "a_b", "ab"]);
    expect(listed.variables.map((v) => v.name)).toEqual(exported);
  });

  it("collects a streaming tool's chunks when called unary", async () => {
    const sessionId = await session();
    const res = await bridge
      .client()
      .executeTool({ sessionId, toolName: "count_to", parameters: params({ n: 2 }) });
    expect(decodeJsonAny(res.result)).toEqual([1, 2, { total: 2 }]);
  });
});

describe("session-scoped tools", () => {
  it("is visible only in its session and goes away with it", async () => {
    const mine = await session();
    const other = await session();
    bridge.server.registerTool(
      { name: "secret_tool", description: "Only for one session.", handler: () => "ok" },
      { sessionId: mine },
    );
    const c = bridge.client();
    expect(
      (await c.executeTool({ sessionId: mine, toolName: "secret_tool", parameters: {} })).success,
    ).toBe(true);
    expect(
      (await c.executeTool({ sessionId: other, toolName: "secret_tool", parameters: {} })).success,
    ).toBe(false);
    expect((await c.getSession({ sessionId: mine })).toolCount).toBe(
      (await c.getSession({ sessionId: other })).toolCount + 1,
    );
    await c.cleanupSession({ sessionId: mine });
    await c.initializeSession({ sessionId: mine });
    expect(
      (await c.executeTool({ sessionId: mine, toolName: "secret_tool", parameters: {} })).success,
    ).toBe(false);
  });
});

describe("remote worker tools", () => {
  it("forwards calls to the worker that registered the tool, which callers cannot see", async () => {
    // The worker is a second bridge server hosting a tool: it speaks the same
    // BridgeService.ExecuteTool a Python worker does.
    const worker = await startBridge({ builtinTools: false, autoCreateSessions: true });
    worker.server.registerTool({
      name: "embed_text",
      description: "Hashes text into a tiny vector.",
      parameters: [{ name: "text", type: "string", required: true }],
      handler: ({ text }) => [...String(text)].map((ch) => ch.charCodeAt(0) % 7),
    });
    try {
      const sessionId = await session();
      // Workers register on the worker listener; the public port serves the call.
      const reg = await bridge.workerClient().registerTools({
        sessionId,
        workerId: "worker-1",
        tools: [
          {
            name: "embed_text",
            description: "Hashes text.",
            parameters: [{ name: "text", type: "string", required: true }],
            metadata: { worker_address: `127.0.0.1:${worker.port}`, category: "embedding" },
          },
        ],
      });
      expect(reg.success).toBe(true);
      expect(reg.toolIds.embed_text).toBeTruthy();
      const c = bridge.client("grpc");
      const res = await c.executeTool({
        sessionId,
        toolName: "embed_text",
        parameters: params({ text: "abc" }),
      });
      expect(res.errorMessage).toBe("");
      expect(decodeJsonAny(res.result)).toEqual([97 % 7, 98 % 7, 99 % 7]);
      expect(bridge.server.auditTrail({ sessionId, action: "execute" }).at(-1)?.target).toBe(
        `remote:127.0.0.1:${worker.port}`,
      );
      // Callers see the tool's name, parameters and own metadata, not its worker.
      const listed = await c.getExposedElixirTools({ sessionId });
      const spec = listed.tools.find((t) => t.name === "embed_text");
      expect(spec?.metadata).toEqual({ category: "embedding" });
      const init = await c.initializeSession({ sessionId });
      expect(init.availableTools.embed_text?.metadata).toEqual({ category: "embedding" });
    } finally {
      await worker.stop();
    }
  });

  it("reports an unreachable worker in-band without revealing where it is", async () => {
    const sessionId = await session();
    await bridge.workerClient().registerTools({
      sessionId,
      workerId: "gone-worker",
      tools: [{ name: "ghost", description: "", metadata: { worker_address: "127.0.0.1:1" } }],
    });
    const res = await bridge.client().executeTool({ sessionId, toolName: "ghost", parameters: {} });
    expect(res.success).toBe(false);
    expect(res.errorMessage).toBe(
      "the worker hosting tool 'ghost' is unreachable (unavailable); try again later",
    );
    // The operator's audit trail has where the call went.
    const entry = bridge.server.auditTrail({ sessionId, action: "execute" }).at(-1);
    expect(entry?.target).toBe("remote:127.0.0.1:1");
  });

  it("refuses a registration without a worker address or worker id", async () => {
    const sessionId = await session();
    const w = bridge.workerClient();
    const noAddress = await rejectionOf(
      w.registerTools({ sessionId, workerId: "w", tools: [{ name: "t", description: "" }] }),
    );
    expect(noAddress.code).toBe(Code.InvalidArgument);
    expect(noAddress.rawMessage).toContain("worker_address");
    const noId = await rejectionOf(
      w.registerTools({
        sessionId,
        tools: [{ name: "t", description: "", metadata: { worker_address: "127.0.0.1:9" } }],
      }),
    );
    expect(noId.code).toBe(Code.InvalidArgument);
    expect(noId.rawMessage).toContain("worker_id is required");
  });

  it("records registrations and removals in the audit trail", async () => {
    const { sessionId } = await bridge.client().initializeSession({});
    await bridge.workerClient().registerTools({
      sessionId,
      workerId: "auditor",
      tools: [{ name: "audited", description: "", metadata: { worker_address: "127.0.0.1:9" } }],
    });
    await bridge.client().cleanupSession({ sessionId });
    const entries = bridge.server.auditTrail({ sessionId, tool: "audited" });
    expect(entries.map((e) => [e.action, e.outcome, e.worker, e.target])).toEqual([
      ["register", "ok", "auditor", "remote:127.0.0.1:9"],
      ["remove", "ok", "auditor", "remote:127.0.0.1:9"],
    ]);
  });
});
