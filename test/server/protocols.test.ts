/**
 * Every BridgeService RPC over each of the three protocols the server speaks
 * on its one port (Connect, gRPC, gRPC-Web), with connect-node clients. Each
 * case checks what the call did, not only that it answered; the suite fails
 * when the service gains an RPC without a case here.
 *
 * (Over 400 lines: one case per RPC and protocol, by design in one file so
 * the completeness check sees them all.)
 */
import { type Timestamp, timestampMs } from "@bufbuild/protobuf/wkt";
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  AccessRole,
  BridgeService,
  type ToolChunk,
  type Variable,
  type VariableUpdate,
} from "../../src/gen/snakepit/bridge/bridge_pb.js";
import {
  decodeJsonAny,
  decodeValue,
  encodeJsonAny,
  encodeValue,
  type JsonValue,
} from "../../src/values/index.js";
import { type Protocol, protocols, type RunningBridge, startBridge } from "../support/bridge.js";

type BridgeClient = Client<typeof BridgeService>;
type MethodKey = keyof typeof BridgeService.method;

let bridge: RunningBridge;
/** Makes a public caller a worker (RegisterTools) on any protocol. */
const workerToken = "protocols-suite-worker-token-0123456789";
/** A second server standing in for a Python worker that hosts a tool. */
let worker: RunningBridge;

beforeAll(async () => {
  [bridge, worker] = await Promise.all([
    startBridge({ workerToken }),
    // The forwarded call names the bridge's session, which the worker does
    // not know: a real worker has no session store, so let it create one.
    startBridge({
      autoCreateSessions: true,
      builtinTools: false,
      tools: [
        {
          name: "upper",
          description: "Upper-cases a text.",
          parameters: [{ name: "text", type: "string", required: true }],
          handler: ({ text }) => `${String(text).toUpperCase()} from the worker`,
        },
      ],
    }),
  ]);
});
afterAll(async () => {
  await Promise.all([bridge?.stop(), worker?.stop()]);
});

const int = (n: number) => encodeValue("integer", n).any;
const float = (n: number) => encodeValue("float", n).any;
const str = (s: string) => encodeValue("string", s).any;
const ms = (t: Timestamp | undefined) => (t === undefined ? Number.NaN : timestampMs(t));
const valueIn = (v: Pick<Variable, "value"> | undefined) => decodeValue(v?.value).value;
const params = (o: Record<string, JsonValue>) =>
  Object.fromEntries(Object.entries(o).map(([k, v]) => [k, encodeJsonAny(v)]));
const chunkData = (c: ToolChunk) =>
  c.data.length === 0 ? null : (JSON.parse(new TextDecoder().decode(c.data)) as unknown);

async function errorOf(p: Promise<unknown>): Promise<ConnectError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(ConnectError);
  return e as ConnectError;
}

async function collect<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of stream) out.push(item);
  return out;
}

/** A fresh session with integer variables `x` (0) and `y` (0) unless told otherwise. */
async function session(
  c: BridgeClient,
  vars: Record<string, number> = { x: 0, y: 0 },
  allowedTools: string[] = [],
): Promise<string> {
  const { sessionId } = await c.initializeSession({
    allowedTools,
    initialVariables: Object.entries(vars).map(([name, v]) => ({
      name,
      type: "integer",
      initialValue: int(v),
    })),
  });
  return sessionId;
}

type Case = (c: BridgeClient, protocol: Protocol) => Promise<void>;

// Keyed by the generated client's method names, so the compiler already
// refuses a service with a method this table lacks; the last test checks the
// same at run time against the service descriptor.
const cases: Record<MethodKey, Case> = {
  async ping(c, protocol) {
    const before = Date.now();
    const res = await c.ping({ message: `hello over ${protocol}` });
    expect(res.message).toBe(`hello over ${protocol}`);
    const serverMs = ms(res.serverTime);
    expect(serverMs).toBeGreaterThanOrEqual(before - 1000);
    expect(serverMs).toBeLessThanOrEqual(Date.now() + 1000);
    expect((await c.ping({})).message).toBe("pong");
  },

  async initializeSession(c) {
    const created = await c.initializeSession({
      metadata: { user: "ada" },
      allowedTools: ["increment_variable"],
      initialVariables: [
        {
          name: "temperature",
          type: "float",
          initialValue: float(0.7),
          constraintsJson: '{"min":0,"max":2}',
        },
      ],
    });
    expect(created).toMatchObject({ success: true, created: true });
    expect(created.sessionId).toMatch(/^[A-Za-z0-9_-]{24}$/);
    expect(Object.keys(created.availableTools)).toEqual(["increment_variable"]);
    expect(valueIn(created.initialVariables.temperature)).toBe(0.7);
    expect(ms(created.expiresAt)).toBeGreaterThan(Date.now());

    const again = await c.initializeSession({
      sessionId: created.sessionId,
      metadata: { user: "bob" },
      initialVariables: [{ name: "other", type: "integer", initialValue: int(1) }],
    });
    expect(again).toMatchObject({ success: true, created: false, sessionId: created.sessionId });
    expect(Object.keys(again.initialVariables)).toEqual(["temperature"]);
    expect((await c.getSession({ sessionId: created.sessionId })).metadata).toEqual({
      user: "ada",
    });
  },

  async cleanupSession(c) {
    const sessionId = await session(c, { a: 1, b: 2, d: 3 });
    const res = await c.cleanupSession({ sessionId });
    expect(res).toMatchObject({ success: true, resourcesCleaned: 3 });
    expect((await c.heartbeat({ sessionId })).sessionValid).toBe(false);
    expect((await errorOf(c.getVariable({ sessionId, variableIdentifier: "a" }))).code).toBe(
      Code.NotFound,
    );
    // Idempotent: a second cleanup finds nothing to clean.
    expect(await c.cleanupSession({ sessionId })).toMatchObject({
      success: true,
      resourcesCleaned: 0,
    });
  },

  async getSession(c) {
    const { sessionId } = await c.initializeSession({
      metadata: { team: "research" },
      allowedTools: ["conversation_append", "export_variables"],
      initialVariables: [{ name: "x", type: "integer", initialValue: int(1) }],
    });
    await c.registerVariable({ sessionId, name: "y", type: "string", initialValue: str("hi") });
    const res = await c.getSession({ sessionId });
    expect(res).toMatchObject({
      sessionId,
      metadata: { team: "research" },
      variableCount: 2,
      toolCount: 2,
      allowedTools: ["conversation_append", "export_variables"],
    });
    expect(ms(res.createdAt)).toBeLessThanOrEqual(Date.now());
    expect((await errorOf(c.getSession({ sessionId: "no-such-session" }))).code).toBe(
      Code.NotFound,
    );
  },

  async heartbeat(c) {
    const sessionId = await session(c, {});
    const alive = await c.heartbeat({ sessionId });
    expect(alive.sessionValid).toBe(true);
    expect(Math.abs(ms(alive.serverTime) - Date.now())).toBeLessThan(5000);
    expect((await c.heartbeat({ sessionId: "no-such-session" })).sessionValid).toBe(false);
  },

  async getVariable(c) {
    const sessionId = await session(c, {});
    const { variableId } = await c.registerVariable({
      sessionId,
      name: "model",
      type: "choice",
      initialValue: encodeValue("choice", "claude").any,
      constraintsJson: '{"choices":["gpt","claude"]}',
    });
    const byName = await c.getVariable({ sessionId, variableIdentifier: "model" });
    const byId = await c.getVariable({ sessionId, variableIdentifier: variableId });
    expect(byName.variable).toEqual(byId.variable);
    expect(byName.variable).toMatchObject({
      id: variableId,
      name: "model",
      type: "choice",
      version: 0,
    });
    expect(valueIn(byName.variable)).toBe("claude");
    expect(byName.fromCache).toBe(false);
    const missing = await errorOf(c.getVariable({ sessionId, variableIdentifier: "nope" }));
    expect(missing.code).toBe(Code.NotFound);
  },

  async setVariable(c) {
    const sessionId = await session(c, { x: 0 });
    const res = await c.setVariable({
      sessionId,
      variableIdentifier: "x",
      value: int(5),
      metadata: { reason: "test" },
    });
    expect(res).toMatchObject({ success: true, newVersion: 1 });
    expect(valueIn(res.variable)).toBe(5);
    const cas = await errorOf(
      c.setVariable({ sessionId, variableIdentifier: "x", value: int(6), expectedVersion: 7 }),
    );
    expect(cas.code).toBe(Code.Aborted);
    expect(cas.rawMessage).toContain("current version is 1");
    const ok = await c.setVariable({
      sessionId,
      variableIdentifier: "x",
      value: int(6),
      expectedVersion: 1,
    });
    expect(ok.newVersion).toBe(2);
    const { variable } = await c.getVariable({ sessionId, variableIdentifier: "x" });
    expect(valueIn(variable)).toBe(6);
    expect(variable?.metadata).toEqual({ reason: "test" });
  },

  async getVariables(c) {
    const sessionId = await session(c, { x: 1, y: 2 });
    const { variableId } = await c.registerVariable({
      sessionId,
      name: "z",
      type: "integer",
      initialValue: int(3),
      metadata: { owner: "ada" },
    });
    const res = await c.getVariables({
      sessionId,
      variableIdentifiers: ["x", variableId, "nope"],
    });
    expect(Object.keys(res.variables).sort()).toEqual([variableId, "x"].sort());
    expect(valueIn(res.variables.x)).toBe(1);
    expect(valueIn(res.variables[variableId])).toBe(3);
    expect(res.variables[variableId]?.metadata).toEqual({});
    expect(res.missingVariables).toEqual(["nope"]);
    const withMeta = await c.getVariables({
      sessionId,
      variableIdentifiers: ["z"],
      includeMetadata: true,
    });
    expect(withMeta.variables.z?.metadata).toEqual({ owner: "ada" });
  },

  async setVariables(c) {
    const sessionId = await session(c, { x: 0, y: 0 });
    const res = await c.setVariables({ sessionId, updates: { x: int(1), y: int(2) } });
    expect(res.success).toBe(true);
    expect(res.errors).toEqual({});
    expect(res.newVersions).toEqual({ x: 1, y: 1 });
    expect(valueIn(res.variables.y)).toBe(2);
    const atomic = await c.setVariables({
      sessionId,
      updates: { x: int(10), y: str("not a number") },
      atomic: true,
    });
    expect(atomic.success).toBe(false);
    expect(Object.keys(atomic.errors)).toEqual(["y"]);
    const after = await c.getVariables({ sessionId, variableIdentifiers: ["x", "y"] });
    expect([valueIn(after.variables.x), valueIn(after.variables.y)]).toEqual([1, 2]);
    expect(after.variables.x?.version).toBe(1);
  },

  async registerVariable(c) {
    const sessionId = await session(c, {});
    const res = await c.registerVariable({
      sessionId,
      name: "temperature",
      type: "float",
      initialValue: int(1),
      constraintsJson: '{"min":0,"max":2}',
    });
    expect(res.success).toBe(true);
    expect(res.variableId).toMatch(/^var:\d+:temperature$/);
    expect(res.variable).toMatchObject({ name: "temperature", type: "float", version: 0 });
    expect(decodeValue(res.variable?.value)).toEqual({ type: "float", value: 1 });
    const taken = await errorOf(
      c.registerVariable({ sessionId, name: "temperature", type: "float", initialValue: float(1) }),
    );
    expect(taken.code).toBe(Code.AlreadyExists);
    const bad = await errorOf(
      c.registerVariable({
        sessionId,
        name: "hot",
        type: "float",
        initialValue: float(3),
        constraintsJson: '{"max":2}',
      }),
    );
    expect(bad.code).toBe(Code.InvalidArgument);
    expect(bad.rawMessage).toBe("variable 'hot': value 3 is above maximum 2");
  },

  async registerVariables(c) {
    const sessionId = await session(c, {});
    const declarations = [
      { name: "b", type: "integer", initialValue: int(1) },
      { name: "a", type: "string", initialValue: str("s") },
    ];
    const first = await c.registerVariables({ sessionId, variables: declarations, ifAbsent: true });
    expect(first.created).toEqual(["b", "a"]);
    expect(first.variables.map((v) => [v.name, valueIn(v)])).toEqual([
      ["b", 1],
      ["a", "s"],
    ]);
    await c.setVariable({ sessionId, variableIdentifier: "b", value: int(9) });
    const again = await c.registerVariables({ sessionId, variables: declarations, ifAbsent: true });
    expect(again.created).toEqual([]);
    expect(again.variables.map((v) => [v.name, valueIn(v), v.version])).toEqual([
      ["b", 9, 1],
      ["a", "s", 0],
    ]);
    const clash = await errorOf(c.registerVariables({ sessionId, variables: declarations }));
    expect(clash.code).toBe(Code.AlreadyExists);
  },

  async listVariables(c) {
    const sessionId = await session(c, { temp_b: 1, temp_a: 2, other: 3 });
    const all = await c.listVariables({ sessionId });
    expect(all.variables.map((v) => v.name)).toEqual(["other", "temp_a", "temp_b"]);
    const some = await c.listVariables({ sessionId, pattern: "temp_*" });
    expect(some.variables.map((v) => [v.name, valueIn(v)])).toEqual([
      ["temp_a", 2],
      ["temp_b", 1],
    ]);
    expect((await c.listVariables({ sessionId, pattern: "temp_?" })).variables).toHaveLength(2);
  },

  async deleteVariable(c) {
    const sessionId = await session(c, { x: 1, y: 2 });
    expect((await c.deleteVariable({ sessionId, variableIdentifier: "x" })).success).toBe(true);
    const gone = await errorOf(c.getVariable({ sessionId, variableIdentifier: "x" }));
    expect(gone.code).toBe(Code.NotFound);
    expect((await c.listVariables({ sessionId })).variables.map((v) => v.name)).toEqual(["y"]);
    const again = await errorOf(c.deleteVariable({ sessionId, variableIdentifier: "x" }));
    expect(again.code).toBe(Code.NotFound);
  },

  async executeTool(c) {
    const sessionId = await session(c, { counter: 10 });
    const res = await c.executeTool({
      sessionId,
      toolName: "increment_variable",
      parameters: params({ name: "counter", delta: 5 }),
    });
    expect(res.errorMessage).toBe("");
    expect(res.success).toBe(true);
    expect(decodeJsonAny(res.result)).toEqual({ name: "counter", value: 15, version: 1 });
    const { variable } = await c.getVariable({ sessionId, variableIdentifier: "counter" });
    expect(valueIn(variable)).toBe(15);
    const missing = await c.executeTool({ sessionId, toolName: "no_such_tool" });
    expect(missing).toMatchObject({ success: false, metadata: { error_kind: "not_found" } });
  },

  async executeStreamingTool(c) {
    const sessionId = await session(c, { b: 2, a: 1, c: 3, other: 4 });
    const chunks = await collect(
      c.executeStreamingTool({
        sessionId,
        toolName: "export_variables",
        parameters: params({ pattern: "?" }),
        stream: true,
      }),
    );
    expect(chunks.map((ch) => ch.isFinal)).toEqual([false, false, false, true]);
    expect(chunks.slice(0, 3).map(chunkData)).toEqual([
      { name: "a", type: "integer", value: 1, version: 0 },
      { name: "b", type: "integer", value: 2, version: 0 },
      { name: "c", type: "integer", value: 3, version: 0 },
    ]);
    const final = chunks[3] as ToolChunk;
    expect(chunkData(final)).toEqual({ count: 3 });
    expect(final.metadata.chunks).toBe("3");
  },

  async registerTools(c) {
    const sessionId = await session(c, {});
    const request = {
      sessionId,
      workerId: "worker-1",
      tools: [
        {
          name: "upper",
          description: "Upper-cases a text, on the worker.",
          parameters: [{ name: "text", type: "str", required: true }],
          metadata: { worker_address: `127.0.0.1:${worker.port}` },
        },
      ],
    };
    // Anonymous callers may not register tools; a wrong token is told so.
    expect((await errorOf(c.registerTools(request))).code).toBe(Code.PermissionDenied);
    const wrong = { headers: { authorization: "Bearer not-the-token" } };
    expect((await errorOf(c.registerTools(request, wrong))).code).toBe(Code.Unauthenticated);
    const asWorker = { headers: { authorization: `Bearer ${workerToken}` } };
    const res = await c.registerTools(request, asWorker);
    expect(res).toMatchObject({ success: true, errorMessage: "" });
    expect(res.toolIds.upper).toBeTruthy();
    const listed = await c.getExposedElixirTools({ sessionId });
    expect(listed.tools.find((t) => t.name === "upper")?.parameters[0]?.type).toBe("string");
    const run = await c.executeTool({
      sessionId,
      toolName: "upper",
      parameters: params({ text: "hi" }),
    });
    expect(run.errorMessage).toBe("");
    expect(decodeJsonAny(run.result)).toBe("HI from the worker");
    // Session-scoped: another session does not see it.
    const other = await session(c, {});
    const elsewhere = await c.executeTool({ sessionId: other, toolName: "upper" });
    expect(elsewhere.metadata.error_kind).toBe("not_found");
    const missingAddress = await errorOf(
      c.registerTools(
        { sessionId, workerId: "worker-1", tools: [{ name: "nowhere", description: "" }] },
        asWorker,
      ),
    );
    expect(missingAddress.code).toBe(Code.InvalidArgument);
    expect(missingAddress.rawMessage).toContain("worker_address");
  },

  async getExposedElixirTools(c) {
    const all = await c.getExposedElixirTools({ sessionId: await session(c, {}) });
    expect(all.tools.map((t) => t.name)).toEqual([
      "conversation_append",
      "conversation_history",
      "export_variables",
      "increment_variable",
    ]);
    const sessionId = await session(c, {}, ["increment_variable"]);
    const { tools } = await c.getExposedElixirTools({ sessionId });
    expect(tools.map((t) => t.name)).toEqual(["increment_variable"]);
    expect(tools[0]?.parameters.map((p) => [p.name, p.type, p.required])).toEqual([
      ["name", "string", true],
      ["delta", "number", false],
    ]);
    expect(decodeJsonAny(tools[0]?.parameters[1]?.defaultValue)).toBe(1);
  },

  async executeElixirTool(c) {
    const sessionId = await session(c, {});
    for (const content of ["hello", "world"]) {
      const res = await c.executeElixirTool({
        sessionId,
        toolName: "conversation_append",
        parameters: params({ role: "user", content }),
      });
      expect(res.errorMessage).toBe("");
    }
    const history = await c.executeElixirTool({
      sessionId,
      toolName: "conversation_history",
      parameters: params({ last: 1 }),
    });
    expect(history.success).toBe(true);
    expect(decodeJsonAny(history.result)).toMatchObject({
      count: 1,
      messages: [{ role: "user", content: "world" }],
    });
    const badArgs = await c.executeElixirTool({
      sessionId,
      toolName: "conversation_append",
      parameters: params({ role: "user" }),
    });
    expect(badArgs).toMatchObject({
      success: false,
      metadata: { error_kind: "invalid_arguments" },
    });
  },

  async streamTelemetry(c, protocol) {
    // A host calls it on a worker: the bridge refuses it, whatever it is sent.
    async function* controls() {
      yield { control: { case: "toggle" as const, value: { enabled: true } } };
    }
    const refused = await errorOf(collect(c.streamTelemetry(controls())));
    expect(refused.code).toBe(Code.Unimplemented);
    expect(refused.rawMessage).toMatch(
      // These clients speak HTTP/1.1, where a bidirectional stream cannot run.
      protocol === "grpc"
        ? /^StreamTelemetry is served by snakepit workers to their host, not by the bridge/
        : /^StreamTelemetry is a bidirectional stream, which needs HTTP\/2/,
    );
  },

  async watchVariables(c) {
    const sessionId = await session(c, { x: 0, y: 0 });
    const abort = new AbortController();
    const updates: VariableUpdate[] = [];
    const reading = (async () => {
      for await (const u of c.watchVariables(
        { sessionId, variableIdentifiers: ["x"], includeInitialValues: true, syncMarker: true },
        { signal: abort.signal },
      )) {
        updates.push(u);
        if (updates.length === 2) {
          // Registered: changes from now on are delivered.
          await c.setVariable({ sessionId, variableIdentifier: "y", value: int(7) });
          await c.setVariable({ sessionId, variableIdentifier: "x", value: int(1) });
        }
        if (updates.length === 3) abort.abort();
      }
    })().catch((e: unknown) => {
      if (ConnectError.from(e).code !== Code.Canceled) throw e;
    });
    await reading;
    expect(updates.map((u) => [u.updateType, u.variable?.name, u.variable?.version])).toEqual([
      ["initial_value", "x", 0],
      ["sync", undefined, undefined],
      ["value_changed", "x", 1],
    ]);
    expect(valueIn(updates[2]?.variable)).toBe(1);
  },

  async addDependency(c) {
    const sessionId = await session(c, { a: 0, b: 0, d: 0 });
    expect((await c.addDependency({ sessionId, fromVariable: "a", toVariable: "b" })).success).toBe(
      true,
    );
    await c.addDependency({ sessionId, fromVariable: "b", toVariable: "d" });
    const cycle = await errorOf(c.addDependency({ sessionId, fromVariable: "d", toVariable: "a" }));
    expect(cycle.code).toBe(Code.InvalidArgument);
    expect(cycle.rawMessage).toContain("cycle");
    const missing = await errorOf(
      c.addDependency({ sessionId, fromVariable: "a", toVariable: "nope" }),
    );
    expect(missing.code).toBe(Code.NotFound);
  },

  async startOptimization(c) {
    const sessionId = await session(c, { lr: 1 });
    const res = await c.startOptimization({
      sessionId,
      variableIdentifier: "lr",
      optimizerId: "opt-1",
    });
    expect(res.success).toBe(true);
    expect(res.optimizationId).not.toBe("");
    const { variable } = await c.getVariable({ sessionId, variableIdentifier: "lr" });
    expect(variable?.optimizationStatus).toMatchObject({ optimizing: true, optimizerId: "opt-1" });
    const blocked = await errorOf(
      c.setVariable({ sessionId, variableIdentifier: "lr", value: int(2) }),
    );
    expect(blocked.code).toBe(Code.FailedPrecondition);
    const holder = await c.setVariable({
      sessionId,
      variableIdentifier: "lr",
      value: int(3),
      metadata: { optimizer_id: "opt-1" },
    });
    expect(holder.newVersion).toBe(1);
    const rival = await errorOf(
      c.startOptimization({ sessionId, variableIdentifier: "lr", optimizerId: "opt-2" }),
    );
    expect(rival.code).toBe(Code.FailedPrecondition);
  },

  async stopOptimization(c) {
    const sessionId = await session(c, { lr: 1 });
    await c.startOptimization({ sessionId, variableIdentifier: "lr", optimizerId: "opt-1" });
    await c.setVariable({
      sessionId,
      variableIdentifier: "lr",
      value: int(4),
      metadata: { optimizer_id: "opt-1" },
    });
    const notHolder = await errorOf(
      c.stopOptimization({ sessionId, variableIdentifier: "lr", optimizerId: "opt-2" }),
    );
    expect(notHolder.code).toBe(Code.FailedPrecondition);
    const res = await c.stopOptimization({
      sessionId,
      variableIdentifier: "lr",
      optimizerId: "opt-1",
    });
    expect(res.success).toBe(true);
    expect(decodeValue(res.finalValue).value).toBe(4);
    const free = await c.setVariable({ sessionId, variableIdentifier: "lr", value: int(5) });
    expect(free.newVersion).toBe(2);
  },

  async getVariableHistory(c) {
    const sessionId = await session(c, { x: 0 });
    for (const v of [10, 20, 30]) {
      await c.setVariable({
        sessionId,
        variableIdentifier: "x",
        value: int(v),
        metadata: { step: String(v) },
      });
    }
    const all = await c.getVariableHistory({ sessionId, variableIdentifier: "x" });
    expect(all.entries.map((e) => [e.version, decodeValue(e.value).value])).toEqual([
      [3, 30],
      [2, 20],
      [1, 10],
      [0, 0],
    ]);
    expect(all.entries[0]?.metadata).toEqual({ step: "30" });
    const limited = await c.getVariableHistory({ sessionId, variableIdentifier: "x", limit: 2 });
    expect(limited.entries.map((e) => e.version)).toEqual([3, 2]);
  },

  async rollbackVariable(c) {
    const sessionId = await session(c, { x: 0 });
    for (const v of [10, 20])
      await c.setVariable({ sessionId, variableIdentifier: "x", value: int(v) });
    const res = await c.rollbackVariable({ sessionId, variableIdentifier: "x", targetVersion: 1 });
    expect(res.success).toBe(true);
    expect(res.variable?.version).toBe(3);
    expect(valueIn(res.variable)).toBe(10);
    const { variable } = await c.getVariable({ sessionId, variableIdentifier: "x" });
    expect([variable?.version, valueIn(variable)]).toEqual([3, 10]);
    const gone = await errorOf(
      c.rollbackVariable({ sessionId, variableIdentifier: "x", targetVersion: 42 }),
    );
    expect(gone.code).toBe(Code.NotFound);
  },

  async mintToken(c) {
    const sessionId = await session(c, { x: 1 });
    const res = await c.mintToken({ sessionId, role: AccessRole.VIEWER, ttlSeconds: 60 });
    expect(res.role).toBe(AccessRole.VIEWER);
    expect(ms(res.expiresAt) - Date.now()).toBeGreaterThan(50_000);
    expect(ms(res.expiresAt) - Date.now()).toBeLessThanOrEqual(61_000);
    // The token reads the session and writes nothing in it.
    const auth = { headers: { authorization: `Bearer ${res.token}` } };
    const { variable } = await c.getVariable({ sessionId, variableIdentifier: "x" }, auth);
    expect(valueIn(variable)).toBe(1);
    const denied = await errorOf(
      c.setVariable({ sessionId, variableIdentifier: "x", value: int(2) }, auth),
    );
    expect(denied.code).toBe(Code.PermissionDenied);
    const gone = await errorOf(
      c.mintToken({ sessionId: "no-such-session-0000000000", role: AccessRole.VIEWER }),
    );
    expect(gone.code).toBe(Code.NotFound);
  },
};

const caseList = Object.entries(cases).map(
  ([key, run]) => [BridgeService.method[key as MethodKey].name, run] as const,
);

describe.each(protocols)("over %s", (protocol) => {
  it.each(caseList)("%s", async (_name, run) => {
    await run(bridge.client(protocol), protocol);
  });
});

describe("coverage", () => {
  it("has a case for every RPC of BridgeService", () => {
    const rpcs = BridgeService.methods.map((m) => m.name).sort();
    expect(caseList.map(([name]) => name).sort()).toEqual(rpcs);
  });
});
