/**
 * One pipeline for every RPC: an interceptor given to the bridge sees every
 * call, on every protocol and listener, the WatchVariables streams the
 * bridge writes straight to the socket (watch-endpoint.ts) included, with
 * the caller in its context values; what it throws reaches the client with
 * its code, made safe and counted like any other error.
 */
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BridgeService } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { callerKey } from "../../src/server/index.js";
import { protocols, type RunningBridge, startBridge } from "../support/bridge.js";
import { rejectionOf } from "../support/errors.js";

/** What the interceptor saw: method, caller kind, and whether it was a stream. */
const seen: { rpc: string; caller: string; stream: boolean }[] = [];

/** Refuses any call that carries `x-refuse`, as an access check would. */
const check: Interceptor = (next) => async (req) => {
  seen.push({
    rpc: req.method.name,
    caller: req.contextValues.get(callerKey).kind,
    stream: req.stream,
  });
  if (req.header.has("x-refuse")) {
    throw new ConnectError(
      `refused ${req.method.name} \uD800 for this caller`,
      Code.PermissionDenied,
    );
  }
  return next(req);
};

let bridge: RunningBridge;
beforeAll(async () => {
  bridge = await startBridge({ interceptors: [check] });
});
afterAll(async () => {
  await bridge.stop();
});

/** The first update of a watch, or its error. */
async function firstUpdate(stream: AsyncIterable<unknown>): Promise<unknown> {
  for await (const update of stream) return update;
  return undefined;
}

describe.each(protocols)("every RPC passes the bridge's interceptors, over %s", (protocol) => {
  it("unary calls and the direct WatchVariables path alike, with the caller", async () => {
    const client = bridge.client(protocol);
    const { sessionId } = await client.initializeSession({});
    seen.length = 0;
    await client.ping({ message: "hi" });
    const update = await firstUpdate(client.watchVariables({ sessionId, syncMarker: true }));
    expect(update).toMatchObject({ updateType: "sync" });
    expect(seen).toEqual([
      { rpc: "Ping", caller: "public", stream: false },
      { rpc: "WatchVariables", caller: "public", stream: true },
    ]);
  });

  it("a refusal of the interceptor reaches the client, made safe, on the direct path too", async () => {
    const client = bridge.client(protocol);
    const { sessionId } = await client.initializeSession({});
    const headers = { "x-refuse": "1" };
    const unary = await rejectionOf(client.ping({ message: "hi" }, { headers }));
    const watch = await rejectionOf(
      firstUpdate(client.watchVariables({ sessionId, syncMarker: true }, { headers })),
    );
    expect({
      unary: [Code[unary.code], unary.rawMessage],
      watch: [Code[watch.code], watch.rawMessage],
    }).toEqual({
      unary: ["PermissionDenied", "refused Ping \uFFFD for this caller"],
      watch: ["PermissionDenied", "refused WatchVariables \uFFFD for this caller"],
    });
  });
});

describe("every RPC passes the bridge's interceptors on the worker listener", () => {
  it("with the worker as the caller", async () => {
    const worker = createClient(BridgeService, createGrpcTransport({ baseUrl: bridge.workerUrl }));
    const { sessionId } = await bridge.client().initializeSession({});
    seen.length = 0;
    await firstUpdate(worker.watchVariables({ sessionId, syncMarker: true }));
    expect(seen).toEqual([{ rpc: "WatchVariables", caller: "worker", stream: true }]);
  });
});

describe("the direct WatchVariables path is counted as every call is", () => {
  it("a refused watch shows in bridge_rpc_calls_total with its code", async () => {
    const client = bridge.client("grpc");
    const { sessionId } = await client.initializeSession({});
    const metric = async () => {
      const text = await fetch(`${bridge.adminUrl}/metrics`).then((r) => r.text());
      const line =
        /^bridge_rpc_calls_total\{rpc="WatchVariables",code="permission_denied"\} (\S+)$/m.exec(
          text,
        );
      return Number(line?.[1] ?? 0);
    };
    const before = await metric();
    await rejectionOf(
      firstUpdate(
        client.watchVariables({ sessionId, syncMarker: true }, { headers: { "x-refuse": "1" } }),
      ),
    );
    expect((await metric()) - before).toBe(1);
  });
});
