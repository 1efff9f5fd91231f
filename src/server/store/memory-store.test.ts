import { describe, expect, it } from "vitest";
import { describeSessionStoreContract } from "../../../test/support/session-store-contract.js";
import { waitFor } from "../../../test/support/wait.js";
import { createMemoryStore } from "./memory-store.js";

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
  const createMany = async (store: ReturnType<typeof createMemoryStore>, n: number) => {
    for (let i = 0; i < n; i++) {
      await store.createSession(
        { id: `old${i}`, metadata: {}, ttlMs: 1000, allowedTools: [] },
        1e6,
      );
    }
    await store.createSession({ id: "young", metadata: {}, ttlMs: 10_000, allowedTools: [] }, 1e6);
  };

  it("sweeps a mass expiry in chunks and leaves live sessions alone", async () => {
    let t = 0;
    // A slice of 0 ms: the sweeper lets other work in after every few sessions.
    const store = createMemoryStore({ now: () => t, sweepIntervalMs: 5, sweepSliceMs: 0 });
    await createMany(store, 2000);
    const expired = new Set<string>();
    const others: string[] = [];
    // Events of one chunk arrive in one synchronous run: count the runs.
    let chunks = 0;
    let inChunk = false;
    store.subscribe((event) => {
      if (event.type !== "session_ended") return;
      if (event.reason === "expired") expired.add(event.sessionId);
      else others.push(event.sessionId);
      if (!inChunk) {
        inChunk = true;
        chunks++;
        queueMicrotask(() => {
          inChunk = false;
        });
      }
    });
    t = 5000;
    // Nothing reads the old sessions: only the sweeper can remove them.
    await waitFor(async () => expect((await store.stats()).sessions).toBe(1));
    expect(expired.size).toBe(2000);
    expect(expired.has("young")).toBe(false);
    expect(others).toEqual([]);
    expect(chunks).toBeGreaterThan(1);
    expect(await store.read("young", () => true)).toBeDefined();
    await store.close();
  });

  it("removes an expired session when it is read, with the sweeper off", async () => {
    let t = 0;
    const store = createMemoryStore({ now: () => t, sweepIntervalMs: 0 });
    await createMany(store, 3);
    t = 5000;
    expect(await store.read("old0", () => true)).toBeUndefined();
    expect((await store.stats()).sessions).toBe(3);
    expect(await store.read("young", () => true)).toBeDefined();
    await store.close();
  });
});
