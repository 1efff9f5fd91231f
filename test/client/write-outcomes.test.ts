import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { explain } from "../../demo/src/errors.js";
import { createSessionContext, type SessionContext, writeOutcome } from "../../src/client/index.js";
import { fromServerReply } from "../../src/client/write-outcome.js";
import { BridgeService } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { encodeValue } from "../../src/values/index.js";
import { protocols, type RunningBridge, startBridge, transportFor } from "../support/bridge.js";
import { rejectionOf } from "../support/errors.js";
import { startRedis, type TestRedis } from "../support/redis-server.js";
import { replicasPerTest } from "../support/replicas.js";
import { startTcpProxy, type TcpProxy } from "../support/tcp-proxy.js";
import { until } from "../support/wait.js";

let bridge: RunningBridge;
beforeAll(async () => {
  bridge = await startBridge();
});
afterAll(async () => {
  await bridge.stop();
});

describe.each(protocols)("write outcomes over %s", (protocol) => {
  let proxy: TcpProxy;
  let ctx: SessionContext;
  afterEach(async () => {
    await ctx.close().catch(() => undefined); // the session may be gone with the test's bridge state
    await proxy.close();
  });

  /** A context through the proxy, no watch or heartbeat: only the writes travel. */
  const open = async () => {
    proxy = await startTcpProxy(bridge.port);
    ctx = await createSessionContext({
      transport: transportFor(protocol, proxy.url),
      watch: false,
      heartbeatMs: 0,
    });
    await ctx.register("counter", "integer", 0);
    return ctx;
  };

  /** The stored version of `counter`, read past the proxy. */
  const storedVersion = async (sessionId: string) => {
    const res = await bridge
      .client(protocol)
      .getVariable({ sessionId, variableIdentifier: "counter", bypassCache: true });
    return res.variable?.version ?? -1;
  };

  /**
   * Starts `write` with replies held, waits until the server has applied it
   * (`applied` holds), then resets the connection; returns the error.
   */
  const failAfter = async (write: () => Promise<unknown>, applied: () => Promise<boolean>) => {
    proxy.holdReplies();
    const settled = write().then(
      () => undefined,
      (e: unknown) => e,
    );
    await until(applied, "the write applied on the server");
    proxy.resetClients();
    return settled;
  };
  /** {@link failAfter} a write that stores version `applied` of `counter`. */
  const failAfterApplied = (write: () => Promise<unknown>, applied: number) =>
    failAfter(write, async () => (await storedVersion(ctx.sessionId)) === applied);

  /** The stored `name` variable, read past the proxy (undefined: none). */
  const stored = async (name: string) =>
    bridge
      .client(protocol)
      .getVariable({ sessionId: ctx.sessionId, variableIdentifier: name, bypassCache: true })
      .then(
        (res) => res.variable,
        () => undefined,
      );

  const expectUnknown = (error: unknown) => {
    expect(error).toBeInstanceOf(ConnectError);
    const e = error as ConnectError;
    expect({ code: Code[e.code], outcome: writeOutcome(e) }).toEqual({
      code: Code[Code.Unavailable],
      outcome: "unknown",
    });
  };

  /**
   * Loses the reply of a write the server applied (version 1 of `counter`)
   * and returns what the write resolved to and the stored version: the
   * client sends it again under the same idempotency key, and the server
   * answers from the first call instead of applying it twice.
   */
  const retriedOnce = async (write: () => Promise<unknown>) => {
    let result: unknown;
    const error = await failAfterApplied(async () => {
      result = await write();
    }, 1);
    return { error, result, version: await storedVersion(ctx.sessionId) };
  };

  it("a set whose reply is lost after it was applied is sent again and applied once", async () => {
    await open();
    const { error, result, version } = await retriedOnce(() => ctx.set("counter", 1));
    expect({ error, value: (result as { value: unknown }).value, version }).toEqual({
      error: undefined,
      value: 1,
      version: 1,
    });
  });

  it("a setMany whose reply is lost after it was applied is sent again and applied once", async () => {
    await open();
    const { error, result, version } = await retriedOnce(() =>
      ctx.setMany({ counter: 1 }, { atomic: true }),
    );
    const batch = result as { success: boolean; variables: Record<string, { version: number }> };
    expect({ error, success: batch.success, v: batch.variables.counter?.version, version }).toEqual(
      { error: undefined, success: true, v: 1, version: 1 },
    );
  });

  it("a CAS whose reply is lost after it was applied is sent again, and the counter counts once", async () => {
    await open();
    const { error, result, version } = await retriedOnce(() =>
      ctx.set("counter", 1, { expectedVersion: 0 }),
    );
    // Not a conflict with itself: the resend is answered with the first result.
    expect({ error, stored: (result as { version: number }).version, version }).toEqual({
      error: undefined,
      stored: 1,
      version: 1,
    });
    expect(await ctx.get("counter", { bypassCache: true })).toBe(1);
  });

  it("a write whose every resend fails is unknown, never Aborted", async () => {
    await open();
    proxy.holdReplies();
    const settled = ctx.set("counter", 1).then(
      () => undefined,
      (e: unknown) => e,
    );
    await until(async () => (await storedVersion(ctx.sessionId)) === 1, "the write applied");
    // Every connection, the resends' included, is reset until the client gives up.
    let done = false;
    void settled.then(() => {
      done = true;
    });
    while (!done) {
      proxy.resetClients();
      proxy.holdReplies();
      // The fault injector's pace: it resets whatever connection the
      // client opened since, until the client gives up.
      await new Promise((r) => setTimeout(r, 5));
    }
    const error = await settled;
    expectUnknown(error);
    // The demo must not tell the user someone else changed it.
    expect(explain(error, "saving 'counter'").title).toBe("Not sure it was saved");
    expect(await storedVersion(ctx.sessionId)).toBe(1);
  });

  it("register and delete lost after applying are sent again and applied once", async () => {
    await open();
    const registered = await failAfter(
      () => ctx.register("other", "integer", 1),
      async () => (await stored("other")) !== undefined,
    );
    expect({ registered, other: (await stored("other"))?.version }).toEqual({
      registered: undefined,
      other: 0,
    });
    const deleted = await failAfter(
      () => ctx.delete("other"),
      async () => (await stored("other")) === undefined,
    );
    expect({ deleted, other: await stored("other") }).toEqual({
      deleted: undefined,
      other: undefined,
    });
  });

  it("rollback and the optimization lock lost after applying are sent again and applied once", async () => {
    await open();
    await ctx.set("counter", 7);
    // A rollback carries a key; taking or releasing a lock one holds again changes nothing.
    const rolledBack = await failAfterApplied(() => ctx.rollback("counter", 0), 2);
    const started = await failAfter(
      () => ctx.startOptimization("counter", "tuner"),
      async () => (await stored("counter"))?.optimizationStatus?.optimizing === true,
    );
    const stopped = await failAfter(
      () => ctx.stopOptimization("counter", { optimizerId: "tuner" }),
      async () => (await stored("counter"))?.optimizationStatus?.optimizing === false,
    );
    const after = await stored("counter");
    expect({ rolledBack, started, stopped, version: after?.version }).toEqual({
      rolledBack: undefined,
      started: undefined,
      stopped: undefined,
      version: 2,
    });
    expect(await ctx.get("counter", { bypassCache: true })).toBe(0);
  });

  it("a forced release lost after applying is unknown: resent, it could release a lock taken since", async () => {
    await open();
    await ctx.startOptimization("counter", "tuner");
    expectUnknown(
      await failAfter(
        () => ctx.stopOptimization("counter", { force: true }),
        async () => (await stored("counter"))?.optimizationStatus?.optimizing === false,
      ),
    );
  });

  it("withOptimizationLock whose start lost its reply takes the lock, runs, and releases it", async () => {
    await open();
    let ran = false;
    const error = await failAfter(
      () =>
        ctx.withOptimizationLock(["counter"], "tuner", async () => {
          ran = true;
        }),
      async () => (await stored("counter"))?.optimizationStatus?.optimizing === true,
    );
    expect({
      error,
      ran,
      locked: (await stored("counter"))?.optimizationStatus?.optimizing,
    }).toEqual({ error: undefined, ran: true, locked: false });
  });

  it("a read whose connection fails is Unavailable, never Aborted", async () => {
    await open();
    const error = await failAfter(
      () => ctx.get("counter", { bypassCache: true }),
      async () => true,
    );
    expect(error).toBeInstanceOf(ConnectError);
    const e = error as ConnectError;
    expect({ code: Code[e.code], cause: e.cause instanceof ConnectError }).toEqual({
      code: Code[Code.Unavailable],
      cause: true,
    });
    expect(e.rawMessage).toMatch(/^the connection to the bridge failed \(/);
  });

  it("a real CAS conflict is still Aborted, refused, with the current version", async () => {
    await open();
    await ctx.set("counter", 5);
    const error = await ctx.set("counter", 6, { expectedVersion: 0 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ConnectError);
    const e = error as ConnectError;
    expect({ code: Code[e.code], outcome: writeOutcome(e) }).toEqual({
      code: Code[Code.Aborted],
      outcome: "refused",
    });
    expect(e.rawMessage).toContain("current version is 1");
    expect(explain(e, "saving 'counter'").title).toBe("Someone else changed it first");
  });
});

describe.each(protocols)("what the classification relies on in connect, over %s", (protocol) => {
  // classifyWriteFailure trusts only errors connect decoded from a server's
  // reply (fromServerReply): these pin that a refusal is one and a
  // connection reset, which connect-node reports as Aborted, is not.
  it("a server's refusal comes from its reply; a connection reset does not", async () => {
    const refused = await createClient(BridgeService, transportFor(protocol, bridge.url))
      .getVariable({ sessionId: "no-such-session", variableIdentifier: "x" })
      .then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
    const proxy = await startTcpProxy(bridge.port);
    try {
      const client = createClient(BridgeService, transportFor(protocol, proxy.url));
      const { sessionId } = await client.initializeSession({});
      await client.registerVariable({
        sessionId,
        name: "n",
        type: "integer",
        initialValue: encodeValue("integer", 0).any,
      });
      proxy.holdReplies();
      const reset = client
        .setVariable({ sessionId, variableIdentifier: "n", value: encodeValue("integer", 1).any })
        .then(
          () => undefined,
          (e: unknown) => ConnectError.from(e),
        );
      await until(async () => {
        const res = await bridge
          .client(protocol)
          .getVariable({ sessionId, variableIdentifier: "n", bypassCache: true });
        return res.variable?.version === 1;
      }, "the write applied on the server");
      proxy.resetClients();
      const lost = await reset;
      expect({
        refused: refused && { code: Code[refused.code], fromReply: fromServerReply(refused) },
        lost: lost && { code: Code[lost.code], fromReply: fromServerReply(lost) },
      }).toEqual({
        refused: { code: "NotFound", fromReply: true },
        lost: { code: "Aborted", fromReply: false },
      });
    } finally {
      await proxy.close();
    }
  });
});

describe.each(protocols)("idempotency keys from a raw client, over %s", (protocol) => {
  const int = (n: number) => encodeValue("integer", n).any;
  const session = async () => {
    const client = bridge.client(protocol);
    const { sessionId } = await client.initializeSession({});
    await client.registerVariable({ sessionId, name: "n", type: "integer", initialValue: int(0) });
    return { client, sessionId };
  };

  it("the same key twice gets the first result and one version step", async () => {
    const { client, sessionId } = await session();
    const write = { sessionId, variableIdentifier: "n", value: int(5), idempotencyKey: "k-1" };
    const first = await client.setVariable(write);
    const again = await client.setVariable(write);
    expect({
      first: first.newVersion,
      again: again.newVersion,
      value: again.variable?.version,
    }).toEqual({ first: 1, again: 1, value: 1 });
    const batch = { sessionId, updates: { n: int(6) }, idempotencyKey: "k-2" };
    const one = await client.setVariables(batch);
    const two = await client.setVariables(batch);
    expect({ one: one.newVersions, two: two.newVersions }).toEqual({
      one: { n: 2 },
      two: { n: 2 },
    });
    const rollback = {
      sessionId,
      variableIdentifier: "n",
      targetVersion: 0,
      idempotencyKey: "k-3",
    };
    const back = await client.rollbackVariable(rollback);
    const backAgain = await client.rollbackVariable(rollback);
    expect({ back: back.variable?.version, backAgain: backAgain.variable?.version }).toEqual({
      back: 3,
      backAgain: 3,
    });
    const stored = await client.getVariable({ sessionId, variableIdentifier: "n" });
    expect(stored.variable?.version).toBe(3);
  });

  it("a refusal is answered again, even after the session changed", async () => {
    const { client, sessionId } = await session();
    const write = { sessionId, variableIdentifier: "m", value: int(1), idempotencyKey: "k-m" };
    const first = await rejectionOf(client.setVariable(write));
    await client.registerVariable({ sessionId, name: "m", type: "integer", initialValue: int(0) });
    const again = await rejectionOf(client.setVariable(write));
    expect({ first: Code[first.code], again: Code[again.code] }).toEqual({
      first: "NotFound",
      again: "NotFound",
    });
    const stored = await client.getVariable({ sessionId, variableIdentifier: "m" });
    expect(stored.variable?.version).toBe(0);
  });

  it("a key reused for another write, and a malformed key, are INVALID_ARGUMENT", async () => {
    const { client, sessionId } = await session();
    await client.setVariable({
      sessionId,
      variableIdentifier: "n",
      value: int(1),
      idempotencyKey: "k",
    });
    const reused = await rejectionOf(
      client.setVariable({
        sessionId,
        variableIdentifier: "n",
        value: int(2),
        idempotencyKey: "k",
      }),
    );
    expect(Code[reused.code]).toBe("InvalidArgument");
    expect(reused.rawMessage).toContain("reused for a different write");
    for (const idempotencyKey of ["x".repeat(129), "no spaces", "é"]) {
      const bad = await rejectionOf(
        client.setVariable({ sessionId, variableIdentifier: "n", value: int(3), idempotencyKey }),
      );
      expect(Code[bad.code]).toBe("InvalidArgument");
      expect(bad.rawMessage).toContain("128 characters");
    }
    const stored = await client.getVariable({ sessionId, variableIdentifier: "n" });
    expect(stored.variable?.version).toBe(1);
  });
});

describe("idempotency keys on two replicas sharing Redis", () => {
  let redis: TestRedis;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis?.stop();
  });
  const replica = replicasPerTest(() => redis.url);

  it("a key used on one replica and retried on the other is applied once", async () => {
    const [a, b] = (
      await Promise.all([replica({ keyPrefix: "idem:" }), replica({ keyPrefix: "idem:" })])
    ).map((r) => r.bridge.client()) as [
      ReturnType<RunningBridge["client"]>,
      ReturnType<RunningBridge["client"]>,
    ];
    const { sessionId } = await a.initializeSession({});
    const value = encodeValue("integer", 0).any;
    const register = { sessionId, name: "n", type: "integer", initialValue: value };
    const registered = await a.registerVariable({ ...register, idempotencyKey: "r-1" });
    const registeredAgain = await b.registerVariable({ ...register, idempotencyKey: "r-1" });
    expect(registeredAgain.variableId).toBe(registered.variableId);
    const write = {
      sessionId,
      variableIdentifier: "n",
      value: encodeValue("integer", 1).any,
      expectedVersion: 0,
      expectVersionZero: true,
      idempotencyKey: "w-1",
    };
    const onA = await a.setVariable(write);
    const onB = await b.setVariable(write);
    expect({ a: onA.newVersion, b: onB.newVersion }).toEqual({ a: 1, b: 1 });
    const stored = await b.getVariable({ sessionId, variableIdentifier: "n" });
    expect(stored.variable?.version).toBe(1);
  });
});
