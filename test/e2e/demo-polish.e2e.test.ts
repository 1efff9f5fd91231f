/**
 * The demo's finish, in real Chromium against the stack `npm start` runs
 * (with the Python worker): the page's calls carry the session's affinity
 * header; Enter saves a value once and the Save button goes; "press
 * Evaluate" is shown only beside an enabled Evaluate; a run's estimate
 * counts only its own trials and does not jump; a tab watching another's
 * run shows that run's settings; the page fits a phone without sideways
 * scrolling and with Tune near the top; Tune and Evaluate are disabled,
 * saying why, while the bridge is unreachable. Screenshots go to
 * test-results/ (ignored by git).
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import type { Client } from "@connectrpc/connect";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Stack } from "../../demo/stack.ts";
import type { BridgeService } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { decodeValue } from "../../src/values/index.js";
import { waitFor } from "../support/wait.js";
import { type DemoPeople, startDemoPeople } from "./demo-people.js";

const SHOTS = "test-results";
/** The page's RPCs, as the Vite proxy forwards them. */
const RPC_PATH = "/snakepit.bridge.BridgeService/";
/** The header envoy/envoy.yaml hashes on (src/client/affinity-header.ts). */
const AFFINITY = "x-session-id";

let people: DemoPeople;
let stack: Stack;
let bridge: Client<typeof BridgeService>;
/** The session of the hand edits (first two tests). */
let editSession: string;
/** The session of the default run, watched and shown on a phone. */
let runSession: string;
/** The tab of the hand edits. */
let editor: Page;
/** The tab that runs the default run. */
let tuner: Page;

interface RunShape {
  id: string;
  status: string;
  planned: number;
  seed: number;
  startedAt: number;
  finishedAt?: number;
  initial?: { at: number; metrics: { f1: number } };
  results: {
    trial: number;
    ms: number;
    cached: boolean;
    at: number;
    runtime: string;
    metrics: { f1: number };
    config: Record<string, unknown>;
  }[];
}

beforeAll(async () => {
  people = await startDemoPeople({ python: true });
  ({ stack, bridge } = people);
  mkdirSync(SHOTS, { recursive: true });
}, 90_000);

afterAll(async () => {
  await people?.stop();
});

/** The session's runs as the bridge holds them. */
async function runsOf(sessionId: string): Promise<RunShape[]> {
  const { variable } = await bridge.getVariable({ sessionId, variableIdentifier: "tuning_runs" });
  const raw = decodeValue(variable?.value).value;
  return typeof raw === "string" && raw !== ""
    ? (JSON.parse(raw) as { runs: RunShape[] }).runs
    : [];
}

/** A variable's version as the bridge holds it. */
async function versionOf(sessionId: string, name: string): Promise<number> {
  const { variable } = await bridge.getVariable({
    sessionId,
    variableIdentifier: name,
    bypassCache: true,
  });
  return variable?.version ?? -1;
}

/**
 * Has the page record, from its first script on, every time it shows "press
 * Evaluate": beside an enabled Evaluate (fine) or a disabled one, or before
 * the page's own score on load arrived (both wrong).
 */
async function recordEvaluateHints(p: Page): Promise<void> {
  await p.addInitScript(() => {
    const seen = { enabled: 0, wrong: [] as string[], scored: false };
    (window as unknown as { hints: typeof seen }).hints = seen;
    const check = () => {
      const current = document.querySelector("[data-current-score]");
      const button = document.querySelector<HTMLButtonElement>('[data-action="evaluate"]');
      if (current === null || button === null) return;
      if ((current.getAttribute("data-score") ?? "") !== "") seen.scored = true;
      const text = current.textContent ?? "";
      if (!text.includes("press Evaluate")) return;
      if (button.disabled || button.hidden) seen.wrong.push(`"${text}" beside a disabled Evaluate`);
      else if (!seen.scored) seen.wrong.push(`"${text}" while the page scores on load`);
      else seen.enabled++;
    };
    new MutationObserver(check).observe(document, {
      subtree: true,
      childList: true,
      attributes: true,
      characterData: true,
    });
  });
}

const hintsIn = (p: Page) =>
  p.evaluate(() => (window as unknown as { hints: { enabled: number; wrong: string[] } }).hints);

async function openLive(p: Page, url: string): Promise<string> {
  await p.goto(url);
  await p.waitForSelector('.pill[data-freshness="live"]', { timeout: 30_000 });
  return (await p.getAttribute("[data-session]", "data-session")) ?? "";
}

/** Waits until the page's test-split scores of the run's comparison are in (no call in flight). */
async function comparisonScored(p: Page): Promise<void> {
  await p.waitForSelector('[data-test="best"]', { timeout: 60_000 });
  await p.waitForFunction(
    () => !document.querySelector('[data-test="best"]')?.textContent?.includes("…"),
    undefined,
    { timeout: 60_000 },
  );
}

describe("the demo's finish", () => {
  it("sends the session's affinity header with every call once the session is known", async () => {
    editor = await people.alice.context.newPage();
    const page = editor;
    await recordEvaluateHints(page);
    const calls: { rpc: string; key: string | undefined }[] = [];
    page.on("request", (r) => {
      const at = r.url().indexOf(RPC_PATH);
      if (at >= 0)
        calls.push({ rpc: r.url().slice(at + RPC_PATH.length), key: r.headers()[AFFINITY] });
    });
    editSession = await openLive(page, `${stack.url}?trials=20&seed=7`);
    await page.waitForSelector('[data-current-score][data-score^="0."]', { timeout: 60_000 });
    // Only the call that creates the session goes without it: there is no id yet.
    const without = calls.filter((c) => c.key === undefined).map((c) => c.rpc);
    expect(without).toEqual(["InitializeSession"]);
    const rpcs = new Set(calls.map((c) => c.rpc));
    for (const rpc of ["WatchVariables", "RegisterVariables", "ExecuteStreamingTool"]) {
      expect(rpcs, `the page made no ${rpc} call`).toContain(rpc);
    }
    expect(new Set(calls.filter((c) => c.key !== undefined).map((c) => c.key))).toEqual(
      new Set([editSession]),
    );

    // A tab opening the shared link sends it from its first call.
    const second = await people.bob.context.newPage();
    const secondCalls: (string | undefined)[] = [];
    second.on("request", (r) => {
      if (r.url().includes(RPC_PATH)) secondCalls.push(r.headers()[AFFINITY]);
    });
    await openLive(second, `${stack.url}?session=${editSession}`);
    expect(secondCalls.length).toBeGreaterThan(2);
    expect(new Set(secondCalls)).toEqual(new Set([editSession]));
    await second.close();
  }, 120_000);

  it("saves a value once on Enter: the Save button goes, and the same value is not written again", async () => {
    const page = editor;
    await page.fill('[data-input="threshold"]', "0.3");
    expect(await page.isVisible('[data-save="threshold"]')).toBe(true);
    // Enter, and what the row shows right after it (before any promise settles).
    const saveAfterEnter = await page.$eval('[data-input="threshold"]', (input) => {
      input.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true }));
      return document.querySelector<HTMLButtonElement>('[data-save="threshold"]')?.hidden;
    });
    expect(saveAfterEnter).toBe(true);
    await waitFor(async () => expect(await versionOf(editSession, "threshold")).toBe(1), {
      timeoutMs: 15_000,
    });
    await page.waitForFunction(
      () => document.querySelector('tr[data-var="threshold"] .version')?.textContent === "v1",
    );
    expect(await page.isVisible('[data-save="threshold"]')).toBe(false);

    // The same number written differently, by Enter and by Save: nothing to write.
    await page.fill('[data-input="threshold"]', "0.30");
    await page.press('[data-input="threshold"]', "Enter");
    expect(await page.isVisible('[data-save="threshold"]')).toBe(false);
    await page.fill('[data-input="threshold"]', "0.300");
    await page.click('[data-save="threshold"]');
    expect(await page.isVisible('[data-save="threshold"]')).toBe(false);
    // A later edit goes through the same outbox, in order: once it is on the
    // bridge, any threshold write made before it would be too.
    await page.fill('[data-input="smoothing"]', "2");
    await page.press('[data-input="smoothing"]', "Enter");
    await waitFor(async () => expect(await versionOf(editSession, "smoothing")).toBe(1), {
      timeoutMs: 15_000,
    });
    expect(await versionOf(editSession, "threshold")).toBe(1);
    expect(await page.inputValue('[data-input="threshold"]')).toBe("0.3");
  }, 60_000);

  it("estimates a run from its own trials only, without jumps", async () => {
    tuner = await people.alice.context.newPage();
    await recordEvaluateHints(tuner);
    runSession = await openLive(tuner, `${stack.url}?trials=20&seed=7`);
    await tuner.waitForSelector('[data-current-score][data-score^="0."]', { timeout: 60_000 });
    await tuner.waitForSelector('[data-python="on"]', { timeout: 30_000 });
    await tuner.evaluate(() => {
      const texts: string[] = [];
      (window as unknown as { progress: string[] }).progress = texts;
      const el = document.querySelector("[data-progress]") as HTMLElement;
      const record = () => {
        const text = el.textContent ?? "";
        if (texts[texts.length - 1] !== text) texts.push(text);
      };
      new MutationObserver(record).observe(el, {
        subtree: true,
        childList: true,
        characterData: true,
      });
    });
    await tuner.click('[data-action="tune"]');
    await tuner.waitForSelector('[data-tune-status="done"], [data-tune-status="failed"]', {
      timeout: 300_000,
    });
    expect(await tuner.getAttribute("[data-tune-status]", "data-tune-status")).toBe("done");
    const texts = await tuner.evaluate(
      () => (window as unknown as { progress: string[] }).progress,
    );

    const running = texts.filter((t) => t.includes("trials done"));
    const beforeFirst = running.filter((t) => t.startsWith("0 of 20"));
    expect(beforeFirst.length).toBeGreaterThan(0);
    for (const text of beforeFirst) expect(text).toMatch(/estimating…$/);
    const estimates = running
      .map((t) => /about (\d+):(\d{2}) left$/.exec(t))
      .filter((m) => m !== null)
      .map((m) => Number(m[1]) * 60 + Number(m[2]));
    expect(estimates.length).toBeGreaterThan(3);
    // No jump: from one redraw to the next (about a second) the estimate
    // rises by at most 40 % or 5 s.
    const jumps = estimates
      .slice(1)
      .map((left, i) => [estimates[i] ?? 0, left] as const)
      .filter(([before, after]) => after - before > Math.max(5, 0.4 * before));
    expect(jumps, `estimates shown: ${estimates.join(", ")}`).toEqual([]);

    // The run's own figures (demo/README.md quotes them).
    const run = (await runsOf(runSession)).at(-1);
    expect(run?.status).toBe("done");
    const results = run?.results ?? [];
    await comparisonScored(tuner);
    writeFileSync(
      `${SHOTS}/polish-run.json`,
      JSON.stringify(
        {
          seconds: ((run?.finishedAt ?? 0) - (run?.startedAt ?? 0)) / 1000,
          loadAverage: loadavg()[0],
          initialF1: run?.initial?.metrics.f1,
          bestF1: Math.max(...results.map((r) => r.metrics.f1)),
          testF1: {
            initial: await tuner.textContent('[data-test="initial"]'),
            best: await tuner.textContent('[data-test="best"]'),
          },
          words: {
            initial: await tuner.textContent('[data-confusion="initial"]'),
            best: await tuner.textContent('[data-confusion="best"]'),
          },
          estimates,
          trials: results.map((r) => ({
            trial: r.trial,
            ms: r.ms,
            cached: r.cached,
            runtime: r.runtime,
            f1: r.metrics.f1,
            config: r.config,
          })),
        },
        null,
        2,
      ),
    );
  }, 360_000);

  it("says 'press Evaluate' only beside an enabled Evaluate: not while the page scores on load, nor during a run", async () => {
    // The hand edits left the configuration unscored: the hint, and Evaluate works.
    await editor.waitForSelector('[data-current-score]:has-text("press Evaluate")');
    expect(await editor.isEnabled('[data-action="evaluate"]')).toBe(true);
    await editor.click('[data-action="evaluate"]');
    await editor.waitForSelector("svg.chart [data-you]", { timeout: 60_000 });
    const edited = await hintsIn(editor);
    expect(edited.wrong).toEqual([]);
    expect(edited.enabled).toBeGreaterThan(0);
    await editor.close();
    // The tuning tab: a load, then a default run.
    expect((await hintsIn(tuner)).wrong).toEqual([]);
  }, 90_000);

  it("shows a watched run's settings, read-only while it runs, in another browser", async () => {
    // On the session of the hand edits: the default run stays the latest of its own session.
    const runner = await people.alice.context.newPage();
    await openLive(runner, `${stack.url}?session=${editSession}`);
    const watcher = await people.bob.context.newPage();
    await openLive(watcher, `${stack.url}?session=${editSession}`);
    expect(await watcher.inputValue('[data-control="trials"]')).toBe("20");
    await runner.fill('[data-control="trials"]', "60");
    await runner.fill('[data-control="seed"]', "3");
    await runner.click('[data-action="tune"]');
    await watcher.waitForSelector('[data-tune-status="running"]', { timeout: 60_000 });
    // Polled in the page: the stack shares this process with the run's training.
    await watcher.waitForFunction(
      () =>
        document.querySelector<HTMLInputElement>('[data-control="trials"]')?.value === "60" &&
        document.querySelector<HTMLInputElement>('[data-control="seed"]')?.value === "3",
      undefined,
      { timeout: 30_000 },
    );
    expect(await watcher.isDisabled('[data-control="trials"]')).toBe(true);
    expect(await watcher.isDisabled('[data-control="seed"]')).toBe(true);
    await runner.click('[data-action="stop"]');
    await watcher.waitForSelector('[data-tune-status="stopped"]', { timeout: 120_000 });
    // Its own settings come back once the run is over.
    expect(await watcher.isEnabled('[data-control="trials"]')).toBe(true);
    expect(await watcher.inputValue('[data-control="trials"]')).toBe("20");
    expect(await watcher.inputValue('[data-control="seed"]')).toBe("7");
    await Promise.all([comparisonScored(runner), comparisonScored(watcher)]);
    await Promise.all([runner.close(), watcher.close()]);
  }, 240_000);

  it("fits a phone: no sideways scrolling, tables inside their cards, Tune near the top", async () => {
    const desktop = await people.bob.context.newPage();
    await desktop.setViewportSize({ width: 1280, height: 800 });
    await openLive(desktop, `${stack.url}?session=${runSession}`);
    await comparisonScored(desktop);
    await desktop.screenshot({
      path: `${SHOTS}/polish-desktop.png`,
      fullPage: true,
      animations: "disabled",
    });
    await desktop.close();

    const phone = await people.bob.context.newPage();
    await phone.setViewportSize({ width: 390, height: 844 });
    await openLive(phone, `${stack.url}?session=${runSession}`);
    await phone.waitForSelector("[data-trials] tbody tr");
    await comparisonScored(phone);
    await phone.screenshot({
      path: `${SHOTS}/polish-phone.png`,
      fullPage: true,
      animations: "disabled",
    });
    const layout = await phone.evaluate(() => {
      const rect = (el: Element | null) => el?.getBoundingClientRect() ?? new DOMRect();
      const scrolling = [...document.querySelectorAll("main *")]
        .filter((el) => {
          const overflow = getComputedStyle(el).overflowX;
          return (
            (overflow === "auto" || overflow === "scroll") && el.scrollWidth > el.clientWidth + 1
          );
        })
        .map(
          (el) => `${el.tagName.toLowerCase()}.${el.className} ${el.scrollWidth}>${el.clientWidth}`,
        );
      const outside = [...document.querySelectorAll("main table")]
        .filter((table) => {
          const card = table.closest(".card") ?? document.body;
          return (
            rect(table).right > rect(card).right + 0.5 || rect(table).left < rect(card).left - 0.5
          );
        })
        .map((t) => `table.${t.className} ${Math.round(rect(t).right)}`);
      const table = document.querySelector("table.variables");
      const buttons = [...document.querySelectorAll("[data-history]")]
        .filter((b) => rect(b).right > rect(table).right + 0.5)
        .map((b) => `${b.getAttribute("data-history")} ${Math.round(rect(b).right)}`);
      // The trial log as the page leaves it: the first row not hidden under
      // the header's (sticky) cells, not even in part.
      const log = document.querySelector(".trial-log") as HTMLElement;
      const head = rect(log.querySelector("thead th")).bottom;
      const rows = [...log.querySelectorAll("tbody tr")].map(rect);
      const topRow = rows.find((r) => r.bottom > head + 0.5);
      // Words of the comparison split over two lines ("NaiveBaye/s").
      const brokenWords: string[] = [];
      for (const cell of document.querySelectorAll("table.compare :is(th, td)")) {
        const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
        for (let node = walker.nextNode(); node !== null; node = walker.nextNode()) {
          const text = node.textContent ?? "";
          for (const word of text.matchAll(/\S+/g)) {
            const range = document.createRange();
            range.setStart(node, word.index);
            range.setEnd(node, word.index + word[0].length);
            const lines = new Set([...range.getClientRects()].map((r) => Math.round(r.top)));
            if (lines.size > 1) brokenWords.push(word[0]);
          }
        }
      }
      // The charts' labels as large as they appear on screen, in CSS pixels.
      const smallLabels = [...document.querySelectorAll("main svg text")]
        .filter((el) => rect(el).width > 0)
        .map((el) => {
          // The length of a unit vector on screen, rotated labels included.
          const m = (el as SVGTextElement).getScreenCTM();
          const scale = m === null ? 1 : Math.hypot(m.a, m.b);
          const size = Number.parseFloat(getComputedStyle(el).fontSize) * scale;
          return { text: el.textContent ?? "", size: Math.round(size * 10) / 10 };
        })
        .filter((label) => label.size < 9);
      // Labels of one chart drawn over each other.
      const overlapping: string[] = [];
      for (const svg of document.querySelectorAll("main svg")) {
        const labels = [...svg.querySelectorAll("text")]
          .map((el) => ({ text: el.textContent ?? "", box: rect(el) }))
          .filter(({ box }) => box.width > 0);
        labels.forEach((a, i) => {
          for (const b of labels.slice(i + 1)) {
            const apart =
              a.box.right <= b.box.left + 0.5 ||
              b.box.right <= a.box.left + 0.5 ||
              a.box.bottom <= b.box.top + 0.5 ||
              b.box.bottom <= a.box.top + 0.5;
            if (!apart) overlapping.push(`${a.text} / ${b.text}`);
          }
        });
      }
      return {
        brokenWords,
        smallLabels,
        overlapping,
        width: document.scrollingElement?.scrollWidth ?? 0,
        scrolling,
        outside,
        buttons,
        tuneTop: rect(document.querySelector('[data-action="tune"]')).top + scrollY,
        rows: rows.length,
        headCovers: topRow === undefined || topRow.top < head - 0.5,
      };
    });
    expect(layout.width).toBeLessThanOrEqual(390);
    expect(layout.scrolling).toEqual([]);
    expect(layout.outside).toEqual([]);
    expect(layout.buttons).toEqual([]);
    expect(layout.tuneTop).toBeLessThan(1.5 * 844);
    expect(layout.rows).toBe(21); // the initial score and 20 trials: the log scrolls
    expect(layout.headCovers).toBe(false);
    expect(layout.brokenWords).toEqual([]);
    expect(layout.smallLabels).toEqual([]);
    expect(layout.overlapping).toEqual([]);
    await phone.close();
  }, 120_000);

  it("disables Tune and Evaluate, saying why, while the bridge is unreachable", async () => {
    const page = await people.alice.context.newPage();
    await openLive(page, `${stack.url}?session=${editSession}`);
    await page.waitForSelector('[data-current-score][data-score^="0."]', { timeout: 60_000 });
    // No evaluation of the page is cut off by the stop (the comparison's test scores).
    if ((await runsOf(editSession)).length > 0) await comparisonScored(page);
    expect(await page.isEnabled('[data-action="tune"]')).toBe(true);
    expect(await page.isEnabled('[data-action="evaluate"]')).toBe(true);
    await stack.stopBridge();
    await page.waitForSelector('[data-conn="down"]', { timeout: 15_000 });
    await page.waitForSelector('[data-action="tune"]:disabled', { timeout: 30_000 });
    expect(await page.isDisabled('[data-action="evaluate"]')).toBe(true);
    expect(await page.getAttribute('[data-action="tune"]', "title")).toMatch(/bridge/i);
    expect(await page.textContent("[data-tune-disabled]")).toMatch(/bridge is not reachable/);
    expect(await page.isVisible("[data-tune-disabled]")).toBe(true);

    await stack.startBridge();
    await page.waitForSelector('[data-conn="live"]', { timeout: 30_000 });
    await page.waitForSelector('[data-action="tune"]:enabled', { timeout: 30_000 });
    expect(await page.isEnabled('[data-action="evaluate"]')).toBe(true);
    expect(await page.isVisible("[data-tune-disabled]")).toBe(false);
  }, 90_000);
});
