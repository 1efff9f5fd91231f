/**
 * SessionContext behaviour that needs no socket: the bridge is an in-memory
 * router (createRouterTransport) whose answers a test chooses, e.g. a
 * cleanup that fails. What crosses the wire is tested against the real
 * server in test/client/.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createRouterTransport } from "@connectrpc/connect";
import { describe, expect, it, onTestFinished, vi } from "vitest";
import { BridgeService, type Variable, VariableSchema } from "../gen/snakepit/bridge/bridge_pb.js";
import { encodeValue, variableId } from "../values/index.js";
import type { PersistenceAdapter } from "./persistence.js";
import { createSessionContext } from "./session-context.js";

const int = (name: string, value: number, version = 0): Variable =>
  create(VariableSchema, {
    id: variableId(1, name),
    name,
    type: "integer",
    value: encodeValue("integer", value).any,
    version,
  });

/** A bridge in memory: one session, every variable an integer; counts cleanups. */
function routerBridge(answers: { cleanupFailures?: number; sessionValid?: boolean } = {}) {
  const counts = { cleanups: 0, heartbeats: 0 };
  let failures = answers.cleanupFailures ?? 0;
  const transport = createRouterTransport(({ service }) => {
    service(BridgeService, {
      initializeSession: () => ({ success: true, sessionId: "s-1", created: false }),
      registerVariable: (req) => ({
        success: true,
        variable: int(req.name, 1),
      }),
      getVariables: (req) => ({
        variables: Object.fromEntries(req.variableIdentifiers.map((n) => [n, int(n, 1)])),
      }),
      heartbeat: () => {
        counts.heartbeats++;
        return { sessionValid: answers.sessionValid ?? true };
      },
      cleanupSession: () => {
        counts.cleanups++;
        if (failures > 0) {
          failures--;
          throw new ConnectError("bridge unreachable", Code.Unavailable);
        }
        return { success: true, resourcesCleaned: 1 };
      },
    });
  });
  return { transport, counts };
}

/** A PersistenceAdapter over a Map, counting clears. */
function memoryPersistence() {
  const saved = new Map<string, Uint8Array>();
  const counts = { clears: 0 };
  const adapter: PersistenceAdapter = {
    load: async () => [...saved.values()],
    save: async (_s, entries) => {
      for (const e of entries) saved.set(e.id, e.bytes);
    },
    remove: async (_s, ids) => {
      for (const id of ids) saved.delete(id);
    },
    clear: async () => {
      counts.clears++;
      saved.clear();
    },
  };
  return { saved, counts, adapter };
}

/** A context with one variable, persisted in memory, on a router bridge. */
async function persistedContext(answers: Parameters<typeof routerBridge>[0] = {}) {
  const bridge = routerBridge(answers);
  const store = memoryPersistence();
  const ctx = await createSessionContext({
    transport: bridge.transport,
    watch: false,
    persistence: store.adapter,
  });
  await ctx.register("x", "integer", 1);
  return { bridge, store, ctx };
}

describe("close", () => {
  it("empties the cache and the store even when the server cleanup fails, and retries it when called again", async () => {
    const { bridge, store, ctx } = await persistedContext({ cleanupFailures: 1 });
    expect(ctx.cache.size).toBe(1);

    const failed = await ctx.close({ cleanup: true }).then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(failed?.code).toBe(Code.Unavailable);
    expect(ctx.cache.size).toBe(0);
    expect(store.counts.clears).toBe(1);

    await ctx.close({ cleanup: true });
    expect(bridge.counts.cleanups).toBe(2);
    // The store was cleared the first time: only the failed part is redone.
    expect(store.counts.clears).toBe(1);
    // Done is done.
    await ctx.close({ cleanup: true });
    expect(bridge.counts.cleanups).toBe(2);
  });

  it("still ends the session when close() came first without cleanup", async () => {
    const { bridge, store, ctx } = await persistedContext();
    await ctx.close();
    expect(store.saved.size).toBe(1); // flushed, not cleared
    await ctx.close({ cleanup: true });
    expect(bridge.counts.cleanups).toBe(1);
    expect(store.saved.size).toBe(0);
  });

  it("stops the heartbeat: no call and no event after close", async () => {
    const { bridge, ctx, ended } = await beatingContext();
    await ctx.close();
    await vi.advanceTimersByTimeAsync(5000);
    expect(bridge.counts.heartbeats).toBe(0);
    expect(ended).toEqual([]);
  });
});

describe("heartbeat", () => {
  it("reports an ended session once and stops beating", async () => {
    const { bridge, ctx, ended } = await beatingContext();
    await vi.advanceTimersByTimeAsync(5000);
    expect(bridge.counts.heartbeats).toBe(1);
    expect(ended.map((e) => e.code)).toEqual([Code.NotFound]);
    await ctx.close();
  });
});

/**
 * A context beating every second, on fake timers, against a bridge that
 * says the session is gone; records "session-ended" events.
 */
async function beatingContext() {
  vi.useFakeTimers();
  onTestFinished(() => {
    vi.useRealTimers();
  });
  const bridge = routerBridge({ sessionValid: false });
  const ctx = await createSessionContext({
    transport: bridge.transport,
    watch: false,
    heartbeatMs: 1000,
  });
  const ended: ConnectError[] = [];
  ctx.on("session-ended", (e) => ended.push(e.error));
  return { bridge, ctx, ended };
}
