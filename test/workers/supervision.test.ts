/**
 * Supervision of stock snakepit workers: a worker killed with SIGKILL fails
 * its calls in flight with UNAVAILABLE at once, is restarted within its
 * backoff with its tools listed again, and the sessions it did not hold
 * never notice; a session whose worker died is told once that its
 * worker-side state was lost.
 */
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../src/server/observability/logger.js";
import { type RunningBridge, startBridge } from "../support/bridge.js";
import { until, waitFor } from "../support/wait.js";
import {
  codeOf,
  copySnakepit,
  missing,
  readyWorkers,
  resultJson,
  type SnakepitCopy,
  showcaseTools,
  toolParams,
  versions,
  workersOf,
} from "./snakepit.js";

describe.skipIf(missing !== undefined)(`pool supervision ${missing ?? ""}`, () => {
  describe.each(versions)("snakepit %s", (version) => {
    let copy: SnakepitCopy;
    let bridge: RunningBridge;
    const lines: string[] = [];

    beforeAll(async () => {
      copy = await copySnakepit(version);
      bridge = await startBridge({
        logger: createLogger({ level: "info", sink: { write: (l: string) => lines.push(l) } }),
        workers: {
          command: copy.command,
          count: 2,
          tools: showcaseTools,
          restartBackoffMs: 300,
          healthIntervalMs: 500,
        },
      });
      await readyWorkers(bridge.adminUrl, 2);
    }, 60_000);

    afterAll(async () => {
      await bridge?.stop();
      await copy?.remove();
    }, 30_000);

    /** A new session and the pid of the worker its calls go to. */
    const sessionOnWorker = async () => {
      const client = bridge.client("grpc");
      const { sessionId } = await client.initializeSession({});
      const info = await client.executeTool({
        sessionId,
        toolName: "get_worker_info",
        parameters: toolParams({ call_number: 1 }),
      });
      expect(info.success).toBe(true);
      return {
        sessionId,
        pid: Number((resultJson(info.result) as { worker_pid: string }).worker_pid),
      };
    };

    const counter = async (sessionId: string) =>
      resultJson(
        (await bridge.client("grpc").executeTool({ sessionId, toolName: "increment_counter" }))
          .result,
      );

    it("fails a killed worker's call with UNAVAILABLE at once, restarts it, and the other sessions never notice", async () => {
      const a = await sessionOnWorker();
      const b = await sessionOnWorker();
      expect(b.pid).not.toBe(a.pid);
      expect(await counter(a.sessionId)).toEqual({ value: 1 });
      const before = await workersOf(bridge.adminUrl);
      const victim = before.find((w) => w.pid === a.pid);
      expect(victim).toBeDefined();

      const slow = bridge.client("connect").executeTool({
        sessionId: a.sessionId,
        toolName: "sleep_task",
        parameters: toolParams({ duration_ms: 20_000, task_number: 1 }),
      });
      await until(
        async () =>
          (await workersOf(bridge.adminUrl)).find((w) => w.id === victim?.id)?.inFlight === 1,
        "the slow call in flight",
      );
      const killedAt = Date.now();
      process.kill(a.pid, "SIGKILL");
      const failed = await codeOf(slow);
      expect(Date.now() - killedAt).toBeLessThan(1000);
      expect(failed.code).toBe(Code.Unavailable);
      expect(failed.message).toMatch(
        /Python worker running tool 'sleep_task' exited \(signal SIGKILL\)/,
      );
      expect(failed.message).toMatch(/state of this session was lost/);

      // Session b's worker was not touched: its state goes on, during the restart too.
      expect(await counter(b.sessionId)).toEqual({ value: 1 });
      expect(await counter(b.sessionId)).toEqual({ value: 2 });

      const back = await waitFor(
        async () => {
          const w = (await workersOf(bridge.adminUrl)).find((x) => x.id === victim?.id);
          if (w?.state !== "ready") throw new Error(`worker not back: ${JSON.stringify(w)}`);
          return w;
        },
        { timeoutMs: 20_000, intervalMs: 50 },
      );
      expect(back.restarts).toBe(1);
      expect(back.pid).not.toBe(a.pid);
      expect(back.lastError).toBe("exited (signal SIGKILL)");
      expect(back.tools).toContain("echo");
      expect(lines.join("")).toMatch(
        new RegExp(
          `Python worker ${victim?.id.slice(5)} exited \\(signal SIGKILL\\); restarting in 0\\.3 s`,
        ),
      );
      const listed = await bridge.client().initializeSession({});
      expect(Object.keys(listed.availableTools)).toEqual(expect.arrayContaining(["ping", "echo"]));

      // Session a was told once (by its failed call); it goes on, its worker-side state new.
      expect(await counter(a.sessionId)).toEqual({ value: 1 });
      expect(await counter(b.sessionId)).toEqual({ value: 3 });

      const metrics = await (await fetch(`${bridge.adminUrl}/metrics`)).text();
      expect(metrics).toContain(`bridge_python_worker_restarts_total{worker="${victim?.id}"} 1`);
      expect(metrics).toMatch(/bridge_python_workers\{state="ready"\} 2/);
    }, 60_000);

    it("lets a worker busy with a long call be, though it answers no Ping meanwhile", async () => {
      await readyWorkers(bridge.adminUrl, 2);
      const before = await workersOf(bridge.adminUrl);
      const { sessionId } = await bridge.client().initializeSession({});
      // Six health intervals: v0.4.3 runs the sleep on its event loop.
      const reply = await bridge.client().executeTool({
        sessionId,
        toolName: "sleep_task",
        parameters: toolParams({ duration_ms: 3000, task_number: 2 }),
      });
      expect(reply.success).toBe(true);
      expect(resultJson(reply.result)).toEqual({ task_number: 2, slept_ms: 3000 });
      const after = await workersOf(bridge.adminUrl);
      expect(after.map((w) => [w.pid, w.restarts])).toEqual(before.map((w) => [w.pid, w.restarts]));
    }, 60_000);

    it("tells a session whose idle worker died, once, that its worker-side state was lost", async () => {
      await readyWorkers(bridge.adminUrl, 2);
      const c = await sessionOnWorker();
      expect(await counter(c.sessionId)).toEqual({ value: 1 });
      process.kill(c.pid, "SIGKILL");
      await until(
        async () => !(await workersOf(bridge.adminUrl)).some((w) => w.pid === c.pid),
        "the worker's exit seen",
      );
      const told = await codeOf(counter(c.sessionId));
      expect(told.code).toBe(Code.FailedPrecondition);
      expect(told.message).toMatch(
        /the Python worker holding this session's state restarted; worker-side state was lost/,
      );
      expect(await counter(c.sessionId)).toEqual({ value: 1 });
      expect(await counter(c.sessionId)).toEqual({ value: 2 });
      await readyWorkers(bridge.adminUrl, 2);
    }, 60_000);
  });
});
