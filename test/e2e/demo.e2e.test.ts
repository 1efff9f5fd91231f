/**
 * The demo, end to end: the same stack `npm start` runs (bridge + Vite dev
 * server with its proxy) on free ports, driven in real Chromium, checked
 * against the bridge itself over Connect.
 */
import { mkdirSync } from "node:fs";
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Stack } from "../../demo/stack.ts";
import type { BridgeService, Variable } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { decodeValue, encodeJsonAny, encodeValue } from "../../src/values/index.js";
import { panelShows } from "../support/demo-page.js";
import { type DemoPeople, startDemoPeople } from "./demo-people.js";

const TRIALS = 3;
const SCREENSHOT = "test-results/demo-tuned.png";

let people: DemoPeople;
let stack: Stack;
let bridge: Client<typeof BridgeService>;
let alice: DemoPeople["alice"];
let bob: DemoPeople["bob"];
let page: Page;
let other: Page;
let sessionId: string;

beforeAll(async () => {
  people = await startDemoPeople({ python: false });
  ({ stack, bridge, alice, bob } = people);
  page = await alice.context.newPage();
  other = await bob.context.newPage();
}, 60_000);

afterAll(async () => {
  await people?.stop();
});

/** The session's variables as the bridge holds them: name → { value, version, lockedBy }. */
async function serverState(): Promise<
  Record<string, { value: unknown; version: number; lockedBy: string | undefined }>
> {
  const { variables } = await bridge.listVariables({ sessionId });
  return Object.fromEntries(
    // The program's variables; the run log (tuning_runs) has its own tests.
    variables
      .filter((v) => v.name !== "tuning_runs")
      .map((v: Variable) => [
        v.name,
        {
          value: decodeValue(v.value).value,
          version: v.version,
          lockedBy: v.optimizationStatus?.optimizing ? v.optimizationStatus.optimizerId : undefined,
        },
      ]),
  );
}

/** What a page shows for each variable: its editor's value and its version. */
async function shown(p: Page): Promise<Record<string, { value: string; version: string }>> {
  return p.$$eval("tr[data-var]", (rows) =>
    Object.fromEntries(
      rows.map((row) => {
        const input = row.querySelector<HTMLInputElement | HTMLSelectElement>("[data-input]");
        const value =
          input instanceof HTMLInputElement && input.type === "checkbox"
            ? String(input.checked)
            : (input?.value ?? "");
        return [
          (row as HTMLElement).dataset.var,
          { value, version: row.querySelector(".version")?.textContent ?? "" },
        ];
      }),
    ),
  );
}

const asShown = (value: unknown) =>
  typeof value === "number" && !Number.isInteger(value)
    ? String(Number(value.toPrecision(6)))
    : String(value);

/** The server's rejection message for a write, to compare with the page's inline one. */
async function serverRefusal(name: string, type: "float" | "string", value: number | string) {
  try {
    await bridge.setVariable({
      sessionId,
      variableIdentifier: name,
      value: encodeValue(type, value).any,
    });
  } catch (e) {
    const error = ConnectError.from(e);
    expect(error.code).toBe(Code.InvalidArgument);
    return error.rawMessage;
  }
  throw new Error(`the bridge accepted ${JSON.stringify(value)} for ${name}`);
}

describe("the demo page", () => {
  it("opens a session and shows every variable with its type, constraints, version and value", async () => {
    await page.goto(`${stack.url}?trials=${TRIALS}&seed=7`);
    await page.waitForSelector('.pill[data-freshness="live"]', { timeout: 20_000 });
    sessionId = (await page.getAttribute("[data-session]", "data-session")) ?? "";
    expect(sessionId).not.toBe("");
    expect(new URL(page.url()).searchParams.get("session")).toBe(sessionId);

    const names = await page.$$eval("tr[data-var]", (rows) =>
      rows.map((r) => (r as HTMLElement).dataset.var),
    );
    expect(names).toEqual([
      "classifier",
      "feature_template",
      "lowercase",
      "ngrams",
      "vocab_size",
      "smoothing",
      "threshold",
    ]);
    const types = await page.$$eval("tr[data-var] .type", (els) => els.map((e) => e.textContent));
    expect(types).toEqual(["module", "string", "boolean", "choice", "integer", "float", "float"]);
    expect(await page.textContent('tr[data-var="threshold"] .constraints')).toContain(
      "0.05 ≤ x ≤ 0.95",
    );

    const server = await serverState();
    const page1 = await shown(page);
    for (const [name, v] of Object.entries(server)) {
      expect(page1[name]).toEqual({ value: asShown(v.value), version: `v${v.version}` });
    }
  }, 30_000);

  it("refuses an invalid edit inline with the bridge's own message and writes nothing", async () => {
    const before = await serverState();

    await page.fill('[data-input="threshold"]', "2");
    const message = await page.textContent('[data-error="threshold"]');
    expect(message).toBe(await serverRefusal("threshold", "float", 2));
    expect(message).toBe("variable 'threshold': value 2 is above maximum 0.95");
    expect(await page.isDisabled('[data-save="threshold"]')).toBe(true);
    await page.press('[data-input="threshold"]', "Enter"); // refused locally: nothing is sent
    await page.press('[data-input="threshold"]', "Escape");

    await page.fill('[data-input="feature_template"]', "{subjct} {body}");
    const patternMessage = await page.textContent('[data-error="feature_template"]');
    expect(patternMessage).toBe(
      await serverRefusal("feature_template", "string", "{subjct} {body}"),
    );
    // The exact message names the pattern; a hint says it in words.
    expect(await page.textContent('[data-hint="feature_template"]')).toContain("{subject}");
    await page.press('[data-input="feature_template"]', "Enter");
    await page.press('[data-input="feature_template"]', "Escape");

    expect(await serverState()).toEqual(before);
    expect((await shown(page)).threshold?.value).toBe(asShown(before.threshold?.value));
  });

  it("tunes under the lock while a second person on the session watches the changes and the lock live", async () => {
    await other.goto(`${stack.url}?session=${sessionId}`);
    await other.waitForSelector('.pill[data-freshness="live"]', { timeout: 20_000 });
    expect(await other.getAttribute("[data-session]", "data-session")).toBe(sessionId);

    // Bob records every version of `classifier` his page shows while Alice tunes.
    await other.evaluate(() => {
      const seen: string[] = [];
      (window as unknown as { seen: string[] }).seen = seen;
      const cell = document.querySelector('tr[data-var="classifier"] .version');
      const record = () => {
        const text = cell?.textContent ?? "";
        if (seen[seen.length - 1] !== text) seen.push(text);
      };
      record();
      new MutationObserver(record).observe(cell as Node, {
        childList: true,
        characterData: true,
        subtree: true,
      });
    });

    await page.click('[data-action="tune"]');

    // Bob sees the lock while it is held, and cannot start his own run.
    await other.waitForSelector("[data-foreign-lock]:not([hidden])", { timeout: 20_000 });
    expect(await other.textContent("[data-foreign-lock]")).toContain("tuner-");
    // The optimizer locks the seven variables one call at a time.
    await other.waitForFunction(
      () => document.querySelectorAll("tr[data-var].locked").length === 7,
    );
    expect(await other.isDisabled('[data-action="tune"]')).toBe(true);
    const locked = await serverState();
    expect(Object.values(locked).every((v) => v.lockedBy?.startsWith("tuner-"))).toBe(true);

    // A write from Bob's panel is refused while locked.
    expect(await other.isDisabled('[data-input="threshold"]')).toBe(true);

    await page.waitForSelector(
      '[data-tune-status="done"], [data-tune-status="failed"], [data-tune-status="stopped"]',
      { timeout: 60_000 },
    );
    expect(await page.getAttribute("[data-tune-status]", "data-tune-status")).toBe("done");

    // One chart point per trial, a best score no worse than the initial one.
    expect(await page.getAttribute("svg.chart", "data-points")).toBe(String(TRIALS));
    // (A trial far below the others is drawn as a marker on the axis, not a dot.)
    expect(await page.$$eval("svg.chart .point[data-trial]", (c) => c.length)).toBe(TRIALS);
    const initial = Number(await page.textContent('[data-score="initial"]'));
    const best = Number(await page.textContent('[data-score="best"]'));
    expect(initial).toBeGreaterThan(0.5);
    expect(best).toBeGreaterThanOrEqual(initial);

    // The lock is released and the session holds the configuration the page calls best.
    const after = await serverState();
    expect(Object.values(after).every((v) => v.lockedBy === undefined)).toBe(true);
    const bestColumn = await page.$$eval("table[data-compare] tbody tr", (rows) =>
      Object.fromEntries(
        rows.map((r) => [
          r.querySelector("th")?.textContent,
          r.querySelectorAll("td")[1]?.textContent,
        ]),
      ),
    );
    for (const [name, v] of Object.entries(after)) expect(bestColumn[name]).toBe(asShown(v.value));
    // TRIALS candidate writes + the final one, each one batch → one version step.
    expect(after.classifier?.version).toBe(TRIALS + 1);

    // The score is the bridge's: the evaluation tool gives the same F1 for that configuration.
    const config = Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v.value]));
    let f1: number | undefined;
    for await (const chunk of bridge.executeStreamingTool({
      sessionId,
      toolName: "spam_evaluate",
      parameters: {
        split: encodeJsonAny("dev"),
        config: encodeJsonAny(config as Parameters<typeof encodeJsonAny>[0]),
      },
    })) {
      if (chunk.isFinal && chunk.data.length > 0) {
        f1 = (JSON.parse(new TextDecoder().decode(chunk.data)) as { metrics: { f1: number } })
          .metrics.f1;
      }
    }
    expect(f1?.toFixed(4)).toBe(best.toFixed(4));
    await page.waitForFunction(
      () => !document.querySelector('[data-test="best"]')?.textContent?.includes("…"),
    );

    // Bob saw the intermediate versions as they happened, and the final state.
    await other.waitForSelector("[data-foreign-lock][hidden]", { state: "attached" });
    const seen = await other.evaluate(() => (window as unknown as { seen: string[] }).seen);
    expect(seen.length).toBeGreaterThanOrEqual(TRIALS);
    expect(seen[seen.length - 1]).toBe(`v${after.classifier?.version}`);
    const bobs = await shown(other);
    for (const [name, v] of Object.entries(after)) {
      expect(bobs[name]).toEqual({ value: asShown(v.value), version: `v${v.version}` });
    }
    expect(await other.isDisabled('[data-action="tune"]')).toBe(false);

    mkdirSync("test-results", { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true, animations: "disabled" });
  }, 150_000);

  it("browses a variable's history and rolls it back as a new version, seen by the other person", async () => {
    const before = await serverState();
    const threshold = before.threshold as { value: unknown; version: number };
    await page.click('[data-history="threshold"]');
    await page.waitForSelector('.drawer li[data-version="0"]');
    const versions = await page.$$eval(".drawer li[data-version]", (items) =>
      items.map((li) => Number((li as HTMLElement).dataset.version)),
    );
    expect(versions[0]).toBe(threshold.version); // newest first
    expect(versions).toContain(0);

    await page.click('.drawer [data-rollback="0"]');
    await other.waitForFunction(
      (v) => document.querySelector('tr[data-var="threshold"] .version')?.textContent === v,
      `v${threshold.version + 1}`,
    );
    const after = await serverState();
    expect(after.threshold).toEqual({
      value: 0.5,
      version: threshold.version + 1,
      lockedBy: undefined,
    });
    expect((await shown(other)).threshold?.value).toBe("0.5");
    await page.waitForSelector(`.drawer li.current[data-version="${threshold.version + 1}"]`);
  });

  it("after a reload shows the values saved in IndexedDB at once, then revalidates them", async () => {
    const expected = await serverState();
    // Hold back the calls that would confirm the values, so the page's state
    // before revalidation can be observed.
    // A deliberate delay of the network, not a wait for an event.
    const hold = async (route: { continue(): Promise<void> }) => {
      await new Promise((resolve) => setTimeout(resolve, 1500));
      await route.continue();
    };
    await page.route("**/snakepit.bridge.BridgeService/RegisterVariables", hold);
    await page.route("**/snakepit.bridge.BridgeService/GetVariables", hold);
    await page.reload();

    await page.waitForSelector('.pill[data-freshness="saved"]', { timeout: 10_000 });
    const early = await shown(page);
    expect(await page.getAttribute("table.variables", "data-freshness")).toBe("saved");
    for (const [name, v] of Object.entries(expected)) {
      expect(early[name]).toEqual({ value: asShown(v.value), version: `v${v.version}` });
    }

    await page.waitForSelector('.pill[data-freshness="live"]', { timeout: 15_000 });
    expect(await page.textContent('.pill[data-freshness="live"]')).toContain(
      "checked with the server",
    );
    expect(await page.getAttribute("table.variables", "data-freshness")).toBe("live");
    await page.unrouteAll();
  });

  it("stops a run mid-way: the best configuration seen stays, the lock is released", async () => {
    await page.fill('[data-control="trials"]', "20");
    await page.click('[data-action="tune"]');
    // The previous run stays on the page until this one has recorded a
    // trial; any count short of 20 will do (a fast run may pass 1 between
    // two looks).
    await panelShows(page, /\b([1-9]|1\d) of 20 trials done/, 90_000);
    await page.click('[data-action="stop"]');
    await page.waitForSelector('[data-tune-status="stopped"]', { timeout: 30_000 });

    const status = (await page.textContent("[data-tune-status]")) ?? "";
    const done = Number(/Stopped after (\d+) of 20 trials/.exec(status)?.[1]);
    expect(done).toBeGreaterThanOrEqual(1);
    expect(done).toBeLessThan(20);
    expect(status).toContain("the lock is released");
    expect(await page.getAttribute("svg.chart", "data-points")).toBe(String(done));

    const after = await serverState();
    expect(Object.values(after).every((v) => v.lockedBy === undefined)).toBe(true);
    const bestColumn = await page.$$eval("table[data-compare] tbody tr", (rows) =>
      Object.fromEntries(
        rows.map((r) => [
          r.querySelector("th")?.textContent,
          r.querySelectorAll("td")[1]?.textContent,
        ]),
      ),
    );
    for (const [name, v] of Object.entries(after)) expect(bestColumn[name]).toBe(asShown(v.value));
    await other.waitForSelector("[data-foreign-lock][hidden]", { state: "attached" });
    expect(await other.isDisabled('[data-action="tune"]')).toBe(false);
  }, 150_000);

  it("says so in words when the bridge cannot be reached", async () => {
    const down = await alice.context.newPage();
    await down.route("**/snakepit.bridge.BridgeService/**", (route) =>
      route.abort("connectionrefused"),
    );
    await down.goto(`${stack.url}?session=unreachable-check`);
    await down.waitForSelector(".notice.error", { timeout: 10_000 });
    expect(await down.textContent(".notice.error")).toContain("The bridge server is not reachable");
    expect(await down.getAttribute("[data-conn]", "data-conn")).toBe("down");
    await down.close();
  }, 40_000);

  it("explains a session the server does not know any more", async () => {
    await bridge.cleanupSession({ sessionId, force: true });
    await page.waitForSelector("[data-session-ended]", { timeout: 10_000 });
    expect(await page.textContent("[data-session-ended]")).toContain("ended on the server");
    expect(await page.textContent("[data-conn]")).toBe("Session ended");
  });
});
