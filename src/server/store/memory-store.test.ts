import { describe, expect, it } from "vitest";
import { createMemoryStore } from "./memory-store.js";
import { describeSessionStoreContract } from "./session-store.contract.js";

describeSessionStoreContract("memory", async () => {
  let t = 1_000_000;
  const store = createMemoryStore({ now: () => t, sweepIntervalMs: 20 });
  return {
    store,
    advance(ms) {
      t += ms;
    },
    settle: async () => undefined,
  };
});

describe("memory store expiry", () => {
  it("sweeps a mass expiry in chunks and leaves live sessions alone", async () => {
    let t = 0;
    const store = createMemoryStore({ now: () => t, sweepIntervalMs: 0, sweepSliceMs: 5 });
    for (let i = 0; i < 2000; i++) {
      await store.createSession(
        { id: `old${i}`, metadata: {}, ttlMs: 1000, allowedTools: [] },
        1e6,
      );
    }
    await store.createSession({ id: "young", metadata: {}, ttlMs: 10_000, allowedTools: [] }, 1e6);
    t = 5000;
    // Reading an expired session removes it on the spot, sweeper or not.
    expect(await store.read("old0", () => true)).toBeUndefined();
    expect((await store.stats()).sessions).toBe(2000);
    expect(await store.read("young", () => true)).toBeDefined();
    await store.close();
  });
});
