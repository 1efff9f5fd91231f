import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  createSessionContext,
  memoryOutbox,
  type OutboxStore,
  type SessionContext,
  type SessionContextEvents,
  writeOutcome,
} from "../../src/client/index.js";
import { protocols, type RunningBridge, startBridge, transportFor } from "../support/bridge.js";
import { rejectionOf } from "../support/errors.js";
import { startTcpProxy, type TcpProxy } from "../support/tcp-proxy.js";
import { until } from "../support/wait.js";

// The outbox in Node (memoryOutbox), against the real bridge behind a TCP
// proxy that plays the outage: cut() refuses every connection as a stopped
// bridge would, restore() lets them through again. Chromium runs the same
// scenarios with idbOutbox (test/browser/outbox.browser.test.ts).

let bridge: RunningBridge;
beforeAll(async () => {
  bridge = await startBridge();
});
afterAll(async () => {
  await bridge.stop();
});

const fastWatch = { initialBackoffMs: 20, maxBackoffMs: 100 };

describe.each(protocols)("the outbox over %s", (protocol) => {
  let proxy: TcpProxy;
  const open: SessionContext[] = [];
  afterEach(async () => {
    for (const ctx of open.splice(0)) await ctx.close().catch(() => undefined);
    await proxy.close();
  });

  /** A context through the proxy with an outbox, and `x` (integer, 0) registered. */
  const start = async (
    outbox: OutboxStore = memoryOutbox(),
    sessionId?: string,
  ): Promise<SessionContext> => {
    proxy ??= await startTcpProxy(bridge.port);
    const ctx = await createSessionContext({
      transport: transportFor(protocol, proxy.url),
      sessionId,
      outbox,
      watch: fastWatch,
    });
    open.push(ctx);
    return ctx;
  };
  const fresh = async (outbox?: OutboxStore) => {
    proxy = await startTcpProxy(bridge.port);
    const ctx = await start(outbox);
    await ctx.register("x", "integer", 0, { constraints: { min: 0, max: 100 } });
    await ctx.register("label", "string", "a");
    await until(() => ctx.cache.live, "the watch stream live");
    return ctx;
  };
  /** Cuts the bridge off and waits until the context knows it. */
  const goOffline = async (ctx: SessionContext) => {
    proxy.cut();
    await until(() => !ctx.cache.live, "the context offline");
  };
  /** The stored value and version of `name`, read past the proxy. */
  const server = async (sessionId: string, name: string) => {
    const res = await bridge
      .client()
      .getVariable({ sessionId, variableIdentifier: name, bypassCache: true });
    return { version: res.variable?.version };
  };
  const history = async (sessionId: string, name: string) => {
    const res = await bridge.client().getVariableHistory({ sessionId, variableIdentifier: name });
    return res.entries.map((e) => e.version).reverse();
  };

  it("edits made while the bridge is down are stored, shown pending, and committed in order when it is back", async () => {
    const ctx = await fresh();
    const pendingEvents: SessionContextEvents["pending"][] = [];
    ctx.on("pending", (e) => pendingEvents.push(e));
    await goOffline(ctx);

    const writes = [ctx.enqueue("x", 1), ctx.enqueue("x", 2), ctx.enqueue("label", "b")];
    await Promise.all(writes.map((w) => w.stored));
    expect({
      confirmed: ctx.peek("x")?.snapshot.value,
      shown: ctx.peek("x", { pending: true })?.snapshot,
      pending: ctx.pendingWrites().map((w) => [w.name, w.value, w.queued]),
    }).toEqual({
      confirmed: 0,
      shown: expect.objectContaining({ value: 2, version: 0, pending: true }),
      pending: [
        ["x", 1, true],
        ["x", 2, true],
        ["label", "b", true],
      ],
    });
    expect(pendingEvents.at(-1)).toMatchObject({ name: "label", writes: 1 });

    proxy.restore();
    const committed = await Promise.all(writes.map((w) => w.committed));
    expect(committed.map((s) => [s.name, s.value, s.version])).toEqual([
      ["x", 1, 1],
      ["x", 2, 2],
      ["label", "b", 1],
    ]);
    expect({
      pending: ctx.pendingWrites(),
      shown: ctx.peek("x", { pending: true })?.snapshot.pending,
      history: await history(ctx.sessionId, "x"),
    }).toEqual({ pending: [], shown: undefined, history: [0, 1, 2] });
  });

  it("an offline edit that conflicts is refused with the server's value, and the edit made on it is not sent", async () => {
    const ctx = await fresh();
    const refusals: SessionContextEvents["refused"][] = [];
    ctx.on("refused", (e) => refusals.push(e));
    await goOffline(ctx);
    const first = ctx.enqueue("x", 5);
    const second = ctx.enqueue("x", 6);
    await Promise.all([first.stored, second.stored]);
    // Someone else writes meanwhile.
    await bridge.client().setVariable({
      sessionId: ctx.sessionId,
      variableIdentifier: "x",
      value: (await import("../../src/values/index.js")).encodeValue("integer", 9).any,
    });
    proxy.restore();
    const [a, b] = await Promise.all([rejectionOf(first.committed), rejectionOf(second.committed)]);
    expect({
      a: [Code[a.code], writeOutcome(a)],
      b: [Code[b.code], writeOutcome(b)],
      bMessage: b.rawMessage,
      events: refusals.map((r) => [r.write.value, r.current?.value, r.current?.version]),
      stored: await server(ctx.sessionId, "x"),
      shown: ctx.peek("x", { pending: true })?.snapshot.value,
    }).toEqual({
      a: ["Aborted", "refused"],
      b: ["Aborted", "refused"],
      bMessage: expect.stringContaining("was not sent: it was made on an earlier write of 'x'"),
      events: [
        [5, 9, 1],
        [6, 9, 1],
      ],
      stored: { version: 1 },
      shown: 9,
    });
    expect(a.rawMessage).toContain("current version is 1");
  });

  it("writes stored by a closed context are replayed, once, by the next context of the session", async () => {
    const outbox = memoryOutbox();
    const ctx = await fresh(outbox);
    await goOffline(ctx);
    const write = ctx.enqueue("x", 7);
    await write.stored;
    await ctx.close();
    const closed = await rejectionOf(write.committed);
    expect([Code[closed.code], writeOutcome(closed)]).toEqual(["Canceled", "unknown"]);

    // Opened while the bridge is still down: it knows the session and has an outbox.
    const next = await start(outbox, ctx.sessionId);
    expect({ offline: next.openedOffline, created: next.created }).toEqual({
      offline: true,
      created: false,
    });
    expect(next.pendingWrites().map((w) => [w.name, w.value])).toEqual([["x", 7]]);
    proxy.restore();
    await until(() => next.pendingWrites().length === 0, "the replay");
    expect({
      stored: await server(ctx.sessionId, "x"),
      history: await history(ctx.sessionId, "x"),
    }).toEqual({ stored: { version: 1 }, history: [0, 1] });
  });

  it("writes an ended session left are dropped when the bridge creates the session again", async () => {
    const outbox = memoryOutbox();
    const ctx = await fresh(outbox);
    await goOffline(ctx);
    await ctx.enqueue("x", 5).stored;
    await ctx.close();
    await bridge.client().cleanupSession({ sessionId: ctx.sessionId, force: true });
    proxy.restore();
    const next = await start(outbox, ctx.sessionId);
    // Same name, same version 0: the old compare-and-swap would match it.
    await next.register("x", "integer", 0);
    expect({
      created: next.created,
      pending: next.pendingWrites(),
      stored: await outbox.load(ctx.sessionId),
    }).toEqual({ created: true, pending: [], stored: [] });
    expect(await next.get("x", { bypassCache: true })).toBe(0);
  });

  it("close({ cleanup: true }) ends the session and clears its outbox", async () => {
    const outbox = memoryOutbox();
    const ctx = await fresh(outbox);
    await goOffline(ctx);
    await ctx.enqueue("x", 5).stored;
    proxy.restore();
    // Back on a working connection first (the cut one may still be in use).
    await until(() => ctx.cache.live, "the context live again");
    // The write may or may not be sent before the cleanup: either way nothing stays stored.
    await ctx.close({ cleanup: true });
    expect(await outbox.load(ctx.sessionId)).toEqual([]);
  });

  it("a write whose reply is lost after it was applied is sent again under its key and applied once", async () => {
    const ctx = await fresh();
    proxy.holdReplies();
    const write = ctx.enqueue("x", 3);
    await until(async () => (await server(ctx.sessionId, "x")).version === 1, "the write applied");
    proxy.resetClients();
    const snapshot = await write.committed;
    expect({
      version: snapshot.version,
      history: await history(ctx.sessionId, "x"),
    }).toEqual({ version: 1, history: [0, 1] });
  });

  it("two contexts share one outbox: one replays everything and both hear how their writes ended", async () => {
    const outbox = memoryOutbox();
    const a = await fresh(outbox);
    const b = await start(outbox, a.sessionId);
    await b.getVariable("x");
    await until(() => b.cache.live, "the second context live");
    proxy.cut();
    await until(() => !a.cache.live && !b.cache.live, "both offline");
    const fromA = a.enqueue("x", 1);
    await fromA.stored;
    // b hears of a's write and builds on it.
    await until(() => b.peek("x", { pending: true })?.snapshot.value === 1, "b shows a's edit");
    const fromB = b.enqueue("x", 2);
    await fromB.stored;
    proxy.restore();
    const [one, two] = await Promise.all([fromA.committed, fromB.committed]);
    expect([one.version, two.version, await history(a.sessionId, "x")]).toEqual([1, 2, [0, 1, 2]]);
  });

  it("bounded: a full outbox refuses a write with ResourceExhausted and stores nothing", async () => {
    const ctx = await fresh(memoryOutbox({ maxWrites: 2 }));
    await goOffline(ctx);
    await ctx.enqueue("x", 1).stored;
    await ctx.enqueue("x", 2).stored;
    const third = ctx.enqueue("x", 3);
    const [stored, committed] = await Promise.all([
      rejectionOf(third.stored),
      rejectionOf(third.committed),
    ]);
    expect({
      stored: Code[stored.code],
      same: committed === stored,
      message: stored.rawMessage,
      pending: ctx.pendingWrites().map((w) => w.value),
    }).toEqual({
      stored: "ResourceExhausted",
      same: true,
      message: expect.stringContaining("the outbox is full (2 writes"),
      pending: [1, 2],
    });
  });

  it("offline, writes are checked locally: invalid values and unknown variables are refused before storing", async () => {
    const ctx = await fresh();
    await goOffline(ctx);
    const invalid = ctx.enqueue("x", 500);
    const unknown = ctx.enqueue("never-read", 1);
    const [a, b] = await Promise.all([rejectionOf(invalid.stored), rejectionOf(unknown.stored)]);
    expect({
      a: Code[a.code],
      b: Code[b.code],
      bMessage: b.rawMessage,
      pending: ctx.pendingWrites(),
    }).toEqual({
      a: "InvalidArgument",
      b: "FailedPrecondition",
      bMessage: expect.stringContaining("cannot be written offline"),
      pending: [],
    });
  });

  it("set() with an outbox waits for the server and is exactly what enqueue().committed is", async () => {
    const ctx = await fresh();
    const snapshot = await ctx.set("x", 4);
    expect([snapshot.value, snapshot.version, ctx.pendingWrites()]).toEqual([4, 1, []]);
    const refused = await rejectionOf(ctx.set("x", 5, { expectedVersion: 0 }));
    expect(Code[refused.code]).toBe("Aborted");
  });
});

describe("pending values without an outbox", () => {
  it("a direct write shows pending until answered, and a refusal rolls it back with an event", async () => {
    const ctx = await createSessionContext({ transport: bridge.transport(), watch: false });
    try {
      await ctx.register("x", "integer", 0);
      const seen: unknown[] = [];
      ctx.on("pending", (e) => seen.push([e.writes, e.snapshot?.value]));
      const refusals: string[] = [];
      ctx.on("refused", (e) => refusals.push(Code[e.error.code]));
      const write = ctx.set("x", 1);
      expect(ctx.peek("x", { pending: true })?.snapshot).toMatchObject({ value: 1, pending: true });
      const handle = ctx.variable<number>("x");
      expect([handle.peek({ pending: true })?.value, handle.peek()?.value]).toEqual([1, 0]);
      expect(ctx.peek("x")?.snapshot.value).toBe(0);
      await write;
      const conflict = await rejectionOf(ctx.set("x", 2, { expectedVersion: 0 }));
      expect({
        seen,
        refusals,
        code: Code[conflict.code],
        shown: ctx.peek("x", { pending: true })?.snapshot.value,
      }).toEqual({
        seen: [
          [1, 1],
          [0, undefined],
          [1, 2],
          [0, undefined],
        ],
        refusals: ["Aborted"],
        code: "Aborted",
        shown: 1,
      });
      expect(() => ctx.enqueue("x", 3)).toThrow(ConnectError);
      // A write still in flight when the context closes is no longer shown.
      void ctx.set("x", 4).catch(() => undefined);
      expect(ctx.pendingWrites()).toHaveLength(1);
    } finally {
      await ctx.close();
    }
    expect(ctx.pendingWrites()).toEqual([]);
  });
});
