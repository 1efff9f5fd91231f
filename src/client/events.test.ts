import { afterEach, describe, expect, it, vi } from "vitest";
import { createEmitter } from "./events.js";

afterEach(() => {
  vi.restoreAllMocks();
});

describe("createEmitter", () => {
  it("delivers to every listener until unsubscribed", () => {
    const events = createEmitter<{ tick: number }>();
    const seen: string[] = [];
    const off = events.on("tick", (n) => seen.push(`a${n}`));
    events.on("tick", (n) => seen.push(`b${n}`));
    events.emit("tick", 1);
    off();
    events.emit("tick", 2);
    expect(seen).toEqual(["a1", "b1", "b2"]);
  });

  it("reports a throwing listener without ending the process, and the others still run", async () => {
    // Under vitest an uncaught exception (what a rethrow on a later task
    // becomes in Node) fails the run: this test would fail with it.
    const reported = vi.spyOn(console, "error").mockImplementation(() => {});
    const events = createEmitter<{ tick: number }>();
    const bug = new Error("listener bug");
    const seen: number[] = [];
    events.on("tick", () => {
      throw bug;
    });
    events.on("tick", (n) => seen.push(n));
    expect(() => events.emit("tick", 1)).not.toThrow();
    expect(seen).toEqual([1]);
    // Give a rethrow on a microtask or a timer its chance to happen.
    await new Promise<void>((resolve) => setImmediate(resolve));
    expect(reported).toHaveBeenCalledTimes(1);
    expect(reported.mock.calls[0]?.[1]).toBe(bug);
  });

  it("hands listener errors to the runtime's reportError where there is one", () => {
    const reportError = vi.fn();
    vi.stubGlobal("reportError", reportError);
    try {
      const events = createEmitter<{ tick: number }>();
      events.on("tick", () => {
        throw new Error("listener bug");
      });
      events.emit("tick", 1);
      expect(reportError).toHaveBeenCalledWith(new Error("listener bug"));
    } finally {
      vi.unstubAllGlobals();
    }
  });
});
