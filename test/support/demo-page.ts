/** Waits on the demo page that the e2e suites share. */
import type { Page } from "playwright-core";

/**
 * Waits for the tuning panel to show `text`; on timeout the error says what
 * the panel showed instead, so that a run that never got going can be told
 * from one that went past the text.
 */
export async function panelShows(p: Page, text: string | RegExp, timeoutMs: number): Promise<void> {
  try {
    await p
      .locator("[data-progress]", { hasText: text })
      .waitFor({ state: "visible", timeout: timeoutMs });
  } catch (e) {
    const progress = await p.textContent("[data-progress]").catch(() => null);
    const status = await p.textContent("[data-tune-status]").catch(() => null);
    throw new Error(
      `the tuning panel never showed ${String(text)} within ${timeoutMs} ms; it shows progress ${JSON.stringify(progress)}, status ${JSON.stringify(status)}`,
      { cause: e },
    );
  }
}
