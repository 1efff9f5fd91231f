/**
 * The demo's Python worker dies in the middle of a tuning run (SIGKILL,
 * from outside, the way an out-of-memory kill would): the bridge's worker
 * pool fails the call at once and restarts the worker; the page marks that
 * trial failed in the trial log with the reason, the run goes on with the
 * bridge's modules and finishes, the page stops offering the Python module
 * while its worker is down, in the Tune card and in the variable editor,
 * and offers it again once the worker is back. Real Chromium, real Python
 * (python3-grpcio, python3-sklearn).
 */
import type { Client } from "@connectrpc/connect";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Stack } from "../../demo/stack.ts";
import type { BridgeService } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { decodeValue } from "../../src/values/index.js";
import { waitFor } from "../support/wait.js";
import { type DemoPeople, startDemoPeople } from "./demo-people.js";

/** One trial per module the run tries first (the Python one among them). */
const SEED = 4;
const TRIALS = 4;
const PYTHON = "sklearn.LogisticRegression";

let people: DemoPeople;
let stack: Stack;
let bridge: Client<typeof BridgeService>;
let page: Page;

beforeAll(async () => {
  people = await startDemoPeople({ python: true });
  ({ stack, bridge } = people);
  page = await people.alice.context.newPage();
}, 90_000);

afterAll(async () => {
  await people?.stop();
});

interface RunShape {
  status: string;
  message: string;
  results: { trial: number; runtime: string; config: { classifier: string } }[];
  failures?: { trial: number; message: string; config: { classifier: string } }[];
}

async function lastRun(sessionId: string): Promise<RunShape | undefined> {
  const { variable } = await bridge.getVariable({ sessionId, variableIdentifier: "tuning_runs" });
  const raw = decodeValue(variable?.value).value;
  return typeof raw === "string" && raw !== ""
    ? (JSON.parse(raw) as { runs: RunShape[] }).runs.at(-1)
    : undefined;
}

/**
 * Records in the page every state of the Python note, and every moment the
 * classifier editor offered the Python module while the note said "off"
 * (unless the variable held it already).
 */
function recordPython(p: Page, python: string): Promise<void> {
  return p.evaluate((pythonModule) => {
    const seen = { states: [] as string[], offeredWhileOff: 0 };
    (window as unknown as { pythonSeen: typeof seen }).pythonSeen = seen;
    const record = () => {
      const state = document.querySelector("[data-python]")?.getAttribute("data-python") ?? "";
      if (seen.states.at(-1) !== state) seen.states.push(state);
      const select = document.querySelector('select[data-input="classifier"]');
      if (state === "off" && select instanceof HTMLSelectElement && select.value !== pythonModule) {
        if ([...select.options].some((o) => o.value === pythonModule)) seen.offeredWhileOff++;
      }
    };
    record();
    new MutationObserver(record).observe(document.body, {
      subtree: true,
      attributes: true,
      childList: true,
      characterData: true,
    });
  }, python);
}

const pythonSeen = (p: Page) =>
  p.evaluate(
    () =>
      (window as unknown as { pythonSeen: { states: string[]; offeredWhileOff: number } })
        .pythonSeen,
  );

const classifierOptions = (p: Page) =>
  p.$$eval('select[data-input="classifier"] option', (os) =>
    os.map((o) => (o as HTMLOptionElement).value),
  );

describe("the demo's Python worker dies during a run", () => {
  it("marks that trial failed, finishes the run on the bridge's modules, and offers the module again once the worker is back", async () => {
    await page.goto(`${stack.url}?trials=${TRIALS}&seed=${SEED}`);
    await page.waitForSelector('.pill[data-freshness="live"]', { timeout: 30_000 });
    const sessionId = (await page.getAttribute("[data-session]", "data-session")) ?? "";
    await page.waitForSelector('[data-python="on"]', { timeout: 30_000 });
    expect(await classifierOptions(page)).toContain(PYTHON);
    await recordPython(page, PYTHON);

    await page.click('[data-action="tune"]');
    // From the moment the optimizer writes the Python trial's candidate
    // (before the bridge featurizes for it) until the page shows it failed,
    // every Python worker that comes up is killed: whether the call is in
    // flight or not yet made, the trial cannot succeed.
    await waitFor(
      async () => {
        const { variable } = await bridge.getVariable({
          sessionId,
          variableIdentifier: "classifier",
        });
        if (decodeValue(variable?.value).value !== PYTHON)
          throw new Error("not the Python trial yet");
      },
      { timeoutMs: 180_000, intervalMs: 20 },
    );
    const killed = new Set<number>();
    let failedShown = false;
    const killer = (async () => {
      const deadline = Date.now() + 120_000;
      while (!failedShown && Date.now() < deadline) {
        const pid = stack.pythonPid();
        if (pid !== undefined && !killed.has(pid)) {
          killed.add(pid);
          try {
            process.kill(pid, "SIGKILL");
          } catch {
            // It exited on its own meanwhile: nothing to kill.
          }
        }
        // The killer's pace: it looks for a new Python process every 25 ms.
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
    })();
    try {
      await page.waitForSelector("[data-trials] tr[data-trial-failed]", { timeout: 120_000 });
    } catch (e) {
      const progress = await page.textContent("[data-progress]").catch(() => null);
      const status = await page.textContent("[data-tune-status]").catch(() => null);
      throw new Error(
        `no failed trial shown; killed ${killed.size}; progress ${JSON.stringify(progress)}, status ${JSON.stringify(status)}, run ${JSON.stringify(await lastRun(sessionId))}`,
        { cause: e },
      );
    } finally {
      failedShown = true;
    }
    await killer;
    expect(killed.size).toBeGreaterThanOrEqual(1);

    const failedRow = await page.textContent("[data-trials] tr[data-trial-failed]");
    expect(failedRow).toContain(PYTHON);
    expect(failedRow).toMatch(/failed/);
    expect(failedRow).toMatch(/Python worker/);

    // The run goes on, on the bridge's modules, and finishes.
    await page.waitForSelector('[data-tune-status="done"], [data-tune-status="failed"]', {
      timeout: 180_000,
    });
    expect(await page.getAttribute("[data-tune-status]", "data-tune-status")).toBe("done");
    const run = await lastRun(sessionId);
    expect(run?.status).toBe("done");
    const failed = run?.failures?.[0]?.trial as number;
    expect(run?.failures?.map((f) => [f.trial, f.config.classifier])).toEqual([[failed, PYTHON]]);
    expect(run?.failures?.[0]?.message).toMatch(/Python worker/);
    const scored = Array.from({ length: TRIALS }, (_, i) => i + 1).filter((t) => t !== failed);
    expect(run?.results.map((r) => r.trial)).toEqual(scored);
    expect(run?.results.every((r) => r.runtime === "bridge")).toBe(true);
    expect(run?.message).toContain(`Trial ${failed} failed`);
    expect(await page.textContent("[data-progress]")).toContain(
      `${TRIALS} of ${TRIALS} trials (1 failed)`,
    );

    // The worker comes back: the page offers the module again, in the
    // Tune card and the editor; while it was down it offered it nowhere.
    await page.waitForSelector('[data-python="on"]', { timeout: 30_000 });
    await page.waitForFunction(
      (m) =>
        [...document.querySelectorAll('select[data-input="classifier"] option')].some(
          (o) => (o as HTMLOptionElement).value === m,
        ),
      PYTHON,
      { timeout: 10_000 },
    );
    const seen = await pythonSeen(page);
    expect(seen.states).toEqual(expect.arrayContaining(["on", "off"]));
    expect(seen.states.indexOf("off")).toBeLessThan(seen.states.lastIndexOf("on"));
    expect(seen.offeredWhileOff).toBe(0);
  }, 400_000);
});
