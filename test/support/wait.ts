import { vi } from "vitest";

/**
 * Waits until `condition` holds (polled by vi.waitFor), so a test waits on
 * the event it needs instead of sleeping a fixed time; fails after
 * `timeoutMs` naming `what` it waited for.
 */
export async function until(
  condition: () => boolean | Promise<boolean>,
  what = "the condition",
  timeoutMs = 5000,
): Promise<void> {
  await vi.waitFor(
    async () => {
      if (!(await condition())) throw new Error(`timed out waiting for ${what}`);
    },
    { timeout: timeoutMs, interval: 5 },
  );
}
