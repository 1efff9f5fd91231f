import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type BrowserContext, chromium } from "playwright-core";

/** Debian's Chromium; the tests never download a browser. */
export const CHROMIUM_PATH = process.env.UB_CHROMIUM ?? "/usr/bin/chromium";

/**
 * Launches Debian's Chromium headless with a fresh profile (a persistent
 * context, so IndexedDB and BroadcastChannel behave as in a real browser
 * profile across reloads and tabs). The flags keep it off the network: this
 * machine has none, and background requests would only fail.
 */
export async function launchChromium(): Promise<{
  context: BrowserContext;
  close(): Promise<void>;
}> {
  const profile = mkdtempSync(join(tmpdir(), "ub-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      "--disable-quic",
    ],
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
