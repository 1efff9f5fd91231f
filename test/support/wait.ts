import { vi } from "vitest";

/**
 * Waits for an event a test can observe: retries `check` until it returns
 * without throwing (or its promise resolves), and resolves to its result.
 * Bounded: after `timeoutMs` it fails with the last error of `check`. Tests
 * wait with this instead of sleeping a fixed time, which races on a loaded
 * machine.
 */
export function waitFor<T>(
  check: () => T | Promise<T>,
  options: { readonly timeoutMs?: number; readonly intervalMs?: number } = {},
): Promise<T> {
  return vi.waitFor(check, {
    timeout: options.timeoutMs ?? 10_000,
    interval: options.intervalMs ?? 10,
  });
}
