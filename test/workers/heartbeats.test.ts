/**
 * snakepit v0.13 workers heartbeat their host for every session they served
 * (and exit after three missed): the bridge answers them, without letting
 * them keep a session alive that its clients left.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../src/server/observability/logger.js";
import { type RunningBridge, startBridge } from "../support/bridge.js";
import {
  copySnakepit,
  missing,
  readyWorkers,
  type SnakepitCopy,
  showcaseTools,
  workersOf,
} from "./snakepit.js";

describe.skipIf(missing !== undefined)(`v0.13 worker heartbeats ${missing ?? ""}`, () => {
  let copy: SnakepitCopy;
  let bridge: RunningBridge;
  const lines: string[] = [];

  beforeAll(async () => {
    copy = await copySnakepit("v0.13.0");
    bridge = await startBridge({
      logger: createLogger({ level: "info", sink: { write: (l: string) => lines.push(l) } }),
      workers: { command: copy.command, tools: showcaseTools, healthIntervalMs: 300 },
    });
    await readyWorkers(bridge.adminUrl, 1);
  }, 60_000);

  afterAll(async () => {
    await bridge?.stop();
    await copy?.remove();
  }, 30_000);

  it("answers them, and a session its clients left still expires", async () => {
    const [before] = await workersOf(bridge.adminUrl);
    const client = bridge.client();
    const { sessionId } = await client.initializeSession({ ttlSeconds: 2 });
    // Watched without touching the session (any read would refresh it).
    const ended = new Promise<string>((resolve) => {
      const stop = bridge.server.store.subscribe((event) => {
        if (event.type === "session_ended" && event.sessionId === sessionId) {
          stop();
          resolve(event.reason);
        }
      });
    });
    const ping = await client.executeTool({ sessionId, toolName: "ping" });
    expect(ping.success).toBe(true);
    // The worker now heartbeats this session every 300 ms; the session
    // still ends 2 s after its client's last call.
    const reason = await Promise.race([
      ended,
      new Promise((resolve) => setTimeout(() => resolve("still alive after 10 s"), 10_000)),
    ]);
    expect(reason).toBe("expired");
    const metrics = await (await fetch(`${bridge.adminUrl}/metrics`)).text();
    const heartbeats = Number(
      /bridge_rpc_calls_total\{rpc="Heartbeat",code="ok"\} (\d+)/.exec(metrics)?.[1] ?? "0",
    );
    expect(heartbeats).toBeGreaterThanOrEqual(4);
    // The heartbeats were answered: the worker did not give up on the bridge.
    const [after] = await workersOf(bridge.adminUrl);
    expect(after).toMatchObject({ state: "ready", restarts: 0, pid: before?.pid });
    expect(lines.join("")).not.toMatch(/Heartbeat threshold exceeded/);
  }, 30_000);
});
