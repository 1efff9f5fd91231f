import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, type ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { describe, expect, it } from "vitest";
import { BridgeService } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { sessionEnded, sessionNotFound } from "../../src/server/store/errors.js";
import { encodeValue } from "../../src/values/index.js";
import { bridgePerTest } from "../support/bridge.js";
import { rejectionOf } from "../support/errors.js";
import { waitFor } from "../support/wait.js";

const bridge = bridgePerTest();

const int = (n: number) => encodeValue("integer", n).any;
const errorOf = (p: Promise<unknown>) => rejectionOf(p);

describe("InitializeSession", () => {
  it("mints a 144-bit URL-safe id when none is given", async () => {
    const c = (await bridge()).client("grpc");
    const a = await c.initializeSession({});
    const b = await c.initializeSession({});
    expect(a.sessionId).toMatch(/^[A-Za-z0-9_-]{24}$/);
    expect(a.sessionId).not.toBe(b.sessionId);
    expect(a).toMatchObject({ success: true, created: true });
  });

  it("is idempotent for a given id and keeps the first call's metadata", async () => {
    const c = (await bridge()).client();
    const first = await c.initializeSession({
      sessionId: "session-one-0000001",
      metadata: { user: "ada" },
    });
    const again = await c.initializeSession({
      sessionId: "session-one-0000001",
      metadata: { user: "bob" },
    });
    expect(first.created).toBe(true);
    expect(again.created).toBe(false);
    expect((await c.getSession({ sessionId: "session-one-0000001" })).metadata).toEqual({
      user: "ada",
    });
  });

  it("creates initial variables with the session, all or nothing", async () => {
    const c = (await bridge()).client();
    const res = await c.initializeSession({
      sessionId: "session-with-vars-01",
      initialVariables: [
        {
          name: "temperature",
          type: "float",
          initialValue: encodeValue("float", 0.7).any,
          constraintsJson: '{"min":0,"max":2}',
        },
        {
          name: "model",
          type: "choice",
          initialValue: encodeValue("choice", "gpt").any,
          constraintsJson: '{"choices":["gpt","claude"]}',
        },
      ],
    });
    expect(Object.keys(res.initialVariables).sort()).toEqual(["model", "temperature"]);
    expect(res.availableTools.conversation_append?.name).toBe("conversation_append");
    const bad = await errorOf(
      c.initializeSession({
        sessionId: "session-bad-vars-001",
        initialVariables: [
          { name: "ok", type: "integer", initialValue: int(1) },
          {
            name: "t",
            type: "float",
            initialValue: encodeValue("float", 5).any,
            constraintsJson: '{"max":2}',
          },
        ],
      }),
    );
    expect(bad?.code).toBe(Code.InvalidArgument);
    expect(bad?.rawMessage).toContain("above maximum");
    expect((await c.heartbeat({ sessionId: "session-bad-vars-001" })).sessionValid).toBe(false);
  });

  it("records the session config in its metadata", async () => {
    const c = (await bridge()).client();
    await c.initializeSession({
      sessionId: "session-config-00001",
      config: { enableCaching: true, cacheTtlSeconds: 9, enableTelemetry: false },
    });
    expect((await c.getSession({ sessionId: "session-config-00001" })).metadata).toMatchObject({
      enable_caching: "true",
      cache_ttl_seconds: "9",
      enable_telemetry: "false",
    });
  });

  it("refuses sessions beyond the limit with RESOURCE_EXHAUSTED", async () => {
    const c = (await bridge({ maxSessions: 2 })).client();
    await c.initializeSession({});
    await c.initializeSession({});
    expect((await errorOf(c.initializeSession({})))?.code).toBe(Code.ResourceExhausted);
  });
});

describe("session lifecycle", () => {
  it("reports real counts and keeps sessions apart", async () => {
    const c = (await bridge()).client();
    const a = (await c.initializeSession({})).sessionId;
    const b = (await c.initializeSession({})).sessionId;
    await c.registerVariable({ sessionId: a, name: "x", type: "integer", initialValue: int(1) });
    await c.registerVariable({ sessionId: a, name: "y", type: "integer", initialValue: int(1) });
    const info = await c.getSession({ sessionId: a });
    expect(info.variableCount).toBe(2);
    expect(info.toolCount).toBeGreaterThanOrEqual(4);
    expect((await c.getSession({ sessionId: b })).variableCount).toBe(0);
    expect((await errorOf(c.getVariable({ sessionId: b, variableIdentifier: "x" })))?.code).toBe(
      Code.NotFound,
    );
    const { variable } = await c.getVariable({ sessionId: a, variableIdentifier: "x" });
    expect(
      (await errorOf(c.getVariable({ sessionId: b, variableIdentifier: variable?.id ?? "" })))
        ?.code,
    ).toBe(Code.NotFound);
  });

  it("slides the TTL on every call and on Heartbeat, then expires", async () => {
    let t = Date.now();
    const b = await bridge({ now: () => t, sessionTtlSeconds: 60 });
    const c = b.client();
    const { sessionId } = await c.initializeSession({});
    const idle = (await c.initializeSession({})).sessionId;
    await c.registerVariable({ sessionId, name: "x", type: "integer", initialValue: int(1) });
    t += 45_000;
    expect((await c.heartbeat({ sessionId })).sessionValid).toBe(true);
    t += 45_000;
    await c.getVariable({ sessionId, variableIdentifier: "x" });
    t += 45_000;
    expect((await c.heartbeat({ sessionId })).sessionValid).toBe(true);
    expect((await c.heartbeat({ sessionId: idle })).sessionValid).toBe(false);
    expect((await errorOf(c.getSession({ sessionId: idle })))?.code).toBe(Code.NotFound);
    t += 61_000;
    expect((await errorOf(c.getVariable({ sessionId, variableIdentifier: "x" })))?.code).toBe(
      Code.NotFound,
    );
  });

  it("ends the watch streams of an expired session", async () => {
    let t = Date.now();
    const b = await bridge({ now: () => t, sessionTtlSeconds: 10 });
    const c = b.client("grpc");
    const { sessionId } = await c.initializeSession({});
    let markerAt: number | undefined;
    const ended = (async () => {
      try {
        // No variable changes: the only update is the sync marker.
        for await (const u of c.watchVariables({ sessionId, syncMarker: true })) {
          markerAt = u.timestamp === undefined ? Number.NaN : timestampMs(u.timestamp);
        }
        return undefined;
      } catch (e) {
        return e as ConnectError;
      }
    })();
    await waitFor(() => expect(markerAt).toBeDefined());
    expect(markerAt).toBe(t); // stamped by the server's clock
    t += 11_000;
    const error = await ended;
    expect(error?.code).toBe(Code.NotFound);
    // The stream says the session expired, not the generic "not found" (which mentions expiry too).
    expect(error?.rawMessage).toBe(sessionEnded("expired").rawMessage);
    expect(error?.rawMessage).not.toBe(sessionNotFound(sessionId).rawMessage);
  });

  it("auto-creates unknown sessions only when enabled", async () => {
    const off = (await bridge()).client();
    expect(
      (
        await errorOf(
          off.registerVariable({
            sessionId: "session-auto-000001",
            name: "x",
            type: "integer",
            initialValue: int(1),
          }),
        )
      )?.code,
    ).toBe(Code.NotFound);
    const on = (await bridge({ autoCreateSessions: true })).client();
    await on.registerVariable({
      sessionId: "session-auto-000001",
      name: "x",
      type: "integer",
      initialValue: int(1),
    });
    expect((await on.getSession({ sessionId: "session-auto-000001" })).metadata.auto_created).toBe(
      "true",
    );
  });

  it("cleans up idempotently, refusing a locked session unless forced", async () => {
    const c = (await bridge()).client();
    const { sessionId } = await c.initializeSession({});
    await c.registerVariable({ sessionId, name: "x", type: "integer", initialValue: int(1) });
    await c.startOptimization({ sessionId, variableIdentifier: "x", optimizerId: "o" });
    expect((await errorOf(c.cleanupSession({ sessionId })))?.code).toBe(Code.FailedPrecondition);
    const forced = await c.cleanupSession({ sessionId, force: true });
    expect(forced).toMatchObject({ success: true, resourcesCleaned: 1 });
    expect(await c.cleanupSession({ sessionId })).toMatchObject({
      success: true,
      resourcesCleaned: 0,
    });
    expect((await c.heartbeat({ sessionId })).sessionValid).toBe(false);
  });

  it("answers Ping without a session", async () => {
    const res = await (await bridge()).client("grpc-web").ping({ message: "hi" });
    expect(res.message).toBe("hi");
    expect(Number(res.serverTime?.seconds)).toBeGreaterThan(1_700_000_000);
  });
});

describe("wire formats", () => {
  it("refuses Connect JSON with a message that says what to change, except for Ping", async () => {
    const b = await bridge();
    const json = createClient(
      BridgeService,
      createConnectTransport({ baseUrl: b.url, httpVersion: "1.1", useBinaryFormat: false }),
    );
    expect((await json.ping({ message: "curl-able" })).message).toBe("curl-able");
    const refused = await errorOf(json.initializeSession({}));
    expect(refused?.code).toBe(Code.InvalidArgument);
    expect(refused?.rawMessage).toContain("useBinaryFormat: true");
  });
});
