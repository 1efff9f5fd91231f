import { describe, expect, it } from "vitest";
import { createBridgeServer } from "./bridge-server.js";
import { createMemoryStore } from "./store/memory-store.js";

describe("createBridgeServer", () => {
  it("refuses a Redis store it was not given instead of keeping sessions in memory", () => {
    expect(() =>
      createBridgeServer({ store: { kind: "redis", url: "redis://127.0.0.1:6379" } }),
    ).toThrow(/store names Redis: open the Redis store first and pass it as sessionStore/);
  });
});

describe("a bridge server that never listened", () => {
  it("stop() releases what it holds from its creation on: its store subscription", async () => {
    const store = createMemoryStore();
    let subscribed = 0;
    const subscribe = store.subscribe.bind(store);
    const counted: typeof store = Object.assign(Object.create(store) as typeof store, {
      subscribe: (...args: Parameters<typeof store.subscribe>) => {
        subscribed++;
        const off = subscribe(...args);
        return () => {
          subscribed--;
          off();
        };
      },
    });
    const server = createBridgeServer({ sessionStore: counted, port: 0, adminPort: null });
    expect(subscribed).toBeGreaterThan(0);
    await server.stop();
    expect(subscribed).toBe(0);
    await expect(server.start()).rejects.toThrow("was stopped");
  });
});
