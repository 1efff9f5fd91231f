import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ToolChunk } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { type RunningBridge, startBridge } from "../support/bridge.js";

async function chunks(stream: AsyncIterable<ToolChunk>) {
  const out: ToolChunk[] = [];
  for await (const c of stream) out.push(c);
  return out;
}

describe("tool timings", () => {
  // The bridge's clock is the test's: a tool "takes" exactly what it advances.
  let t = 1_000_000;
  let timed: RunningBridge;
  beforeAll(async () => {
    timed = await startBridge({ now: () => t });
    timed.server.registerTool({
      name: "take_250ms",
      description: "Advances the clock by 250 ms.",
      handler: () => {
        t += 250;
        return "done";
      },
    });
    timed.server.registerTool({
      name: "stream_250ms",
      description: "Streams one chunk, advancing the clock by 250 ms.",
      async *stream() {
        t += 250;
        yield 1;
        return "done";
      },
    });
  });
  afterAll(async () => {
    await timed.stop();
  });

  it("reports the execution time and audits the start and duration by the server's clock", async () => {
    const c = timed.client();
    const { sessionId } = await c.initializeSession({});
    const startedAt = t;
    const res = await c.executeTool({ sessionId, toolName: "take_250ms", parameters: {} });
    expect(res.success).toBe(true);
    expect(res.executionTimeMs).toBe(250n);
    expect(timed.server.auditTrail({ sessionId })).toMatchObject([
      { tool: "take_250ms", outcome: "ok", startedAt, durationMs: 250 },
    ]);
  });

  it("reports a stream's execution time in its final chunk", async () => {
    const c = timed.client();
    const { sessionId } = await c.initializeSession({});
    const startedAt = t;
    const got = await chunks(
      c.executeStreamingTool({ sessionId, toolName: "stream_250ms", parameters: {} }),
    );
    expect(got.at(-1)?.metadata).toMatchObject({ chunks: "1", execution_time_ms: "250" });
    expect(timed.server.auditTrail({ sessionId })).toMatchObject([
      { tool: "stream_250ms", outcome: "ok", startedAt, durationMs: 250, streaming: true },
    ]);
  });
});
