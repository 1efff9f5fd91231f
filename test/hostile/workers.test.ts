/**
 * Hostile or broken workers against the bridge, on real servers over real
 * sockets: a worker claiming another's worker_id, worker addresses spelled
 * to slip past the checks, and a worker reply too big or unreadable.
 */

import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { Code } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { createLogger } from "../../src/server/index.js";
import { decodeJsonAny } from "../../src/values/index.js";
import { bridgePerTest, startBridge } from "../support/bridge.js";
import { rejectionOf } from "../support/errors.js";
import { startTcpProbe, type TcpProbe } from "../support/tcp-probe.js";

const bridge = bridgePerTest();
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  await Promise.all(cleanups.splice(0).map((c) => c()));
});

async function probe(): Promise<TcpProbe> {
  const p = await startTcpProbe();
  cleanups.push(() => p.close());
  return p;
}

const from = (client: string) => ({ headers: { "x-forwarded-for": client } });

const tool = (name: string, address: string, metadata: Record<string, string> = {}) => ({
  name,
  description: "",
  metadata: { worker_address: address, ...metadata },
});

describe("worker_id ownership", () => {
  it("another worker cannot take over a worker_id: not from another address, not to redirect its calls", async () => {
    // The genuine worker: a bridge hosting the tool, as a Python worker would.
    const genuine = await bridge({ builtinTools: false, autoCreateSessions: true });
    genuine.server.registerTool({
      name: "predict",
      description: "The genuine tool.",
      handler: () => "genuine",
    });
    const b = await bridge({ trustedProxies: ["127.0.0.1"] });
    const w = b.workerClient();
    const genuineAddress = `127.0.0.1:${genuine.port}`;
    const registered = await w.registerTools(
      { workerId: "w1", tools: [tool("predict", genuineAddress)] },
      from("10.0.0.5"),
    );
    expect(registered.success).toBe(true);

    // Same worker_id, the attacker's listener: refused.
    const trap = await probe();
    const redirect = await rejectionOf(
      w.registerTools({ workerId: "w1", tools: [tool("predict", trap.address)] }, from("10.0.0.5")),
      Code.PermissionDenied,
    );
    expect(redirect.rawMessage).toContain("worker_id 'w1'");
    expect(redirect.rawMessage).not.toContain(String(genuine.port));
    // Same worker_id and address from another worker host, e.g. to cut the
    // tool's lifetime to a second and take the name afterwards: refused.
    await rejectionOf(
      w.registerTools(
        {
          workerId: "w1",
          tools: [tool("predict", genuineAddress, { expires_in_seconds: "1" })],
        },
        from("10.0.0.66"),
      ),
      Code.PermissionDenied,
    );
    // The genuine worker re-registers as before.
    expect(
      (
        await w.registerTools(
          { workerId: "w1", tools: [tool("predict", genuineAddress)] },
          from("10.0.0.5"),
        )
      ).success,
    ).toBe(true);

    const { sessionId } = await b.client().initializeSession({});
    const res = await b.client().executeTool({ sessionId, toolName: "predict" });
    expect(res.success, res.errorMessage).toBe(true);
    expect(decodeJsonAny(res.result)).toBe("genuine");
    expect(trap.connections).toBe(0);
    const denied = b.server
      .auditTrail({ action: "register" })
      .filter((e) => e.outcome === "denied" && e.worker === "w1");
    expect(denied).toHaveLength(2);
  });
});

describe("worker addresses", () => {
  it("any spelling of this bridge's own address is refused, even under a wildcard allowlist", async () => {
    const b = await bridge({ workerAllow: ["*:*"] });
    const w = b.workerClient();
    for (const host of ["2130706433", "0177.0.0.1", "0x7f.1", "127.1", "[::ffff:7f00:1]"]) {
      const e = await rejectionOf(
        w.registerTools({ workerId: "loop", tools: [tool("t", `${host}:${b.port}`)] }),
        Code.PermissionDenied,
      );
      expect(e.rawMessage, host).toContain("is this bridge itself");
    }
  });

  it("the default allowlist does not reach well-known services on loopback, in any spelling; naming the port admits it", async () => {
    const b = await bridge();
    const w = b.workerClient();
    for (const address of ["127.0.0.1:6379", "localhost:6379", "[::1]:5432", "127.0.0.1:27017"]) {
      const e = await rejectionOf(
        w.registerTools({ workerId: "w", tools: [tool("t", address)] }),
        Code.PermissionDenied,
      );
      expect(e.rawMessage, address).toContain("--worker-allow pattern must name exactly");
    }
    const wildcard = await bridge({ workerAllow: ["*:*"] });
    await rejectionOf(
      wildcard
        .workerClient()
        .registerTools({ workerId: "w", tools: [tool("t", "2130706433:6379")] }),
      Code.PermissionDenied,
    );
    const named = await bridge({ workerAllow: ["127.0.0.1:6379"] });
    expect(
      (
        await named
          .workerClient()
          .registerTools({ workerId: "w", tools: [tool("t", "[::ffff:127.0.0.1]:6379")] })
      ).success,
    ).toBe(true);
  });
});

/**
 * A gRPC worker that answers every call with one message whose length
 * prefix says `declared` bytes, then sends `body` bytes of `fill` (as fast
 * as the caller reads). Counts the bytes the caller accepted.
 */
async function rawWorker(declared: number, body: number, fill: number) {
  const sent = { bytes: 0 };
  const { address } = await fakeWorker((stream) => {
    stream.resume();
    stream.respond(
      { ":status": 200, "content-type": "application/grpc+proto" },
      { waitForTrailers: true },
    );
    stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
    const prefix = Buffer.alloc(5);
    prefix.writeUInt32BE(declared, 1);
    const chunk = Buffer.alloc(64 * 1024, fill);
    let left = body;
    const pump = () => {
      if (stream.destroyed || stream.closed) return;
      while (left > 0) {
        const piece = chunk.subarray(0, Math.min(left, chunk.length));
        left -= piece.length;
        const more = stream.write(piece, () => {
          sent.bytes += piece.length;
        });
        if (!more) {
          stream.once("drain", pump);
          return;
        }
      }
      stream.end();
    };
    stream.write(prefix);
    pump();
  });
  return { address, sent };
}

/** A worker that ends its connection under every call (GOAWAY with an error, as a dying process's runtime may). */
function dyingWorker() {
  return fakeWorker((stream) => {
    stream.session?.destroy(undefined, http2.constants.NGHTTP2_INTERNAL_ERROR);
  });
}

/**
 * An HTTP/2 server on a free loopback port whose every stream `onStream`
 * answers; stopped after the test, its open sessions destroyed.
 */
async function fakeWorker(onStream: (stream: http2.ServerHttp2Stream) => void) {
  const server = http2.createServer();
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (s) => {
    sessions.add(s);
    s.on("error", () => undefined);
    s.on("close", () => sessions.delete(s));
  });
  server.on("stream", (stream) => {
    stream.on("error", () => undefined); // a reset by the caller is expected
    onStream(stream);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Open sessions would keep close() waiting.
        for (const s of sessions) s.destroy();
      }),
  );
  return { address: `127.0.0.1:${port}` };
}

function captureLogs() {
  const lines: string[] = [];
  return {
    logger: createLogger({ level: "debug", sink: { write: (l: string) => lines.push(l) } }),
    lines,
  };
}

describe("worker replies", () => {
  it("a 64 MiB reply is refused from its length prefix, not read whole; the caller is told the limit", async () => {
    const MiB = 1024 * 1024;
    const worker = await rawWorker(64 * MiB, 64 * MiB, 0);
    const b = await bridge();
    await b
      .workerClient()
      .registerTools({ workerId: "big", tools: [tool("huge", worker.address)] });
    const { sessionId } = await b.client().initializeSession({});
    const res = await b.client().executeTool({ sessionId, toolName: "huge" });
    console.info(
      `[workers] 64 MiB reply: the worker got ${(worker.sent.bytes / MiB).toFixed(2)} MiB out; caller told: ${res.errorMessage}`,
    );
    expect(res.success).toBe(false);
    expect(res.errorMessage).toContain("--max-reply-bytes");
    expect(worker.sent.bytes).toBeLessThan(8 * MiB);
  });

  it("a reply the bridge cannot parse is summarized for the caller; the details go to the log", async () => {
    const worker = await rawWorker(64, 64, 0xff);
    const logs = captureLogs();
    const b = await startBridge({ logger: logs.logger });
    cleanups.push(() => b.stop());
    await b.workerClient().registerTools({ workerId: "odd", tools: [tool("odd", worker.address)] });
    const { sessionId } = await b.client().initializeSession({});
    const res = await b.client().executeTool({ sessionId, toolName: "odd" });
    expect(res.success).toBe(false);
    expect(res.errorMessage).toBe(
      "the worker hosting tool 'odd' sent a reply the bridge could not read (Internal)",
    );
    const logged = logs.lines.filter((l) => l.includes('"forwarded tool call failed"'));
    expect(logged).toHaveLength(1);
    expect(logged[0]).toContain(worker.address);
  });

  it("a worker whose connection dies under a call is reported as that, in words, unary and streaming", async () => {
    const worker = await dyingWorker();
    const logs = captureLogs();
    const b = await startBridge({ logger: logs.logger });
    cleanups.push(() => b.stop());
    await b
      .workerClient()
      .registerTools({ workerId: "dying", tools: [tool("gone", worker.address)] });
    const { sessionId } = await b.client().initializeSession({});
    const unary = await b.client().executeTool({ sessionId, toolName: "gone" });
    const chunks: string[] = [];
    for await (const chunk of b.client().executeStreamingTool({ sessionId, toolName: "gone" })) {
      if (chunk.isFinal) chunks.push(chunk.metadata.error ?? "");
    }
    const expected =
      "the connection to the worker hosting tool 'gone' broke during the call; try again later";
    expect({ success: unary.success, error: unary.errorMessage }).toEqual({
      success: false,
      error: expected,
    });
    expect(chunks.join("")).toContain(expected);
    // The transport's own words (an HTTP/2 error code) stay in the log.
    expect(logs.lines.some((l) => l.includes("forwarded tool call failed"))).toBe(true);
  });
});
