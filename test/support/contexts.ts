import { afterAll, afterEach, beforeAll } from "vitest";
import {
  createSessionContext,
  type SessionContext,
  type SessionContextOptions,
} from "../../src/client/index.js";
import { type RunningBridge, startBridge } from "./bridge.js";
import { type CountingTransport, countingTransport } from "./counting.js";

/** What {@link useSessionContexts} gives a suite. */
export interface SessionContexts {
  /** The suite's bridge (started before all tests). */
  readonly bridge: RunningBridge;
  /** Opens a context over a counting transport; it is closed after the test. */
  context(
    options?: Partial<SessionContextOptions>,
    delay?: Parameters<typeof countingTransport>[1],
  ): Promise<{ ctx: SessionContext; counting: CountingTransport }>;
  /** Closes a context made another way after the test. */
  track(ctx: SessionContext): SessionContext;
}

/**
 * For client suites: one real bridge for the suite, and contexts over
 * counting transports that are closed after each test.
 */
export function useSessionContexts(): SessionContexts {
  let bridge: RunningBridge | undefined;
  const open: SessionContext[] = [];
  beforeAll(async () => {
    bridge = await startBridge();
  });
  afterAll(async () => {
    await bridge?.stop();
  });
  afterEach(async () => {
    await Promise.all(open.splice(0).map((c) => c.close()));
  });
  const running = (): RunningBridge => {
    if (bridge === undefined) throw new Error("the bridge starts in beforeAll");
    return bridge;
  };
  return {
    get bridge() {
      return running();
    },
    async context(options = {}, delay) {
      const counting = countingTransport(running().url, delay);
      const ctx = await createSessionContext({ transport: counting.transport, ...options });
      open.push(ctx);
      return { ctx, counting };
    },
    track(ctx) {
      open.push(ctx);
      return ctx;
    },
  };
}
