/**
 * Hostile callers against the tool registry and the forwarding path, on a
 * real server over real sockets: each test is an attack that once worked,
 * shown closed.
 */

import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import {
  type RegisterToolsRequest,
  RegisterToolsRequestSchema,
} from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { createLogger } from "../../src/server/index.js";
import { decodeJsonAny, encodeJsonAny, type JsonValue } from "../../src/values/index.js";
import { bridgePerTest, protocols } from "../support/bridge.js";
import { rejectionOf } from "../support/errors.js";
import { startTcpProbe, type TcpProbe } from "../support/tcp-probe.js";
import { until } from "../support/wait.js";

const bridge = bridgePerTest();
const probes: TcpProbe[] = [];
afterEach(async () => {
  await Promise.all(probes.splice(0).map((p) => p.close()));
});

async function probe(): Promise<TcpProbe> {
  const p = await startTcpProbe();
  probes.push(p);
  return p;
}

const params = (o: Record<string, JsonValue>) =>
  Object.fromEntries(Object.entries(o).map(([k, v]) => [k, encodeJsonAny(v)]));

const registration = (
  name: string,
  address: string,
  init: { sessionId?: string; workerId?: string } = {},
): RegisterToolsRequest =>
  create(RegisterToolsRequestSchema, {
    sessionId: init.sessionId ?? "",
    workerId: init.workerId ?? "evil-worker",
    tools: [{ name, description: "", metadata: { worker_address: address } }],
  });

/** A sink that keeps every log line. */
function captureLogs() {
  const lines: string[] = [];
  return {
    logger: createLogger({ level: "debug", sink: { write: (l: string) => lines.push(l) } }),
    lines,
  };
}

describe("global tool hijack", () => {
  it("an anonymous caller cannot register or replace tools, on any protocol; the listener receives nothing", async () => {
    const logs = captureLogs();
    const b = await bridge({ logger: logs.logger });
    const listener = await probe();
    const victim = b.client("grpc");
    const { sessionId } = await victim.initializeSession({});

    for (const protocol of protocols) {
      const attacker = b.client(protocol);
      const global = await rejectionOf(
        attacker.registerTools(registration("conversation_append", listener.address)),
        Code.PermissionDenied,
      );
      expect(global.rawMessage).toContain("RegisterTools is for workers");
      // Session-scoped shadowing of the victim's tools is refused the same way.
      await rejectionOf(
        attacker.registerTools(
          registration("conversation_append", listener.address, { sessionId }),
        ),
        Code.PermissionDenied,
      );
      // A token that is not the worker token does not help.
      await rejectionOf(
        attacker.registerTools(registration("my_tool", listener.address), {
          headers: { authorization: "Bearer guessed-token" },
        }),
        Code.Unauthenticated,
      );
    }

    const res = await victim.executeTool({
      sessionId,
      toolName: "conversation_append",
      parameters: params({ role: "user", content: "secret" }),
    });
    expect(res.success).toBe(true);
    expect(decodeJsonAny(res.result)).toMatchObject({ count: 1 });
    expect(listener.connections).toBe(0);

    // Every refused attempt is audited; the log has the first of each code
    // (any caller can repeat them at will: the rest are counted, not written).
    // (The built-in tools' own registrations at start are "local".)
    const refused = b.server.auditTrail({ action: "register" }).filter((e) => e.target !== "local");
    expect(refused.length).toBeGreaterThanOrEqual(protocols.length * 3);
    expect(refused.map((e) => e.outcome)).toEqual(refused.map(() => "denied"));
    const logged = logs.lines.filter((l) => l.includes('"tool registration refused"'));
    expect(logged.map((l) => (JSON.parse(l) as { code: string }).code).sort()).toEqual([
      "PermissionDenied",
      "Unauthenticated",
    ]);
    expect(logs.lines.join("")).not.toContain(sessionId);
  });

  it("even a worker cannot replace a built-in or another worker's tool; a worker replaces its own", async () => {
    const b = await bridge();
    const listener = await probe();
    const w = b.workerClient();
    const { sessionId } = await b.client().initializeSession({});

    for (const scope of ["", sessionId]) {
      const taken = await rejectionOf(
        w.registerTools(
          registration("conversation_append", listener.address, { sessionId: scope }),
        ),
        Code.AlreadyExists,
      );
      expect(taken.rawMessage).toContain("taken by a tool of the bridge itself");
    }
    await w.registerTools(registration("shared_name", listener.address, { workerId: "first" }));
    const other = await rejectionOf(
      w.registerTools(registration("shared_name", listener.address, { workerId: "second" })),
      Code.AlreadyExists,
    );
    expect(other.rawMessage).toContain("registered by another worker");
    // Nor may the other worker shadow it in one session.
    await rejectionOf(
      w.registerTools(
        registration("shared_name", listener.address, { workerId: "second", sessionId }),
      ),
      Code.AlreadyExists,
    );
    const again = await w.registerTools(
      registration("shared_name", listener.address, { workerId: "first" }),
    );
    expect(again.success).toBe(true);

    const res = await b.client().executeTool({
      sessionId,
      toolName: "conversation_append",
      parameters: params({ role: "user", content: "hi" }),
    });
    expect(res.success).toBe(true);
    expect(listener.connections).toBe(0);
    expect(
      b.server
        .auditTrail({ action: "register" })
        .map((e) => [e.tool, e.outcome, e.worker])
        .filter(([tool]) => tool === "shared_name"),
    ).toEqual([
      ["shared_name", "ok", "first"],
      ["shared_name", "already_exists", "second"],
      ["shared_name", "already_exists", "second"],
      ["shared_name", "ok", "first"],
    ]);
  });
});

describe("SSRF through worker_address", () => {
  it("refuses addresses outside the allowlist, with credentials, or malformed; the target sees no connection", async () => {
    const logs = captureLogs();
    const target = await probe();
    // The operator allows one worker port; the probe stands for an internal
    // service (Redis, a metadata endpoint) elsewhere on the machine.
    const b = await bridge({ workerAllow: ["127.0.0.1:1"], logger: logs.logger });
    const w = b.workerClient();
    const cases: [string, Code, RegExp][] = [
      [target.address, Code.PermissionDenied, /matches no --worker-allow pattern/],
      ["169.254.169.254:80", Code.PermissionDenied, /matches no --worker-allow pattern/],
      [`user:pw@${target.address}`, Code.InvalidArgument, /carries user info/],
      [`http://user:pw@${target.address}/`, Code.InvalidArgument, /carries user info/],
      [`${target.address}/snakepit`, Code.InvalidArgument, /has a path/],
      [`https://${target.address}`, Code.InvalidArgument, /scheme other than http/],
      ["127.0.0.1", Code.InvalidArgument, /is not host:port/],
      ["127.0.0.1:0", Code.InvalidArgument, /port between 1 and 65535/],
      ["127.0.0.1:99999", Code.InvalidArgument, /port between 1 and 65535/],
    ];
    for (const [address, code, message] of cases) {
      const e = await rejectionOf(w.registerTools(registration("probe_tool", address)), code);
      expect(e.rawMessage).toMatch(message);
    }
    // Nothing was registered, so nothing can be called there.
    const { sessionId } = await b.client().initializeSession({});
    const call = await b.client().executeTool({ sessionId, toolName: "probe_tool" });
    expect(call.metadata.error_kind).toBe("not_found");
    expect(target.connections).toBe(0);
    expect(logs.lines.join("")).not.toContain("pw@");
  });

  it("the default allowlist is loopback only", async () => {
    const b = await bridge();
    const w = b.workerClient();
    for (const address of ["10.0.0.7:50100", "example.com:443", "[fd00::1]:50100"]) {
      await rejectionOf(w.registerTools(registration("t", address)), Code.PermissionDenied);
    }
    const ok = await w.registerTools(registration("t", "127.0.0.1:50100"));
    expect(ok.success).toBe(true);
  });
});

describe("forwarding loops", () => {
  it("refuses a worker address that is the bridge itself, on any of its ports", async () => {
    const b = await bridge();
    const own = [b.url, b.workerUrl, b.adminUrl].map((u) => new URL(u).port);
    for (const port of own) {
      for (const host of ["127.0.0.1", "localhost", "[::1]", "0.0.0.0"]) {
        const e = await rejectionOf(
          b.workerClient().registerTools(registration("loop", `${host}:${port}`)),
          Code.PermissionDenied,
        );
        expect(e.rawMessage).toContain("is this bridge itself");
      }
    }
  });

  it("a loop through a second bridge ends after one round: each bridge refuses a call that already passed through it", async () => {
    const a = await bridge();
    const b = await bridge({ autoCreateSessions: true, builtinTools: false });
    // Each registers "bounce" as forwarded to the other: A → B → A → …
    await a.workerClient().registerTools(registration("bounce", `127.0.0.1:${b.port}`));
    await b.workerClient().registerTools(registration("bounce", `127.0.0.1:${a.port}`));
    const { sessionId } = await a.client().initializeSession({});
    const heapBefore = process.memoryUsage().heapUsed;
    const started = performance.now();
    const res = await a.client().executeTool({ sessionId, toolName: "bounce" });
    const elapsed = performance.now() - started;
    expect(res.success).toBe(false);
    expect(res.errorMessage).toContain("already passed through this bridge");
    expect(elapsed).toBeLessThan(2000);
    // One execution on A (the caller's) and one on B: the call that came back
    // to A was refused before it ran.
    expect(a.server.auditTrail({ action: "execute", tool: "bounce" })).toHaveLength(1);
    expect(b.server.auditTrail({ action: "execute", tool: "bounce" })).toHaveLength(1);
    expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(64 * 1024 * 1024);
  });
});

describe("tool registry flood", () => {
  it("refuses oversized registrations and keeps InitializeSession replies small", async () => {
    const b = await bridge({ maxRequestBytes: 8 * 1024 * 1024 });
    const w = b.workerClient();
    const huge = "x".repeat(3 * 1024 * 1024);
    for (let i = 0; i < 3; i++) {
      const req = registration(`big_${i}`, "127.0.0.1:50100");
      const tool = req.tools[0];
      if (tool !== undefined) tool.description = huge;
      const e = await rejectionOf(w.registerTools(req), Code.InvalidArgument);
      expect(e.rawMessage).toContain("--max-tool-bytes");
    }
    const init = await b.client().initializeSession({});
    expect(Object.keys(init.availableTools).sort()).toEqual([
      "conversation_append",
      "conversation_history",
      "export_variables",
      "increment_variable",
    ]);
  });

  it("stops at the tool count limits while other sessions keep working", async () => {
    const b = await bridge({ maxTools: 10, maxToolsPerSession: 3 });
    const w = b.workerClient();
    const { sessionId } = await b.client().initializeSession({});
    for (let i = 0; i < 3; i++) {
      await w.registerTools(registration(`s${i}`, "127.0.0.1:50100", { sessionId }));
    }
    const perSession = await rejectionOf(
      w.registerTools(registration("s3", "127.0.0.1:50100", { sessionId })),
      Code.ResourceExhausted,
    );
    expect(perSession.rawMessage).toContain("--max-tools-per-session");
    for (let i = 0; i < 7; i++) await w.registerTools(registration(`g${i}`, "127.0.0.1:50100"));
    const total = await rejectionOf(
      w.registerTools(registration("g7", "127.0.0.1:50100")),
      Code.ResourceExhausted,
    );
    expect(total.rawMessage).toContain("--max-tools");
    // Replacing a worker's own tool is not a new one.
    await w.registerTools(registration("g0", "127.0.0.1:50100"));
    // Ending the session frees its tools' places.
    await b.client().cleanupSession({ sessionId });
    await w.registerTools(registration("g7", "127.0.0.1:50100"));

    const other = await b.client().initializeSession({});
    const res = await b.client().executeTool({
      sessionId: other.sessionId,
      toolName: "increment_variable",
      parameters: params({ name: "nope" }),
    });
    expect(res.metadata.error_kind).toBe("error");
    expect(res.errorMessage).toContain("Variable not found");
  });
});

describe("worker connections", () => {
  it("keep a bounded pool: the least recently used worker connection is closed", async () => {
    const workers = await Promise.all(
      Array.from({ length: 6 }, () => bridge({ autoCreateSessions: true, builtinTools: false })),
    );
    // (Health checks off: they keep connections of their own.)
    const b = await bridge({ maxWorkerConnections: 2, workerCheckIntervalMs: 0 });
    const { sessionId } = await b.client().initializeSession({});
    for (const [i, worker] of workers.entries()) {
      worker.server.registerTool({
        name: `echo${i}`,
        description: "",
        handler: () => i,
      });
      await b
        .workerClient()
        .registerTools(registration(`echo${i}`, `127.0.0.1:${worker.port}`, { workerId: `w${i}` }));
    }
    for (let i = 0; i < workers.length; i++) {
      const res = await b.client("grpc").executeTool({ sessionId, toolName: `echo${i}` });
      expect(decodeJsonAny(res.result)).toBe(i);
    }
    // Connections still open at each worker, as its own metrics report them.
    const openAt = async () =>
      Promise.all(
        workers.map(async (w) => {
          const text = await fetch(`${w.adminUrl}/metrics`).then((r) => r.text());
          return Number(/bridge_connections\{listener="public"\} (\d+)/.exec(text)?.[1]);
        }),
      );
    await until(
      async () => (await openAt()).reduce((a, n) => a + n, 0) <= 2,
      "the evicted connections closed",
    ).catch(() => undefined); // the assertion below shows what is still open
    // The two most recently used stay; the evicted ones were closed.
    expect(await openAt()).toEqual([0, 0, 0, 0, 1, 1]);
  });
});

describe("metrics labels", () => {
  it("calls of made-up tool names add no series", async () => {
    const b = await bridge();
    const { sessionId } = await b.client().initializeSession({});
    const before = (await fetch(`${b.adminUrl}/metrics`).then((r) => r.text())).length;
    for (let i = 0; i < 300; i++) {
      await b.client().executeTool({ sessionId, toolName: `made_up_${i}` });
    }
    const text = await fetch(`${b.adminUrl}/metrics`).then((r) => r.text());
    expect(text).not.toContain("made_up_");
    expect(text).toContain(
      'bridge_tool_executions_total{tool="(unregistered)",outcome="not_found"} 300',
    );
    expect(text.length - before).toBeLessThan(4096);
  });
});
