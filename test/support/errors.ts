import { type Code, ConnectError } from "@connectrpc/connect";
import { expect } from "vitest";

/**
 * Runs `fn`, expects it to throw a ConnectError (with `code`, when given)
 * and returns the error for further assertions.
 */
export function thrownBy(fn: () => unknown, code?: Code): ConnectError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ConnectError);
    if (code !== undefined) expect((e as ConnectError).code).toBe(code);
    return e as ConnectError;
  }
  throw new Error("expected a ConnectError, but nothing was thrown");
}

/** Awaits `p`, expects it to reject with a ConnectError and returns it. */
export async function rejectionOf(p: Promise<unknown>, code?: Code): Promise<ConnectError> {
  const e = await p.then(
    () => undefined,
    (error: unknown) => error,
  );
  expect(e).toBeInstanceOf(ConnectError);
  if (code !== undefined) expect((e as ConnectError).code).toBe(code);
  return e as ConnectError;
}
