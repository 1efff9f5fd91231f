/**
 * The demo's tuning runs as session state, end to end in real Chromium, with
 * the demo's Python worker running for real (python3-grpcio,
 * python3-sklearn; .ci/run installs them): the current configuration is
 * scored on load and by "Evaluate"; a run started in one browser is drawn
 * live by another, with run-level progress that never goes back; the
 * optimizer tries the Python worker's module; a reload restores chart, log
 * and comparison; a tab of the same browser stops the run; a chart point's
 * configuration can be applied. Screenshots go to test-results/ (ignored by git).
 */
import { mkdirSync } from "node:fs";
import type { Client } from "@connectrpc/connect";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Stack } from "../../demo/stack.ts";
import type { BridgeService } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { decodeValue } from "../../src/values/index.js";
import { panelShows } from "../support/demo-page.js";
import { type DemoPeople, startDemoPeople } from "./demo-people.js";

const SHOTS = "test-results";
/** Trials of the watched run: one per classifier module (the Python one included). */
const TRIALS = 4;

let people: DemoPeople;
let stack: Stack;
let bridge: Client<typeof BridgeService>;
let alice: DemoPeople["alice"];
let bob: DemoPeople["bob"];
let page: Page;
let watcher: Page;
let sessionId: string;

interface LogShape {
  runs: {
    id: string;
    status: string;
    planned: number;
    results: {
      trial: number;
      runtime: string;
      config: { classifier: string };
      metrics: { f1: number };
    }[];
  }[];
  evaluations: { kind: string; config: Record<string, unknown>; metrics: { f1: number } }[];
}

beforeAll(async () => {
  people = await startDemoPeople({ python: true });
  ({ stack, bridge, alice, bob } = people);
  page = await alice.context.newPage();
  watcher = await bob.context.newPage();
  mkdirSync(SHOTS, { recursive: true });
}, 90_000);

afterAll(async () => {
  await people?.stop();
});

/** The session's run log as the bridge holds it. */
async function runLog(): Promise<LogShape> {
  const { variable } = await bridge.getVariable({ sessionId, variableIdentifier: "tuning_runs" });
  const raw = decodeValue(variable?.value).value;
  return typeof raw === "string" && raw !== ""
    ? (JSON.parse(raw) as LogShape)
    : { runs: [], evaluations: [] };
}

/** Records, in the page, every progress value and chart size it shows. */
function recordProgress(p: Page): Promise<void> {
  return p.evaluate(() => {
    const seen = { progress: [] as number[], points: [] as { n: number; status: string }[] };
    (window as unknown as { seen: typeof seen }).seen = seen;
    const record = () => {
      const value = Number(
        document.querySelector(".progress")?.getAttribute("data-progress-value") ?? "0",
      );
      if (seen.progress[seen.progress.length - 1] !== value) seen.progress.push(value);
      const n = Number(document.querySelector("svg.chart")?.getAttribute("data-points") ?? "0");
      const status =
        document.querySelector("[data-tune-status]")?.getAttribute("data-tune-status") ?? "";
      const last = seen.points[seen.points.length - 1];
      if (last === undefined || last.n !== n) seen.points.push({ n, status });
    };
    record();
    new MutationObserver(record).observe(document.body, {
      subtree: true,
      attributes: true,
      childList: true,
    });
  });
}

const seenIn = (p: Page) =>
  p.evaluate(
    () =>
      (
        window as unknown as {
          seen: { progress: number[]; points: { n: number; status: string }[] };
        }
      ).seen,
  );

/** The trial log's rows as text. */
const trialRows = (p: Page) =>
  p.$$eval("[data-trials] tbody tr", (rows) =>
    rows.map((r) => [...r.querySelectorAll("td")].map((td) => td.textContent).join(" | ")),
  );

describe("tuning runs live in the session", () => {
  it("scores the configuration on load, and a hand edit by Evaluate as a point of its own", async () => {
    await page.goto(`${stack.url}?trials=${TRIALS}&seed=7`);
    await page.waitForSelector('.pill[data-freshness="live"]', { timeout: 30_000 });
    sessionId = (await page.getAttribute("[data-session]", "data-session")) ?? "";
    await page.waitForSelector('[data-current-score][data-score^="0."]', { timeout: 60_000 });
    const onLoad = Number(await page.getAttribute("[data-current-score]", "data-score"));
    const loaded = (await runLog()).evaluations;
    expect(loaded.map((e) => e.kind)).toEqual(["load"]);
    expect(loaded[0]?.metrics.f1.toFixed(4)).toBe(onLoad.toFixed(4));
    await page.waitForSelector('[data-python="on"]', { timeout: 20_000 });

    // A person's own edit, then Evaluate: a "you" point with its score.
    await page.fill('[data-input="threshold"]', "0.3");
    await page.press('[data-input="threshold"]', "Enter");
    await page.waitForFunction(
      () => document.querySelector('tr[data-var="threshold"] .version')?.textContent === "v1",
    );
    await page.waitForSelector('[data-current-score]:has-text("press Evaluate")');
    await page.click('[data-action="evaluate"]');
    await page.waitForSelector("svg.chart [data-you]", { timeout: 30_000 });
    const evaluated = (await runLog()).evaluations;
    expect(evaluated.map((e) => e.kind)).toEqual(["load", "you"]);
    expect(evaluated[1]?.config.threshold).toBe(0.3);
    expect(await page.getAttribute("[data-current-score]", "data-score")).toBe(
      evaluated[1]?.metrics.f1.toFixed(4),
    );
    expect(await page.textContent("[data-legend]")).toContain("you (Evaluate)");
  }, 120_000);

  it("draws a run live in another browser with monotonic run-level progress; the Python module is tried", async () => {
    await watcher.goto(`${stack.url}?session=${sessionId}`);
    await watcher.waitForSelector('.pill[data-freshness="live"]', { timeout: 30_000 });
    // The watcher sees the hand evaluation from the other browser already.
    await watcher.waitForSelector("svg.chart [data-you]");
    await Promise.all([recordProgress(page), recordProgress(watcher)]);

    await page.click('[data-action="tune"]');
    await page.waitForSelector('[data-tune-status="done"], [data-tune-status="failed"]', {
      timeout: 240_000,
    });
    expect(await page.getAttribute("[data-tune-status]", "data-tune-status")).toBe("done");
    await watcher.waitForSelector(`svg.chart[data-points="${TRIALS}"]`);
    await watcher.waitForSelector('[data-tune-status="done"]');

    // The watcher drew the trials one by one while the run was going on.
    const watched = await seenIn(watcher);
    expect(watched.points.map((p) => p.n)).toEqual([0, 1, 2, 3, 4]);
    expect(watched.points.slice(1, -1).every((p) => p.status === "running")).toBe(true);
    // Progress over the whole run, never backwards, to 100 %.
    for (const seen of [await seenIn(page), watched]) {
      const values = seen.progress.filter((v) => v > 0);
      expect(values.length).toBeGreaterThanOrEqual(TRIALS);
      expect(values).toEqual([...values].sort((a, b) => a - b));
      expect(values.at(-1)).toBe(100);
    }
    expect(await page.textContent("[data-progress]")).toContain(
      `Done: ${TRIALS} of ${TRIALS} trials`,
    );

    // Both browsers show the same trials, and one of them ran in Python.
    expect(await trialRows(watcher)).toEqual(await trialRows(page));
    const run = (await runLog()).runs.at(-1);
    expect(run?.status).toBe("done");
    const python = run?.results.filter((r) => r.runtime === "python") ?? [];
    expect(python.map((r) => r.config.classifier)).toEqual(["sklearn.LogisticRegression"]);
    expect(python[0]?.metrics.f1).toBeGreaterThan(0.5);
    expect(await watcher.$$eval('[data-trial-row][data-runtime="python"]', (r) => r.length)).toBe(
      1,
    );
    expect(await watcher.$$eval("svg.chart circle.point.python", (c) => c.length)).toBe(1);

    await page.waitForFunction(
      () => !document.querySelector('[data-test="best"]')?.textContent?.includes("…"),
    );
    await page.screenshot({
      path: `${SHOTS}/runs-tuned.png`,
      fullPage: true,
      animations: "disabled",
    });
  }, 300_000);

  it("restores chart, trial log and comparison after a reload", async () => {
    const before = {
      rows: await trialRows(watcher),
      best: await watcher.textContent('[data-score="best"]'),
      words: await watcher.textContent('[data-confusion="best"]'),
    };
    expect(before.words).toMatch(
      /Catches \d+(\.\d+)?% of spam \(\d+ of 411\), \d+(\.\d+)?% false alarms \(\d+ of 827/,
    );
    await watcher.reload();
    await watcher.waitForSelector(`svg.chart[data-points="${TRIALS}"]`, { timeout: 30_000 });
    expect(await trialRows(watcher)).toEqual(before.rows);
    await watcher.waitForSelector("[data-compare]");
    expect(await watcher.textContent('[data-score="best"]')).toBe(before.best);
    expect(await watcher.textContent('[data-confusion="best"]')).toBe(before.words);
    expect(await watcher.textContent("[data-progress]")).toContain(`Done: ${TRIALS} of ${TRIALS}`);
    expect(await watcher.getAttribute("[data-tune-status]", "data-tune-status")).toBe("done");
    await watcher.waitForFunction(
      () => !document.querySelector('[data-test="best"]')?.textContent?.includes("…"),
    );
    await watcher.screenshot({
      path: `${SHOTS}/runs-reloaded.png`,
      fullPage: true,
      animations: "disabled",
    });
  }, 60_000);

  it("applies the configuration of a clicked chart point", async () => {
    const run = (await runLog()).runs.at(-1);
    const worst = [...(run?.results ?? [])].sort((a, b) => a.metrics.f1 - b.metrics.f1)[0];
    expect(worst).toBeDefined();
    await watcher.click(`svg.chart [data-trial="${worst?.trial}"]`);
    await watcher.waitForSelector("[data-point-detail]:not([hidden])");
    expect(await watcher.textContent("[data-point-detail]")).toContain(`Trial ${worst?.trial}`);
    await watcher
      .locator("section.tune")
      .screenshot({ path: `${SHOTS}/runs-point.png`, animations: "disabled" });
    await watcher.click('[data-action="apply"]');
    await page.waitForFunction(
      (classifier) =>
        (document.querySelector('[data-input="classifier"]') as HTMLSelectElement | null)?.value ===
        classifier,
      worst?.config.classifier,
    );
    const { variables } = await bridge.listVariables({ sessionId });
    const classifier = variables.find((v) => v.name === "classifier");
    expect(decodeValue(classifier?.value).value).toBe(worst?.config.classifier);
  }, 60_000);

  it("lets another tab of the same browser stop the run, and only that browser", async () => {
    const second = await alice.context.newPage();
    await second.goto(`${stack.url}?session=${sessionId}`);
    await second.waitForSelector('.pill[data-freshness="live"]', { timeout: 30_000 });
    await page.fill('[data-control="trials"]', "20");
    await page.click('[data-action="tune"]');
    await second.waitForSelector('[data-action="remote-stop"]', { timeout: 60_000 });
    await watcher.waitForSelector("[data-foreign-lock]:not([hidden])");
    expect(await watcher.$$eval('[data-action="remote-stop"]', (b) => b.length)).toBe(0);
    // The holder is alive: nobody is offered to release its lock.
    expect(await watcher.$$eval('[data-action="force-release"]', (b) => b.length)).toBe(0);
    await second.click('[data-action="remote-stop"]');
    await page.waitForSelector('[data-tune-status="stopped"]', { timeout: 60_000 });
    expect(await page.textContent("[data-tune-status]")).toMatch(/Stopped after \d+ of 20 trials/);
    await second.waitForSelector('[data-tune-status="stopped"]');
    await second.close();
  }, 180_000);

  it("fits a phone's width", async () => {
    const phone = await bob.context.newPage();
    await phone.setViewportSize({ width: 390, height: 844 });
    await phone.goto(`${stack.url}?session=${sessionId}`);
    await phone.waitForSelector('.pill[data-freshness="live"]', { timeout: 30_000 });
    await phone.screenshot({
      path: `${SHOTS}/runs-phone.png`,
      fullPage: true,
      animations: "disabled",
    });
    const wide = await phone.evaluate(() =>
      [...document.querySelectorAll("body *")]
        .filter((el) => el.getBoundingClientRect().right > 391)
        .slice(0, 5)
        .map(
          (el) => `${el.tagName}.${el.className} ${Math.round(el.getBoundingClientRect().right)}`,
        ),
    );
    const overflow = await phone.evaluate(() => document.documentElement.scrollWidth);
    expect(overflow, wide.join(", ")).toBeLessThanOrEqual(390);
    const select = await phone.$('[data-input="classifier"]');
    const box = await select?.boundingBox();
    expect((box?.x ?? 0) + (box?.width ?? 0)).toBeLessThanOrEqual(390);
    await phone.screenshot({
      path: `${SHOTS}/runs-phone.png`,
      fullPage: true,
      animations: "disabled",
    });
    await phone.close();
  }, 60_000);

  it("offers to release the lock only once the tuning tab is gone, asks first and says what it did", async () => {
    await page.fill('[data-control="trials"]', "20");
    await page.click('[data-action="tune"]');
    await panelShows(page, /\b([1-9]|1\d) of 20 trials done/, 60_000);
    await watcher.waitForSelector("[data-foreign-lock]:not([hidden])");
    expect(await watcher.$$eval('[data-action="force-release"]', (b) => b.length)).toBe(0);
    await page.close(); // the tuning tab goes away mid-run, holding the lock

    await watcher.click('[data-action="force-release"]', { timeout: 40_000 });
    expect(await watcher.textContent("[data-release-confirm]")).toContain("Release the lock");
    await watcher.click('[data-action="confirm-release"]');
    await watcher.waitForSelector("[data-release-result]");
    expect(await watcher.textContent("[data-release-result]")).toMatch(
      /Released the lock of tuner-\w+ on 7 variables/,
    );
    const { variables } = await bridge.listVariables({ sessionId });
    expect(variables.filter((v) => v.optimizationStatus?.optimizing)).toEqual([]);
    await watcher.waitForSelector('[data-tune-status="abandoned"]');
    expect((await runLog()).runs.at(-1)?.status).toBe("abandoned");
    expect(await watcher.isDisabled('[data-action="tune"]')).toBe(false);
    await watcher
      .locator("section.tune")
      .screenshot({ path: `${SHOTS}/runs-released.png`, animations: "disabled" });
  }, 120_000);
});
