/**
 * The header Envoy's ring hash reads (envoy/envoy.yaml), as the client
 * sends it: the bridge's own routes on a real HTTP server over a real
 * socket, with an interceptor recording what every call carried.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter, createConnectTransport } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createSessionContext, defaultAffinityHeader } from "../../src/client/index.js";
import { createBridgeServer, createLogger } from "../../src/server/index.js";

const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

/** A bridge whose every call is recorded: RPC name and the header's value. */
async function observedBridge(header: string) {
  const bridge = createBridgeServer({ logger: createLogger({ level: "error" }) });
  const calls: { method: string; value: string | null }[] = [];
  const record: Interceptor = (next) => async (req) => {
    calls.push({ method: req.method.name, value: req.header.get(header) });
    return next(req);
  };
  const server = http.createServer(
    connectNodeAdapter({ routes: bridge.routes, interceptors: [record] }),
  );
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  cleanup.push(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    await bridge.stop();
  });
  const { port } = server.address() as AddressInfo;
  const transport = createConnectTransport({
    baseUrl: `http://127.0.0.1:${port}`,
    httpVersion: "1.1",
    useBinaryFormat: true,
  });
  return { calls, transport };
}

describe("the affinity header", () => {
  it("carries the session id on every call of the session, watch stream included", async () => {
    const { calls, transport } = await observedBridge(defaultAffinityHeader);
    const ctx = await createSessionContext({ transport, affinityHeader: true });
    cleanup.push(() => ctx.close());
    await ctx.register("temperature", "float", 0.5);
    await ctx.set("temperature", 0.7);
    await ctx.get("temperature", { bypassCache: true });
    await ctx.listTools();
    await vi.waitFor(() => expect(calls.map((c) => c.method)).toContain("WatchVariables"));

    // The new session's id is the server's answer to the first call.
    expect(calls[0]).toEqual({ method: "InitializeSession", value: null });
    const after = calls.slice(1);
    expect(new Set(after.map((c) => c.method))).toEqual(
      new Set([
        "RegisterVariable",
        "SetVariable",
        "GetVariable",
        "GetExposedElixirTools",
        "WatchVariables",
      ]),
    );
    for (const call of after) expect(call, call.method).toEqual({ ...call, value: ctx.sessionId });
  });

  it("names the session on its first call when attaching, under the header chosen", async () => {
    const { calls, transport } = await observedBridge("x-affinity");
    const first = await createSessionContext({ transport, watch: false });
    cleanup.push(() => first.close());
    const ctx = await createSessionContext({
      transport,
      sessionId: first.sessionId,
      affinityHeader: "x-affinity",
      watch: false,
    });
    cleanup.push(() => ctx.close());
    await ctx.exists("nothing");
    const attached = calls.slice(1);
    expect(attached.map((c) => c.value)).toEqual(attached.map(() => first.sessionId));
    expect(attached[0]?.method).toBe("InitializeSession");
  });

  it("is not sent unless asked for, and a bad header name fails at construction", async () => {
    const { calls, transport } = await observedBridge(defaultAffinityHeader);
    const ctx = await createSessionContext({ transport, watch: false });
    cleanup.push(() => ctx.close());
    await ctx.exists("nothing");
    expect(calls.map((c) => c.value)).toEqual([null, null]);
    await expect(createSessionContext({ transport, affinityHeader: "x session" })).rejects.toThrow(
      /affinityHeader: "x session" is not an HTTP header name/,
    );
    // Refused before any call.
    expect(calls).toHaveLength(2);
  });
});
