/**
 * The demo's view-only link, end to end, on the stack as `npm start` runs
 * it (a bridge that needs access tokens): the owner's page makes the link;
 * another person's browser opened with it shows the variables and the chart
 * live, with every control that would write disabled and saying why; the
 * link's token cannot write through the bridge either; and the session id
 * alone opens nothing.
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Stack, startStack } from "../../demo/stack.ts";
import { BridgeService } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { decodeValue, encodeValue } from "../../src/values/index.js";
import { launchChromium } from "../support/chromium.js";

type Browser = Awaited<ReturnType<typeof launchChromium>>;

let stack: Stack;
let alice: Browser;
let bob: Browser;
let page: Page;
let viewer: Page;
let sessionId = "";
let viewLink = "";

beforeAll(async () => {
  stack = await startStack({
    bridgePort: 0,
    vitePort: 0,
    workerPort: 0,
    watch: false,
    python: false,
    logLevel: "error",
    viteLogLevel: "error",
  });
  [alice, bob] = await Promise.all([launchChromium(), launchChromium()]);
  page = await alice.context.newPage();
  viewer = await bob.context.newPage();
}, 60_000);

afterAll(async () => {
  await Promise.allSettled([alice?.close(), bob?.close()]);
  await stack?.stop();
});

/** The session as a worker reads it (the worker listener needs no token). */
const worker = () =>
  createClient(BridgeService, createGrpcTransport({ baseUrl: `http://${stack.workerTarget}` }));

describe("the view-only link", () => {
  it("is made by the session's owner", async () => {
    await page.goto(`${stack.url}?trials=3&seed=7`);
    await page.waitForSelector('.pill[data-freshness="live"]', { timeout: 30_000 });
    sessionId = (await page.getAttribute("[data-session]", "data-session")) ?? "";
    expect(sessionId).not.toBe("");
    // The address bar names the session and carries no token.
    expect(new URL(page.url()).hash).toBe("");
    await page.click('[data-action="copy-view-link"]');
    await page.waitForSelector("[data-view-link]:not([hidden])");
    viewLink = (await page.getAttribute("[data-view-link]", "href")) ?? "";
    expect(viewLink).toContain(`session=${sessionId}`);
    expect(viewLink).toMatch(/#access=[\w-]+\.[\w-]+\.[\w-]+$/);
  }, 60_000);

  it("shows the variables and the chart live in another browser, every writing control disabled with a reason", async () => {
    await viewer.goto(viewLink);
    await viewer.waitForSelector('.pill[data-freshness="live"]', { timeout: 30_000 });
    expect(await viewer.getAttribute("[data-session]", "data-session")).toBe(sessionId);
    expect(await viewer.textContent('[data-role="viewer"]')).toBe("View only");
    expect(await viewer.textContent(".notices")).toContain("View-only link");
    // No way to make links of its own, and no token left in the address bar.
    expect(await viewer.$$eval('[data-action="copy-view-link"]', (b) => b.length)).toBe(0);
    expect(new URL(viewer.url()).hash).toBe("");
    await viewer.waitForSelector('tr[data-var="threshold"]');

    // Every control in the page that would write is disabled, saying why.
    const controls = await viewer.$$eval("main input, main select, main button", (els) =>
      els
        .filter(
          (el) =>
            el.closest("[data-reads]") === null &&
            // Close buttons (named by aria-label) only hide things.
            !(el.tagName === "BUTTON" && el.hasAttribute("aria-label")),
        )
        .map((el) => ({
          what: el.getAttribute("data-action") ?? el.getAttribute("data-input") ?? el.tagName,
          disabled: (el as HTMLInputElement).disabled,
          title: el.getAttribute("title") ?? "",
        })),
    );
    expect(controls.length).toBeGreaterThan(5);
    expect(controls.filter((c) => !c.disabled || !/View-only link/.test(c.title))).toEqual([]);
    for (const action of ["tune", "evaluate"]) {
      expect(await viewer.isDisabled(`[data-action="${action}"]`)).toBe(true);
    }

    // A change made elsewhere reaches the viewer live.
    await worker().setVariable({
      sessionId,
      variableIdentifier: "threshold",
      value: encodeValue("float", 0.35).any,
    });
    await viewer.waitForFunction(
      () =>
        document.querySelector<HTMLInputElement>('tr[data-var="threshold"] [data-input]')?.value ===
        "0.35",
      undefined,
      { timeout: 20_000 },
    );
    // The owner's evaluation appears on the viewer's chart.
    await page.click('[data-action="evaluate"]');
    await viewer.waitForSelector("svg.chart [data-you]", { timeout: 60_000 });
    // Controls the panels drew since are disabled too.
    expect(await viewer.isDisabled('[data-action="tune"]')).toBe(true);
  }, 120_000);

  it("carries a token the bridge holds to viewing, and the session id alone opens nothing", async () => {
    const token = new URLSearchParams(new URL(viewLink).hash.slice(1)).get("access") ?? "";
    const client = createClient(
      BridgeService,
      createConnectTransport({ baseUrl: stack.bridgeUrl, httpVersion: "1.1" }),
    );
    const auth = { headers: { authorization: `Bearer ${token}` } };
    const read = await client.getVariable({ sessionId, variableIdentifier: "threshold" }, auth);
    expect(decodeValue(read.variable?.value).value).toBe(0.35);
    const write = await client
      .setVariable(
        { sessionId, variableIdentifier: "threshold", value: encodeValue("float", 0.9).any },
        auth,
      )
      .then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
    expect(write?.code).toBe(Code.PermissionDenied);

    const stranger = await bob.context.newPage();
    await stranger.goto(`${stack.url}?session=${sessionId}`);
    await stranger.waitForSelector(".notice.error", { timeout: 20_000 });
    expect(await stranger.textContent(".notice.error")).toMatch(/Not allowed with this link/);
    await stranger.close();
    const { variable } = await worker().getVariable({ sessionId, variableIdentifier: "threshold" });
    expect(decodeValue(variable?.value).value).toBe(0.35);
  }, 60_000);
});
