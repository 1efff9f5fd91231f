/**
 * Hostile callers against tool capacity, on a real server over real
 * sockets: one client flooding a CPU-heavy tool, or a slow worker's tool,
 * must not take the bridge (or the worker) away from other clients.
 *
 * Clients are told apart by address: the bridge trusts 127.0.0.1 as a
 * proxy, so each test client names itself with x-forwarded-for.
 */

import { setImmediate as nextTurn, setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import type { ToolDefinition } from "../../src/server/index.js";
import { encodeJsonAny } from "../../src/values/index.js";
import { bridgePerTest } from "../support/bridge.js";
import { rejectionOf } from "../support/errors.js";
import { until } from "../support/wait.js";

const bridge = bridgePerTest();

const as = (client: string) => ({ headers: { "x-forwarded-for": client } });
const ATTACKER = "203.0.113.66";
const VICTIM = "198.51.100.7";
const MiB = 1024 * 1024;

/** The value at quantile `q` of `samples`. */
function quantile(samples: readonly number[], q: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN;
}

/**
 * A CPU- and memory-heavy tool: 20 slices of 10 ms of computation, holding
 * 8 MiB, yielding between slices as a well-behaved heavy tool does. Counts
 * how many of its calls run at once.
 */
function heavyTool(expensive: boolean) {
  const seen = { running: 0, peak: 0, started: 0, finished: [] as string[] };
  const tool: ToolDefinition = {
    name: "crunch",
    description: "Burns CPU and holds memory for a while.",
    parameters: [{ name: "who", type: "string", default: "" }],
    expensive,
    async handler({ who }, { signal }) {
      seen.started++;
      seen.running++;
      seen.peak = Math.max(seen.peak, seen.running);
      const held = Buffer.alloc(8 * MiB, 1);
      try {
        let sum = 0;
        for (let slice = 0; slice < 20 && !signal.aborted; slice++) {
          const end = performance.now() + 10;
          while (performance.now() < end) sum += Math.sqrt(sum + slice);
          await nextTurn();
        }
        return held.length + (sum > 0 ? 0 : 1);
      } finally {
        seen.running--;
        seen.finished.push(String(who));
      }
    },
  };
  return { tool, seen };
}

/** The memory budget's state as /healthz reports it (from the last sample). */
async function memoryState(adminUrl: string): Promise<string | undefined> {
  const health = (await (await fetch(`${adminUrl}/healthz`)).json()) as {
    memory?: { state?: string };
  };
  return health.memory?.state;
}

/** The bridge's count of expensive calls running and waiting, from its metrics. */
async function expensiveCalls(adminUrl: string): Promise<{ running: number; waiting: number }> {
  const text = await (await fetch(`${adminUrl}/metrics`)).text();
  const read = (state: string) =>
    Number(
      new RegExp(`^bridge_expensive_tool_calls\\{state="${state}"\\} (\\d+)$`, "m").exec(text)?.[1],
    );
  return { running: read("running"), waiting: read("waiting") };
}

describe("CPU-heavy tools", () => {
  it("one client's flood runs a few at a time; another client's Ping and its own call go through", async () => {
    const { tool, seen } = heavyTool(true);
    const b = await bridge({
      trustedProxies: ["127.0.0.1"],
      maxExpensiveToolCalls: 2,
      maxQueuedExpensiveCallsPerClient: 8,
      tools: [tool],
    });
    const attacker = b.client("grpc");
    const victim = b.client("grpc");
    const { sessionId: attackerSession } = await attacker.initializeSession({}, as(ATTACKER));
    const { sessionId: victimSession } = await victim.initializeSession({}, as(VICTIM));

    const rssBefore = process.memoryUsage.rss();
    let rssPeak = rssBefore;
    // Settled as they go: refusals arrive long before the test reads them.
    const flood = Promise.allSettled(
      Array.from({ length: 16 }, () =>
        attacker.executeTool(
          { sessionId: attackerSession, toolName: "crunch", parameters: {} },
          as(ATTACKER),
        ),
      ),
    );
    await until(() => seen.started > 0, "the flood to start");

    // While the flood runs, the victim calls the tool once and pings.
    const t0 = performance.now();
    let victimCallMs = Number.NaN;
    let attackerDoneBeforeVictim = Number.NaN;
    const own = victim
      .executeTool(
        {
          sessionId: victimSession,
          toolName: "crunch",
          parameters: { who: encodeJsonAny("victim") },
        },
        as(VICTIM),
      )
      .finally(() => {
        victimCallMs = performance.now() - t0;
        attackerDoneBeforeVictim = seen.finished.filter((w) => w !== "victim").length;
      });
    // Pings for as long as the flood runs.
    let flooding = true;
    void Promise.allSettled([flood, own]).then(() => {
      flooding = false;
    });
    const pings: number[] = [];
    while (flooding) {
      const p0 = performance.now();
      await victim.ping({ message: "hi" }, as(VICTIM));
      pings.push(performance.now() - p0);
      rssPeak = Math.max(rssPeak, process.memoryUsage.rss());
      // The probe's pace (about 50 Pings a second), not a wait for an event.
      await sleep(20);
    }
    const ownResult = await own;
    const results = await flood;
    rssPeak = Math.max(rssPeak, process.memoryUsage.rss());

    console.info(
      `[tool-fairness] heavy flood: victim Ping (${pings.length}) p50 ${quantile(pings, 0.5).toFixed(1)} ms, p90 ${quantile(pings, 0.9).toFixed(1)} ms, max ${Math.max(...pings).toFixed(1)} ms; victim tool call ${victimCallMs.toFixed(0)} ms; ${seen.peak} calls at once; RSS +${Math.round((rssPeak - rssBefore) / MiB)} MiB`,
    );
    expect(ownResult.success, ownResult.errorMessage).toBe(true);
    // At most --max-expensive-tool-calls ran at once (the flood alone had 16 in flight).
    expect(seen.peak).toBeLessThanOrEqual(2);
    // The victim's one call waited for a turn, not for the attacker's backlog.
    expect(attackerDoneBeforeVictim).toBeLessThanOrEqual(4);
    // Beyond its waiting bound, the attacker was refused, with the flag named.
    const refused = results.filter((r) => r.status === "rejected");
    expect(refused.length).toBe(16 - 2 - 8);
    for (const r of refused) {
      const e = ConnectError.from(r.reason);
      expect(e.code).toBe(Code.ResourceExhausted);
      expect(e.rawMessage).toContain("--max-queued-expensive-calls-per-client");
    }
    expect(b.server.auditTrail().filter((e) => e.outcome === "resource_exhausted").length).toBe(
      refused.length,
    );
  });

  it("a waiting call honours its deadline and its cancellation, and gives its place back", async () => {
    let open: () => void = () => undefined;
    let gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    let started = 0;
    const b = await bridge({
      maxExpensiveToolCalls: 1,
      tools: [
        {
          name: "hold",
          description: "Runs until the test lets it finish.",
          expensive: true,
          handler: async () => {
            started++;
            await gate;
            return "done";
          },
        },
      ],
    });
    const c = b.client("grpc");
    const { sessionId } = await c.initializeSession({});
    const holder = c.executeTool({ sessionId, toolName: "hold" });
    await until(() => started === 1, "the first call to run");

    const late = await rejectionOf(
      c.executeTool({ sessionId, toolName: "hold" }, { timeoutMs: 300 }),
      Code.DeadlineExceeded,
    );
    expect(late.code).toBe(Code.DeadlineExceeded);
    const abort = new AbortController();
    const cancelled = c.executeTool({ sessionId, toolName: "hold" }, { signal: abort.signal });
    await until(async () => (await expensiveCalls(b.adminUrl)).waiting === 1, "the call queued");
    abort.abort();
    await rejectionOf(cancelled, Code.Canceled);
    // The server learns of the cancellation a moment after the client.
    await until(async () => (await expensiveCalls(b.adminUrl)).waiting === 0, "the queue to empty");

    open();
    expect((await holder).success).toBe(true);
    // Neither the late nor the cancelled call ran, and the slot is free again.
    gate = Promise.resolve();
    expect((await c.executeTool({ sessionId, toolName: "hold" })).success).toBe(true);
    expect(started).toBe(2);
  });

  it("over the memory budget, new expensive calls are refused naming the flag; cheap tools still run", async () => {
    const { tool } = heavyTool(true);
    // The process is held over its budget once the session exists.
    let used = 0;
    const b = await bridge({ memoryBudget: 512 * MiB, memorySample: () => used, tools: [tool] });
    const c = b.client();
    const { sessionId } = await c.initializeSession({});
    used = 600 * MiB;
    await until(async () => (await memoryState(b.adminUrl)) === "over_budget", "a sample over");
    const refused = await rejectionOf(
      c.executeTool({ sessionId, toolName: "crunch" }),
      Code.ResourceExhausted,
    );
    expect(refused.rawMessage).toContain("the server is at its memory budget (--memory-budget");
    const cheap = await c.executeTool({ sessionId, toolName: "conversation_history" });
    expect(cheap.success, cheap.errorMessage).toBe(true);
  });
});

describe("a shared slow worker", () => {
  it("one client's calls in flight are bounded across its sessions; another client's call is answered in time", async () => {
    // The worker serves one call at a time, 100 ms each, like a worker with
    // one thread: calls beyond wait at the worker, in order.
    const worker = await bridge({ builtinTools: false, autoCreateSessions: true });
    let line = Promise.resolve();
    let arrived = 0;
    worker.server.registerTool({
      name: "slow_predict",
      description: "One at a time, 100 ms each.",
      handler: () => {
        arrived++;
        // The worker's own work, not a wait of the test's.
        const turn = line.then(() => sleep(100));
        line = turn;
        return turn.then(() => "ok");
      },
    });
    const b = await bridge({
      trustedProxies: ["127.0.0.1"],
      maxForwardedCallsPerClient: 8,
      remoteToolTimeoutMs: 5000,
    });
    await b.workerClient().registerTools({
      sessionId: "",
      workerId: "slow-worker",
      tools: [
        {
          name: "slow_predict",
          description: "",
          metadata: { worker_address: `127.0.0.1:${worker.port}` },
        },
      ],
    });
    const attacker = b.client("grpc");
    const sessions = await Promise.all(
      Array.from({ length: 16 }, () => attacker.initializeSession({}, as(ATTACKER))),
    );
    const flood = Promise.allSettled(
      sessions.flatMap(({ sessionId }) =>
        Array.from({ length: 16 }, () =>
          attacker.executeTool({ sessionId, toolName: "slow_predict" }, as(ATTACKER)),
        ),
      ),
    );
    // The flood holds every forwarded slot the attacker has.
    await until(() => arrived >= 8, "the flood's calls at the worker");
    const victim = b.client("grpc");
    const { sessionId } = await victim.initializeSession({}, as(VICTIM));
    const t0 = performance.now();
    const own = await victim.executeTool({ sessionId, toolName: "slow_predict" }, as(VICTIM));
    const victimMs = performance.now() - t0;
    const results = await flood;
    const refused = results.filter((r) => r.status === "rejected");
    console.info(
      `[tool-fairness] slow worker: victim call ${victimMs.toFixed(0)} ms (${own.success ? "ok" : own.errorMessage}); attacker: ${results.length - refused.length} forwarded, ${refused.length} refused`,
    );
    expect(own.success, own.errorMessage).toBe(true);
    expect(victimMs).toBeLessThan(3000);
    expect(results.length - refused.length).toBeLessThanOrEqual(8 * 2);
    for (const r of refused) {
      const e = ConnectError.from(r.reason);
      expect(e.code).toBe(Code.ResourceExhausted);
      expect(e.rawMessage).toContain("--max-forwarded-calls-per-client");
    }
  });
});
