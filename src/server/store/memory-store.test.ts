import { describe, expect, it, onTestFinished } from "vitest";
import { describeSessionStoreContract } from "../../../test/support/session-store-contract.js";
import { waitFor } from "../../../test/support/wait.js";
import { createMemoryStore } from "./memory-store.js";

for (const rehearse of [false, true]) {
  describeSessionStoreContract(
    rehearse ? "memory, every callback run twice" : "memory",
    async () => {
      let t = 1_000_000;
      const store = createMemoryStore({ now: () => t, sweepIntervalMs: 20, rehearse });
      return {
        store,
        advance(ms) {
          t += ms;
        },
        settle: async () => undefined,
      };
    },
  );
}

describe("memory store rehearsal", () => {
  const open = async () => {
    const store = createMemoryStore({ sweepIntervalMs: 0, rehearse: true });
    onTestFinished(() => store.close());
    await store.createSession({ id: "s", metadata: {}, ttlMs: 60_000, allowedTools: [] }, 10);
    return store;
  };

  it("runs every transaction twice, as a lost race would, and keeps the second run", async () => {
    const store = await open();
    const seen: (number | undefined)[] = [];
    const result = await store.transact("s", (tx) => {
      seen.push(tx.data("n") as number | undefined);
      tx.setData("n", seen.length, 8);
      return seen.length;
    });
    // The second run saw the session as the first found it.
    expect(seen).toEqual([undefined, undefined]);
    expect(result?.value).toBe(2);
    expect((await store.read("s", (v) => v.data("n")))?.value).toBe(2);
  });

  it("drops what the first run threw: only the second run decides", async () => {
    const store = await open();
    let runs = 0;
    const result = await store.transact("s", (tx) => {
      runs++;
      if (runs === 1) throw new Error("decided on a copy that was stale");
      tx.setData("k", "v", 1);
      return "committed";
    });
    expect(result?.value).toBe("committed");
    await expect(
      store.transact("s", () => {
        runs++;
        if (runs === 4) throw new Error("refused by the last run");
      }),
    ).rejects.toThrow("refused by the last run");
  });

  it("catches a callback with an effect outside its transaction", async () => {
    const store = await open();
    const sent: string[] = [];
    await store.transact("s", (tx) => {
      tx.setData("k", "v", 1);
      sent.push("notification");
    });
    expect(sent).toEqual(["notification", "notification"]);
  });
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
