import { connect } from "node:http2";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, type ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type VariableUpdate,
  VariableUpdateSchema,
  WatchVariablesRequestSchema,
} from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { decodeValue, encodeValue } from "../../src/values/index.js";
import { protocols, type RunningBridge, startBridge } from "../support/bridge.js";
import { until } from "../support/wait.js";

let bridge: RunningBridge;
beforeAll(async () => {
  bridge = await startBridge({ watchBufferSize: 8 });
});
afterAll(async () => {
  await bridge.stop();
});

const int = (n: number) => encodeValue("integer", n).any;

async function newSession(vars: string[] = ["x"]) {
  const c = bridge.client();
  const { sessionId } = await c.initializeSession({});
  for (const name of vars)
    await c.registerVariable({ sessionId, name, type: "integer", initialValue: int(0) });
  return sessionId;
}

/**
 * Collects updates from a watch stream in the background. `synced` resolves
 * on the sync marker (a stream opened with `syncMarker: true`): from then on
 * the stream is subscribed and sees every change. `updates` leaves the
 * marker out; `all` is everything, in order.
 */
function collect(stream: AsyncIterable<VariableUpdate>) {
  const updates: VariableUpdate[] = [];
  const all: VariableUpdate[] = [];
  let markSynced: () => void = () => {};
  const synced = new Promise<void>((resolve) => {
    markSynced = resolve;
  });
  let error: unknown;
  const done = (async () => {
    try {
      for await (const u of stream) {
        all.push(u);
        if (u.updateType === "sync") markSynced();
        else updates.push(u);
      }
    } catch (e) {
      error = e;
    }
  })();
  return {
    updates,
    all,
    done,
    synced,
    get error() {
      return error;
    },
    until: (n: number) => until(() => updates.length >= n, `${n} updates`),
  };
}

describe.each(protocols)("watch over %s", (protocol) => {
  it("starts with initial values, then delivers every change once, in version order", async () => {
    const sessionId = await newSession(["x", "y"]);
    const c = bridge.client(protocol);
    const abort = new AbortController();
    const w = collect(
      c.watchVariables(
        { sessionId, variableIdentifiers: ["x"], includeInitialValues: true },
        { signal: abort.signal },
      ),
    );
    await w.until(1);
    for (let v = 1; v <= 5; v++)
      await c.setVariable({ sessionId, variableIdentifier: "x", value: int(v) });
    await c.setVariable({ sessionId, variableIdentifier: "y", value: int(99) });
    await c.setVariables({ sessionId, updates: { x: int(6), y: int(100) } });
    await c.rollbackVariable({ sessionId, variableIdentifier: "x", targetVersion: 1 });
    await w.until(8);
    abort.abort();
    await w.done;
    // No marker unless asked: `all` holds exactly the changes.
    expect(w.all[0]?.updateType).toBe("initial_value");
    expect(w.all.map((u) => u.variable?.version)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(w.updates.map((u) => decodeValue(u.variable?.value).value)).toEqual([
      0, 1, 2, 3, 4, 5, 6, 1,
    ]);
    expect(w.updates.every((u) => u.variable?.name === "x")).toBe(true);
  });
});

describe("watch", () => {
  it("delivers lock changes and deletes", async () => {
    const sessionId = await newSession(["x"]);
    const c = bridge.client();
    const abort = new AbortController();
    const w = collect(
      c.watchVariables(
        { sessionId, variableIdentifiers: ["x"], syncMarker: true },
        { signal: abort.signal },
      ),
    );
    await w.synced;
    await c.startOptimization({ sessionId, variableIdentifier: "x", optimizerId: "o" });
    await c.stopOptimization({ sessionId, variableIdentifier: "x", optimizerId: "o" });
    await c.deleteVariable({ sessionId, variableIdentifier: "x" });
    await w.until(3);
    abort.abort();
    expect(w.updates.map((u) => u.updateType)).toEqual([
      "optimization_started",
      "optimization_stopped",
      "deleted",
    ]);
    expect(w.updates[0]?.variable?.optimizationStatus?.optimizerId).toBe("o");
  });

  it("watches the whole session, including variables registered later", async () => {
    const sessionId = await newSession([]);
    const c = bridge.client();
    const abort = new AbortController();
    const w = collect(c.watchVariables({ sessionId, syncMarker: true }, { signal: abort.signal }));
    await w.synced;
    await c.registerVariable({ sessionId, name: "late", type: "integer", initialValue: int(1) });
    await c.setVariable({ sessionId, variableIdentifier: "late", value: int(2) });
    await w.until(2);
    abort.abort();
    expect(w.updates.map((u) => [u.updateType, u.variable?.name, u.variable?.version])).toEqual([
      ["registered", "late", 0],
      ["value_changed", "late", 1],
    ]);
  });

  it("answers NOT_FOUND for a watch on an unknown variable", async () => {
    const sessionId = await newSession(["x"]);
    const w = collect(bridge.client().watchVariables({ sessionId, variableIdentifiers: ["nope"] }));
    await w.done;
    expect((w.error as ConnectError).code).toBe(Code.NotFound);
  });

  it("keeps only the latest value for a watcher that stops reading, without stalling writers or others", async () => {
    const c = bridge.client("grpc");
    const { sessionId } = await c.initializeSession({});
    const text = (v: number) => encodeValue("string", `${v}:${"x".repeat(4000)}`).any;
    await c.registerVariable({ sessionId, name: "s", type: "string", initialValue: text(0) });
    // A truly stalled reader: a raw HTTP/2 gRPC call whose stream is paused,
    // so HTTP/2 flow control pushes back on the server. (connect-node's
    // client would buffer everything on its side instead.)
    const slow = rawWatch(bridge.url, sessionId, ["s"]);
    const fast = collect(
      c.watchVariables({ sessionId, variableIdentifiers: ["s"], syncMarker: true }),
    );
    await Promise.all([slow.subscribed(), fast.synced]);
    // 300 updates of 4 KB: far beyond the watcher buffer (8) and the HTTP/2
    // windows. Every write must still succeed, and the fast watcher sees all.
    const writes = 300;
    for (let v = 1; v <= writes; v++) {
      await c.setVariable({ sessionId, variableIdentifier: "s", value: text(v) });
    }
    await fast.until(writes);
    expect(fast.updates.map((u) => u.variable?.version)).toEqual(
      Array.from({ length: writes }, (_, i) => i + 1),
    );
    // The slow one gets what fitted in the windows, then the latest value.
    const versions = await slow.readUntil((u) => u.variable?.version === writes);
    expect(versions.length).toBeLessThan(writes / 2);
    expect(versions).toEqual([...versions].sort((a, b) => a - b));
    await c.setVariable({ sessionId, variableIdentifier: "s", value: text(0) });
    expect(await slow.readUntil((u) => u.variable?.version === writes + 1)).toEqual([writes + 1]);
    slow.close();
  });

  it("ends a watcher with RESOURCE_EXHAUSTED when even the latest values exceed its buffer", async () => {
    const c = bridge.client("grpc");
    const names = Array.from({ length: 40 }, (_, i) => `v${i}`);
    const sessionId = await newSession(names);
    const slow = rawWatch(bridge.url, sessionId, []);
    await slow.subscribed();
    const big = encodeValue("integer", 1).any;
    // Each variable written once, with large metadata: 40 distinct pending
    // updates against a buffer of 8 once the windows are full.
    const metadata = { note: "m".repeat(3000) };
    for (const name of names) {
      await c.setVariable({ sessionId, variableIdentifier: name, value: big, metadata });
    }
    const ended = await slow.drain();
    expect(ended.status).toBe(String(Code.ResourceExhausted));
    expect(decodeURIComponent(ended.message)).toContain("resynchronize");
  });

  it("ends the session's streams when the session is cleaned up", async () => {
    const sessionId = await newSession(["x"]);
    const w = collect(bridge.client("grpc").watchVariables({ sessionId, syncMarker: true }));
    await w.synced;
    const cleanup = await bridge.client().cleanupSession({ sessionId });
    expect(cleanup.resourcesCleaned).toBe(2); // one variable, one watch stream
    await w.done;
    expect((w.error as ConnectError).code).toBe(Code.NotFound);
    expect((w.error as ConnectError).rawMessage).toContain("session ended");
  });
});

/** Opens a gRPC WatchVariables call over raw HTTP/2 and does not read it. */
function rawWatch(url: string, sessionId: string, names: string[]) {
  const session = connect(url);
  session.on("error", () => undefined);
  const body = toBinary(
    WatchVariablesRequestSchema,
    create(WatchVariablesRequestSchema, {
      sessionId,
      variableIdentifiers: names,
      syncMarker: true,
    }),
  );
  const frame = new Uint8Array(5 + body.length);
  new DataView(frame.buffer).setUint32(1, body.length);
  frame.set(body, 5);
  const stream = session.request({
    ":method": "POST",
    ":path": "/snakepit.bridge.BridgeService/WatchVariables",
    "content-type": "application/grpc+proto",
    te: "trailers",
  });
  stream.on("error", () => undefined);
  stream.end(frame);
  stream.pause();
  let trailers: Record<string, unknown> = {};
  stream.on("trailers", (t) => {
    trailers = t;
  });
  let buffered = Buffer.alloc(0);
  /** Reads until an update satisfies `done`; resolves with the versions read. */
  const readUntil = (done: (u: VariableUpdate) => boolean) =>
    new Promise<number[]>((resolve, reject) => {
      const versions: number[] = [];
      const onData = (chunk: Buffer) => {
        buffered = Buffer.concat([buffered, chunk]);
        while (buffered.length >= 5 && buffered.length >= 5 + buffered.readUInt32BE(1)) {
          const size = buffered.readUInt32BE(1);
          const update = fromBinary(VariableUpdateSchema, buffered.subarray(5, 5 + size));
          buffered = buffered.subarray(5 + size);
          versions.push(update.variable?.version ?? -1);
          if (done(update)) {
            stream.off("data", onData);
            stream.pause();
            resolve(versions);
            return;
          }
        }
      };
      stream.on("data", onData);
      stream.once("end", () => reject(new Error(`stream ended after ${versions}`)));
      stream.resume();
    });
  return {
    readUntil,
    /** Reads up to the sync marker (the watcher is subscribed), then stops reading. */
    subscribed: () => readUntil((u) => u.updateType === "sync"),
    /** Reads everything that is left; resolves with the gRPC status. */
    drain: () =>
      new Promise<{ status: string; message: string; bytes: number }>((resolve, reject) => {
        let bytes = 0;
        stream.on("data", (chunk: Buffer) => {
          bytes += chunk.length;
        });
        stream.on("error", reject);
        stream.on("end", () => {
          session.close();
          resolve({
            status: String(trailers["grpc-status"]),
            message: String(trailers["grpc-message"] ?? ""),
            bytes,
          });
        });
        stream.resume();
      }),
    close: () => session.destroy(),
  };
}

describe("watch sync marker (extension)", () => {
  it("sends one 'sync' update after the initial values, only when asked", async () => {
    const sessionId = await newSession(["x", "y"]);
    const c = bridge.client();
    const abort = new AbortController();
    const w = collect(
      c.watchVariables(
        { sessionId, includeInitialValues: true, syncMarker: true },
        { signal: abort.signal },
      ),
    );
    await w.synced;
    await c.setVariable({ sessionId, variableIdentifier: "x", value: int(1) });
    await w.until(3);
    abort.abort();
    expect(w.all.map((u) => u.updateType)).toEqual([
      "initial_value",
      "initial_value",
      "sync",
      "value_changed",
    ]);
    expect(w.all[2]?.variable).toBeUndefined();
  });
});
