/**
 * The `unified-bridge serve --worker-command` process and the Python
 * workers it starts: no worker outlives the bridge, whether the bridge is
 * killed with SIGKILL (no code of its own runs) or stopped with SIGTERM
 * (calls in flight finish first, then the workers are stopped).
 */
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BridgeService } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { encodeJsonAny } from "../../src/values/index.js";
import { cliSuite, freePorts } from "../support/cli.js";
import { waitFor } from "../support/wait.js";
import {
  copySnakepit,
  missing,
  processGone,
  readyWorkers,
  type SnakepitCopy,
  versions,
} from "./snakepit.js";

/** The command as one --worker-command string, each word quoted. */
const commandLine = (words: readonly string[]) => words.map((w) => `'${w}'`).join(" ");

describe.skipIf(missing !== undefined)(
  `the bridge's workers never outlive it ${missing ?? ""}`,
  () => {
    const cli = cliSuite();
    const copies = new Map<string, SnakepitCopy>();

    beforeAll(async () => {
      for (const v of versions) copies.set(v, await copySnakepit(v));
    }, 60_000);

    afterAll(async () => {
      for (const c of copies.values()) await c.remove();
    });

    it.each(versions)(
      "%s: every worker exits soon after the bridge is killed with SIGKILL",
      async (version) => {
        const copy = copies.get(version) as SnakepitCopy;
        const served = await cli.serve([
          ...freePorts,
          "--worker-command",
          commandLine(copy.command),
          "--worker-count",
          "2",
        ]);
        const workers = await readyWorkers(served.adminUrl, 2);
        const pids = workers.map((w) => w.pid as number);
        expect(pids.every((p) => p > 0)).toBe(true);
        expect(await Promise.all(pids.map(processGone))).toEqual([false, false]);

        served.child.kill("SIGKILL");
        await served.exited;
        const killedAt = Date.now();
        // Within v0.13's heartbeat timeout (3 missed at 2 s); the orphan
        // guard does it in about a second for both versions.
        await waitFor(
          async () => {
            const gone = await Promise.all(pids.map(processGone));
            if (!gone.every(Boolean)) throw new Error(`workers still running: ${pids.join(", ")}`);
          },
          { timeoutMs: 6000, intervalMs: 50 },
        );
        expect(Date.now() - killedAt).toBeLessThan(6000);
      },
      60_000,
    );

    it("on SIGTERM lets a call in flight finish, then stops the workers and exits 0", async () => {
      const copy = copies.get("v0.13.0") as SnakepitCopy;
      const served = await cli.serve([
        ...freePorts,
        "--worker-command",
        commandLine(copy.command),
        "--worker-tool",
        "sleep_task",
        "--shutdown-grace-ms",
        "10000",
      ]);
      const [worker] = await readyWorkers(served.adminUrl, 1);
      const client = createClient(BridgeService, createGrpcTransport({ baseUrl: served.url }));
      const { sessionId } = await client.initializeSession({});
      const slow = client.executeTool({
        sessionId,
        toolName: "sleep_task",
        parameters: { duration_ms: encodeJsonAny(1500), task_number: encodeJsonAny(7) },
      });
      await waitFor(async () => {
        const res = await fetch(`${served.adminUrl}/workers`);
        const { workers } = (await res.json()) as { workers: { inFlight: number }[] };
        if (workers[0]?.inFlight !== 1) throw new Error("the call is not in flight yet");
      });
      served.child.kill("SIGTERM");
      const reply = await slow;
      expect(reply.success).toBe(true);
      expect(JSON.parse(new TextDecoder().decode(reply.result?.value))).toEqual({
        task_number: 7,
        slept_ms: 1500,
      });
      expect(await served.exited).toEqual({ code: 0, signal: null });
      expect(await processGone(worker?.pid as number)).toBe(true);
      expect(served.stdout()).toMatch(/Python worker 1 exited \(code 0\)/);
    }, 60_000);
  },
);
