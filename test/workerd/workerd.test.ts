/**
 * The client in Cloudflare's real runtime: worker.ts is bundled with esbuild
 * the way a Worker project would bundle it, run in workerd through
 * Miniflare, and talks to a real bridge server on 127.0.0.1 through
 * connect-web. A connect-node client on the Node side checks what the
 * server saw.
 */
import { fileURLToPath } from "node:url";
import { Code, ConnectError } from "@connectrpc/connect";
import { build } from "esbuild";
import { Miniflare } from "miniflare";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { VariableUpdate } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { type RunningBridge, startBridge } from "../support/bridge.js";
import type { ErrorReport, OutboxResult, ScenarioResult, WatchResult } from "./worker.js";

// The newest date the installed workerd (1.20260426.x) supports.
const compatibilityDate = "2026-04-26";

let bridge: RunningBridge;
let mf: Miniflare;

beforeAll(async () => {
  bridge = await startBridge();
  const bundle = await build({
    entryPoints: [fileURLToPath(new URL("./worker.ts", import.meta.url))],
    bundle: true,
    write: false,
    format: "esm",
    platform: "browser",
    conditions: ["workerd", "worker", "browser"],
    target: "es2022",
  });
  const script = bundle.outputFiles[0]?.text;
  if (script === undefined) throw new Error("esbuild produced no output");
  // Miniflare's default outbound network allows "public" and "private"
  // addresses, so the Worker reaches the bridge on 127.0.0.1 directly.
  mf = new Miniflare({
    modules: true,
    script,
    bindings: { BRIDGE_URL: bridge.url },
    compatibilityDate,
  });
  await mf.ready;
});

afterAll(async () => {
  await mf?.dispose();
  await bridge?.stop();
});

/** Runs one scenario in workerd; a 500 carries the Worker's error report. */
async function run<T>(path: string): Promise<T> {
  const res = await mf.dispatchFetch(`http://worker${path}`);
  const body: unknown = await res.json();
  if (res.status !== 200) throw new Error(`worker failed: ${JSON.stringify(body)}`);
  return body as T;
}

/** A new session, created from Node so the test knows its id up front. */
async function newSession(): Promise<string> {
  return (await bridge.client().initializeSession({})).sessionId;
}

/**
 * Watches a session from Node: resolves `ready` once the server has
 * registered the watch (its sync marker), and `ended` with the status the
 * stream ended with.
 */
function watchFromNode(sessionId: string) {
  const updates: VariableUpdate[] = [];
  let onReady: () => void = () => {};
  const ready = new Promise<void>((resolve) => {
    onReady = resolve;
  });
  const controller = new AbortController();
  const ended = (async () => {
    try {
      const stream = bridge
        .client()
        .watchVariables({ sessionId, syncMarker: true }, { signal: controller.signal });
      for await (const update of stream) {
        if (update.updateType === "sync") onReady();
        else updates.push(update);
      }
      return undefined;
    } catch (error) {
      return ConnectError.from(error);
    }
  })();
  return { updates, ready, ended, stop: () => controller.abort() };
}

async function sessionGone(sessionId: string) {
  const c = bridge.client();
  const error = await c.getSession({ sessionId }).then(
    () => undefined,
    (e: unknown) => ConnectError.from(e),
  );
  const { sessionValid } = await c.heartbeat({ sessionId });
  return { code: error?.code, sessionValid };
}

describe("the client in workerd, through connect-web and workerFetch", () => {
  it("runs a request-scoped session: values, versions, cache hits, batches, errors, tools", async () => {
    const sessionId = await newSession();
    const watcher = watchFromNode(sessionId);
    await watcher.ready;

    const r = await run<ScenarioResult>(`/scenario?session=${sessionId}`);

    expect(r.sessionId).toBe(sessionId);
    expect(r.registered).toEqual({
      temperature: { value: 0.7, version: 0 },
      max_tokens: { value: 256, version: 0 },
    });
    expect(r.afterSet).toEqual({ value: 0.9, version: 1 });
    expect(r.cachedGet).toBe(0.9);
    expect(r.batch).toEqual({ success: true, versions: { temperature: 2, max_tokens: 1 } });
    expect(r.serverView).toEqual({
      temperature: { value: 1.1, version: 2 },
      max_tokens: { value: 512, version: 1 },
    });
    expect(r.rejectedLocally).toMatchObject({ code: Code.InvalidArgument });
    expect(r.rejectedLocally.message).toContain("above maximum");
    // The server's rejection crossed the wire and was decoded by connect-web in workerd.
    expect(r.rejectedByServer).toMatchObject({ code: Code.InvalidArgument });
    expect(r.rejectedByServer.message).toContain("value 2.5 is above maximum 2");
    expect(r.tool).toMatchObject({
      count: 1,
      messages: [{ role: "user", content: "hello from workerd" }],
    });
    expect(r.streamed).toEqual([
      { name: "max_tokens", type: "integer", value: 512, version: 1 },
      { name: "temperature", type: "float", value: 1.1, version: 2 },
      { count: 2 },
    ]);

    // Round trips, as the Worker's interceptor counted them.
    const rpcs = Object.fromEntries(r.steps.map((s) => [s.name, s.rpcs]));
    expect(rpcs).toMatchObject({
      createSessionContext: 1,
      set: 1,
      "get (cache hit)": 0,
      setMany: 1,
      "getMany (bypassCache)": 1,
      "set 2.5 (rejected locally)": 0,
      "set 2.5 (rejected by server)": 1,
      "close (cleanup)": 1,
    });

    // The server really saw the Worker's writes: a Node watcher received them...
    expect(await watcher.ended).toMatchObject({ code: Code.NotFound });
    expect(
      watcher.updates.map((u) => [u.variable?.name, u.updateType, u.variable?.version]),
    ).toEqual(
      expect.arrayContaining([
        ["temperature", "registered", 0],
        ["max_tokens", "registered", 0],
        ["temperature", "value_changed", 1],
        ["temperature", "value_changed", 2],
        ["max_tokens", "value_changed", 1],
      ]),
    );
    expect(watcher.updates).toHaveLength(5);
    // ...and the Worker's close({ cleanup: true }) ended the session.
    expect(await sessionGone(sessionId)).toEqual({ code: Code.NotFound, sessionValid: false });
  });

  it("keeps the cache live through a watch stream inside one request", async () => {
    const sessionId = await newSession();

    const r = await run<WatchResult>(`/watch?session=${sessionId}`);

    expect(r.live).toBe(true);
    // increment_variable ran on the server; only the stream could tell the Worker.
    expect(r.pushed).toEqual({ value: 5, version: 1 });
    expect(r.afterPush).toEqual({ value: 5, rpcs: 0 });
    expect(r.streams).toBe(1);
    // The stream held for the whole request: never lost, never reconnected.
    expect(r.events.filter((e) => e !== "resynchronized")).toEqual([]);
    expect(await sessionGone(sessionId)).toEqual({ code: Code.NotFound, sessionValid: false });
  });

  it("keeps writes in a memory outbox: a lost reply resent once, writes made offline committed in order", async () => {
    const sessionId = await newSession();
    const result = await run<OutboxResult>(`/outbox?session=${sessionId}`);
    const { entries } = await bridge
      .client()
      .getVariableHistory({ sessionId, variableIdentifier: "x" })
      .catch(() => ({ entries: [] }));
    expect({ ...result, history: entries.length }).toEqual({
      lostReply: 1,
      offline: {
        stored: 2,
        pending: [
          ["x", 2],
          ["x", 3],
        ],
        shown: 3,
        confirmed: 1,
      },
      committed: [2, 3],
      conflict: { code: Code.Aborted, outcome: "refused" },
      pendingAfter: 0,
      // The session was cleaned up at the end.
      history: 0,
    });
  });

  it("fails without workerFetch: workerd rejects connect-web's redirect: 'error'", async () => {
    const r = await run<ErrorReport>("/plain");

    expect(r.code).toBe(Code.Unknown);
    expect(r.message).toContain("redirect");
    expect(r.message).toContain('"error" won\'t be implemented');
  });

  it("needs useBinaryFormat: connect-web's JSON cannot carry the bridge's Any values", async () => {
    const r = await run<ErrorReport>("/json");

    // The server refuses the JSON format up front, saying what to change,
    // rather than failing deep in serialization.
    expect(r.code).toBe(Code.InvalidArgument);
    expect(r.message).toContain("useBinaryFormat: true");
  });
});
