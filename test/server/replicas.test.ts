/**
 * Two bridge replicas on one real Redis behave as one server: every RPC of
 * the wire contract that touches shared state, called on one replica, is
 * seen on the other. The same on a Redis Cluster (three primaries with a
 * replica each).
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { VariableUpdate } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { decodeJsonAny, decodeValue, encodeJsonAny, encodeValue } from "../../src/values/index.js";
import { bridgePerTest, type RunningBridge } from "../support/bridge.js";
import { rejectionOf } from "../support/errors.js";
import { createManualTimers, type ManualTimers } from "../support/manual-timers.js";
import { startRedisCluster } from "../support/redis-cluster.js";
import { startRedis } from "../support/redis-server.js";
import { replicasPerTest } from "../support/replicas.js";
import { until } from "../support/wait.js";

/** The Redis each describe block runs on. */
let redis: { readonly url: string; stop(): Promise<void> } | undefined;
let deployment = 0;

const replica = replicasPerTest(() => redis?.url ?? "");
const bridgeOnly = bridgePerTest();

/**
 * Two replicas of one deployment (a key prefix of their own), and a way to
 * start more. With `timers`, their stores' clocks and expiry sweeps follow
 * them (the bridges keep Node's timers).
 */
async function replicas(options: { sessionTtlSeconds?: number } = {}, timers?: ManualTimers) {
  const keyPrefix = `replicas${deployment++}:`;
  const store = { sweepIntervalMs: 100, ...(timers === undefined ? {} : { timers }) };
  const start = async () => (await replica({ keyPrefix, store, bridge: options })).bridge;
  const [a, b] = await Promise.all([start(), start()]);
  return [a, b, start] as const;
}

const float = (n: number) => encodeValue("float", n).any;
const text = (s: string) => encodeJsonAny(s);
const int = (n: number) => encodeValue("integer", n).any;

describe.each([
  { backend: "one Redis", start: () => startRedis() },
  { backend: "a Redis Cluster", start: () => startRedisCluster() },
])("two replicas on $backend", ({ start }) => {
  beforeAll(async () => {
    redis = await start();
  }, 60_000);
  afterAll(async () => {
    await redis?.stop();
    redis = undefined;
  });

  it("a write on one replica is read on the other", async () => {
    const [a, b] = await replicas();
    const { sessionId } = await a.client().initializeSession({});
    await a
      .client()
      .registerVariable({ sessionId, name: "t", type: "float", initialValue: float(0.5) });
    await a.client().setVariable({ sessionId, variableIdentifier: "t", value: float(0.9) });
    const seen = await b.client("grpc").getVariable({ sessionId, variableIdentifier: "t" });
    expect(seen.variable?.version).toBe(1);
    expect(decodeValue(seen.variable?.value).value).toBe(0.9);
    const listed = await b.client().listVariables({ sessionId });
    expect(listed.variables.map((v) => v.name)).toEqual(["t"]);
  });

  it("a watch on one replica receives the other's writes in version order, ending at the last", async () => {
    const [a, b] = await replicas();
    const { sessionId } = await a.client().initializeSession({});
    await a
      .client()
      .registerVariable({ sessionId, name: "n", type: "integer", initialValue: int(0) });
    const abort = new AbortController();
    const it = b
      .client("grpc")
      .watchVariables(
        { sessionId, variableIdentifiers: ["n"], syncMarker: true },
        { signal: abort.signal },
      )
      [Symbol.asyncIterator]();
    expect((await it.next()).value?.updateType).toBe("sync");
    try {
      for (let i = 1; i <= 20; i++) {
        await a.client("grpc").setVariable({ sessionId, variableIdentifier: "n", value: int(i) });
      }
      // Writes that land before the other replica reads them may arrive as
      // their newest value only (a watch delivers state, not every step):
      // versions only grow, none twice, and the last one arrives.
      const versions: number[] = [];
      while (versions.at(-1) !== 20) {
        const update = (await it.next()).value as VariableUpdate;
        if (update.updateType === "value_changed") versions.push(update.variable?.version ?? -1);
      }
      expect(versions).toEqual([...new Set(versions)].sort((x, y) => x - y));
      expect(versions.every((v) => v >= 1 && v <= 20)).toBe(true);
    } finally {
      abort.abort();
    }
  });

  it("a watch that moves to the other replica while writes go on gets every later change there, or is told to resynchronize", async () => {
    const [a, b] = await replicas();
    const last = 40;
    // Moved at several points of the writing, each time a session's first
    // watch stream on B (B begins following it then).
    for (const moveAt of [2, 12, 25]) {
      const { sessionId } = await a.client().initializeSession({});
      await a
        .client()
        .registerVariable({ sessionId, name: "n", type: "integer", initialValue: int(0) });
      const onA = new AbortController();
      const watchA = a
        .client("grpc")
        .watchVariables({ sessionId, syncMarker: true }, { signal: onA.signal })
        [Symbol.asyncIterator]();
      expect((await watchA.next()).value?.updateType).toBe("sync");
      let moved!: () => void;
      const moving = new Promise<void>((resolve) => {
        moved = resolve;
      });
      const writing = (async () => {
        for (let i = 1; i <= last; i++) {
          await a.client().setVariable({ sessionId, variableIdentifier: "n", value: int(i) });
          if (i === moveAt) moved();
        }
      })();
      await moving;
      // The client reconnects to B: its initial values, then every later
      // change while A goes on writing.
      onA.abort();
      const onB = new AbortController();
      const watchB = b
        .client("grpc")
        .watchVariables(
          { sessionId, includeInitialValues: true, syncMarker: true },
          { signal: onB.signal },
        )
        [Symbol.asyncIterator]();
      try {
        const initial = (await watchB.next()).value as VariableUpdate;
        expect(initial.updateType).toBe("initial_value");
        const from = initial.variable?.version ?? -1;
        expect(from).toBeGreaterThanOrEqual(moveAt);
        expect((await watchB.next()).value?.updateType).toBe("sync");
        const versions: number[] = [];
        let ended: unknown;
        while (versions.at(-1) !== last && ended === undefined) {
          const next = await watchB.next().catch((e: unknown) => {
            ended = e;
            return undefined;
          });
          const update = next?.value as VariableUpdate | undefined;
          if (update?.updateType === "value_changed") versions.push(update.variable?.version ?? -1);
        }
        await writing;
        if (ended !== undefined) {
          // Told, never a silent gap: the client starts over from current values.
          const error = ConnectError.from(ended);
          expect(error.code).toBe(Code.Unavailable);
          expect(error.rawMessage).toContain("resynchronize");
        } else {
          // A value overwritten before B read it arrives as the newer one:
          // versions only grow, all after the initial one, up to the last.
          expect(versions).toEqual([...new Set(versions)].sort((x, y) => x - y));
          expect(versions.every((v) => v > from)).toBe(true);
        }
      } finally {
        onB.abort();
        await writing;
      }
    }
  }, 60_000);

  it("compare-and-swap races across replicas lose no update", async () => {
    const [a, b] = await replicas();
    const { sessionId } = await a.client().initializeSession({});
    await a
      .client()
      .registerVariable({ sessionId, name: "c", type: "integer", initialValue: int(0) });
    const worker = async (bridge: RunningBridge, times: number) => {
      const c = bridge.client("grpc");
      for (let done = 0; done < times; ) {
        const current = (await c.getVariable({ sessionId, variableIdentifier: "c" })).variable;
        const value = Number(decodeValue(current?.value).value);
        const ok = await c
          .setVariable({
            sessionId,
            variableIdentifier: "c",
            value: int(value + 1),
            expectedVersion: current?.version ?? 0,
            expectVersionZero: (current?.version ?? 0) === 0,
          })
          .then(
            () => true,
            () => false,
          );
        if (ok) done++;
      }
    };
    await Promise.all([worker(a, 15), worker(b, 15), worker(a, 15), worker(b, 15)]);
    const final = (await b.client().getVariable({ sessionId, variableIdentifier: "c" })).variable;
    expect([Number(decodeValue(final?.value).value), final?.version]).toEqual([60, 60]);
  });

  it("an atomic batch is all or nothing, whichever replica looks", async () => {
    const [a, b] = await replicas();
    const { sessionId } = await a.client().initializeSession({});
    for (const name of ["x", "y"]) {
      await a.client().registerVariable({
        sessionId,
        name,
        type: "float",
        initialValue: float(0),
        constraintsJson: '{"min":0,"max":1}',
      });
    }
    const refused = await b.client().setVariables({
      sessionId,
      atomic: true,
      updates: { x: float(0.5), y: float(7) },
    });
    expect(refused.success).toBe(false);
    const after = await a.client().getVariables({ sessionId, variableIdentifiers: ["x", "y"] });
    expect(Object.values(after.variables).map((v) => v.version)).toEqual([0, 0]);
    const applied = await b.client().setVariables({
      sessionId,
      atomic: true,
      updates: { x: float(0.5), y: float(0.25) },
    });
    expect(applied.success).toBe(true);
    const both = await a.client().getVariables({ sessionId, variableIdentifiers: ["x", "y"] });
    expect(Object.values(both.variables).map((v) => v.version)).toEqual([1, 1]);
  });

  it("an optimization lock taken on one replica holds on the other, and so do dependency cycles", async () => {
    const [a, b] = await replicas();
    const { sessionId } = await a.client().initializeSession({});
    for (const name of ["p", "q"]) {
      await a.client().registerVariable({ sessionId, name, type: "float", initialValue: float(0) });
    }
    await a
      .client()
      .startOptimization({ sessionId, variableIdentifier: "p", optimizerId: "opt-a" });
    await rejectionOf(
      b.client().setVariable({ sessionId, variableIdentifier: "p", value: float(1) }),
      Code.FailedPrecondition,
    );
    await b.client().setVariable({
      sessionId,
      variableIdentifier: "p",
      value: float(1),
      metadata: { optimizer_id: "opt-a" },
    });
    await a.client().addDependency({ sessionId, fromVariable: "p", toVariable: "q" });
    await rejectionOf(
      b.client().addDependency({ sessionId, fromVariable: "q", toVariable: "p" }),
      Code.InvalidArgument,
    );
  });

  it("CleanupSession on one replica ends the session and its watch streams on both", async () => {
    const [a, b] = await replicas();
    const { sessionId } = await a.client().initializeSession({});
    const watch = b
      .client("grpc")
      .watchVariables({ sessionId, syncMarker: true })
      [Symbol.asyncIterator]();
    expect((await watch.next()).value?.updateType).toBe("sync");
    await a.client().cleanupSession({ sessionId });
    const ended = await watch.next().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(String(ended)).toContain("session ended: cleaned up");
    expect((await b.client().heartbeat({ sessionId })).sessionValid).toBe(false);
  });

  it("a session kept alive through one replica stays alive on the other; an idle one expires everywhere", async () => {
    const timers = createManualTimers();
    const [a, b] = await replicas({ sessionTtlSeconds: 1 }, timers);
    const busy = (await a.client().initializeSession({})).sessionId;
    const idle = (await a.client().initializeSession({})).sessionId;
    const watch = b
      .client("grpc")
      .watchVariables({ sessionId: idle, syncMarker: true })
      [Symbol.asyncIterator]();
    expect((await watch.next()).value?.updateType).toBe("sync");
    // 1.8 s pass in steps of 0.3 s: the busy session's heartbeats keep it
    // alive; the idle one expires at 1 s and a sweep ends it.
    for (let i = 0; i < 6; i++) {
      await timers.advance(300);
      expect(
        (await (i % 2 === 0 ? a : b).client().heartbeat({ sessionId: busy })).sessionValid,
      ).toBe(true);
    }
    const ended = await watch.next().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(String(ended)).toContain("session ended: expired");
    for (const r of [a, b]) {
      expect((await r.client().heartbeat({ sessionId: idle })).sessionValid).toBe(false);
    }
  });

  it("tools a worker registers on one replica are listed and forwarded on every replica, and owned across them", async () => {
    const [a, b, start] = await replicas();
    const worker = await bridgeOnly({ autoCreateSessions: true, builtinTools: false });
    for (const name of ["shout", "shout_here"]) {
      worker.server.registerTool({
        name,
        description: "Upper-cases a text.",
        parameters: [{ name: "text", type: "string", required: true }],
        handler: ({ text: t }) => String(t).toUpperCase(),
      });
    }
    const { sessionId } = await a.client().initializeSession({});
    const registration = (scope: string, workerId: string, name = "shout") => ({
      sessionId: scope,
      workerId,
      tools: [
        {
          name,
          description: "Upper-cases a text.",
          parameters: [{ name: "text", type: "string", required: true }],
          metadata: { worker_address: `127.0.0.1:${worker.port}` },
        },
      ],
    });
    await a.workerClient().registerTools(registration("", "py-1"));
    await a.workerClient().registerTools(registration(sessionId, "py-1", "shout_here"));
    // Another worker cannot take the name, through either replica.
    for (const r of [a, b]) {
      await rejectionOf(
        r.workerClient().registerTools(registration("", "py-2")),
        Code.AlreadyExists,
      );
    }
    const call = async (r: RunningBridge, toolName: string) => {
      const res = await r
        .client("grpc")
        .executeTool({ sessionId, toolName, parameters: { text: text("hi") } });
      return res.success ? decodeJsonAny(res.result) : res.errorMessage;
    };
    const seenOnB = async () =>
      (await b.client().getExposedElixirTools({ sessionId })).tools
        .map((t) => t.name)
        .filter((name) => name.startsWith("shout"))
        .sort();
    await until(async () => (await seenOnB()).length >= 2, "both tools listed on B");
    expect(await seenOnB()).toEqual(["shout", "shout_here"]);
    expect(await call(b, "shout")).toBe("HI");
    expect(await call(b, "shout_here")).toBe("HI");
    // The audit trail of both replicas is readable from either.
    const trail = async () =>
      (await a.server.readAuditTrail({ sessionId })).map((e) => [e.action, e.tool, e.outcome]);
    await until(
      async () => (await trail()).filter(([action]) => action === "execute").length >= 2,
      "both executions in the shared audit trail",
    );
    expect(await trail()).toEqual([
      ["register", "shout_here", "ok"],
      ["execute", "shout", "ok"],
      ["execute", "shout_here", "ok"],
    ]);
    // A replica that starts later knows them too.
    const c = await start();
    expect(await call(c, "shout")).toBe("HI");
    expect(await call(c, "shout_here")).toBe("HI");
    // The session's tools end with it, on every replica.
    await a.client().cleanupSession({ sessionId });
    const other = (await b.client().initializeSession({})).sessionId;
    const gone = await b.client().executeTool({ sessionId: other, toolName: "shout_here" });
    expect(gone.metadata.error_kind).toBe("not_found");
    const global = await b
      .client()
      .executeTool({ sessionId: other, toolName: "shout", parameters: { text: text("x") } });
    expect(decodeJsonAny(global.result)).toBe("X");
  });

  it("a client's session quota holds across replicas", async () => {
    const keyPrefix = `replicas${deployment++}:`;
    const start = async () =>
      (
        await replica({
          keyPrefix,
          bridge: { maxSessionsPerClient: 3, trustedProxies: ["127.0.0.1"] },
        })
      ).bridge;
    const [a, b] = await Promise.all([start(), start()]);
    const as = { headers: { "x-forwarded-for": "203.0.113.50" } };
    await a.client().initializeSession({}, as);
    const second = await b.client().initializeSession({}, as);
    await a.client().initializeSession({}, as);
    for (const r of [a, b]) {
      const e = await rejectionOf(r.client().initializeSession({}, as), Code.ResourceExhausted);
      expect(e.rawMessage).toContain("--max-sessions-per-client");
    }
    await a.client().cleanupSession({ sessionId: second.sessionId });
    expect((await b.client().initializeSession({}, as)).created).toBe(true);
  });
});
