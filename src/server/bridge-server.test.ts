import { describe, expect, it } from "vitest";
import { createBridgeServer } from "./bridge-server.js";

describe("createBridgeServer", () => {
  it("refuses a Redis store it was not given instead of keeping sessions in memory", () => {
    expect(() =>
      createBridgeServer({ store: { kind: "redis", url: "redis://127.0.0.1:6379" } }),
    ).toThrow(/store names Redis: open the Redis store first and pass it as sessionStore/);
  });
});
