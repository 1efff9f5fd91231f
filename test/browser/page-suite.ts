import type { Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, expect } from "vitest";
import type { BridgeServerOptions } from "../../src/server/index.js";
import { type RunningBridge, startBridge } from "../support/bridge.js";
import { launchChromium } from "../support/chromium.js";
import { type AppServer, bundleApp, startAppServer } from "./app-server.js";

/** What a suite of {@link pageSuite} uses, once its hooks have run. */
export interface PageSuite {
  readonly bridge: RunningBridge;
  readonly server: AppServer;
  /**
   * A new tab on the test page (`?` + `query`; `tab=…` names it for the
   * call counts), once its `window.app` exists.
   */
  open(query: string): Promise<Page>;
}

/**
 * Registers the hooks of a suite on the test page (fixture/app.ts): a
 * bridge (started with `options.bridge`), the page server in front of it,
 * Chromium, and a check after each test that no page threw an uncaught
 * error.
 */
export function pageSuite(options: { readonly bridge?: BridgeServerOptions } = {}): PageSuite {
  let bridge: RunningBridge | undefined;
  let server: AppServer | undefined;
  let browser: Awaited<ReturnType<typeof launchChromium>> | undefined;
  const pageErrors: Error[] = [];
  const ready = <T>(value: T | undefined): T => {
    if (value === undefined) throw new Error("pageSuite: used before its beforeAll ran");
    return value;
  };

  beforeAll(async () => {
    const [appJs, started] = await Promise.all([bundleApp(), startBridge(options.bridge)]);
    bridge = started;
    server = await startAppServer(started.url, appJs);
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
    await server?.close();
    await bridge?.stop();
  });
  afterEach(() => {
    expect(pageErrors.splice(0)).toEqual([]);
  });

  return {
    get bridge() {
      return ready(bridge);
    },
    get server() {
      return ready(server);
    },
    async open(query) {
      const page = await ready(browser).context.newPage();
      page.on("pageerror", (error) => pageErrors.push(error));
      await page.goto(`${ready(server).origin}/?${query}`);
      await page.waitForFunction(() => window.app !== undefined);
      return page;
    },
  };
}
