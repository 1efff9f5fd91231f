/**
 * Readers that stall must not pin memory: measured from the real
 * `unified-bridge serve` process. Before replies were budgeted per client,
 * 64 GetVariables of a 16 MiB session on one connection that never read
 * took the process from 178 to 2,294 MiB for 30 s (until the write-stall
 * timeout reset them). Now a client's replies in flight are bounded
 * (2 × --max-reply-bytes), so the rest are refused at once with
 * RESOURCE_EXHAUSTED and the process holds a few replies at most.
 */
import http2 from "node:http2";
import { create, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { describe, expect, it } from "vitest";
import {
  BatchGetVariablesRequestSchema,
  BridgeService,
} from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { encodeValue } from "../../src/values/index.js";
import { cliSuite, publicOnly } from "../support/cli.js";
import { rssMiB as rssOf } from "../support/process-stats.js";
import { envelope } from "../support/raw-rpc.js";

const cli = cliSuite();
const MiB = 1024 * 1024;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("stalled readers", () => {
  it("64 unread reads of a full session on one connection: most refused at once, the process's memory stays near its baseline", async () => {
    const served = await cli.serve([...publicOnly, "--log-level", "error"]);
    const rssMiB = () => rssOf(served.pid);
    const c = createClient(BridgeService, createGrpcTransport({ baseUrl: served.url }));
    const { sessionId } = await c.initializeSession({});
    const names = Array.from({ length: 15 }, (_, i) => `big${i}`);
    for (const [i, name] of names.entries()) {
      const initialValue = encodeValue("string", String(i % 10).repeat(MiB - 1024)).any;
      await c.registerVariable({ sessionId, name, type: "string", initialValue });
    }
    const before = rssMiB();

    // One connection whose streams take 1 KiB of DATA each, then no more.
    const session = http2.connect(served.url, { settings: { initialWindowSize: 1024 } });
    session.on("error", () => {});
    let peak = before;
    const sampler = setInterval(() => {
      peak = Math.max(peak, rssMiB());
    }, 50);
    const body = envelope(
      toBinary(
        BatchGetVariablesRequestSchema,
        create(BatchGetVariablesRequestSchema, { sessionId, variableIdentifiers: names }),
      ),
    );
    const statuses: (string | undefined)[] = [];
    try {
      const answered = Array.from({ length: 64 }, () => {
        const stream = session.request({
          ":method": "POST",
          ":path": "/snakepit.bridge.BridgeService/GetVariables",
          "content-type": "application/grpc",
          te: "trailers",
        });
        stream.on("error", () => {});
        stream.end(body);
        // A refusal ends the stream with its status (in the headers or the
        // trailers, which flow control does not hold); a served reply's data
        // waits on the window, so its stream stays open.
        return new Promise<void>((resolve) => {
          const done = (h: http2.IncomingHttpHeaders) => {
            const status = h["grpc-status"] as string | undefined;
            if (status === undefined) return;
            statuses.push(status);
            resolve();
          };
          stream.on("response", done);
          stream.on("trailers", done);
          stream.on("close", () => resolve());
          // A served reply's stream stays open: it counts as answered after 5 s.
          setTimeout(resolve, 5000).unref();
        });
      });
      await Promise.all(answered);
      // A measurement window: the RSS sampler watches the stalled replies
      // held this long (no event ends it; the peak is what is asserted).
      await sleep(1500);
    } finally {
      clearInterval(sampler);
      session.destroy();
    }
    const refused = statuses.filter((s) => s === "8").length;
    console.info(
      `64 stalled 15 MiB reads on one connection: ${refused} refused at once; RSS ${before.toFixed(0)} → peak ${peak.toFixed(0)} MiB`,
    );
    // At most 2 × 16 MiB in flight: two replies held, the other 62 refused.
    expect(refused).toBeGreaterThanOrEqual(60);
    // Before: +2,116 MiB. Two held replies and their encodings, with room
    // for the garbage collector's timing.
    expect(peak - before).toBeLessThan(400);
    expect((await c.ping({ message: "ok" })).message).toContain("ok");
  }, 120_000);
});
