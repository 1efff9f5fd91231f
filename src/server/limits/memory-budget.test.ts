import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { thrownBy } from "../../../test/support/errors.js";
import { createManualTimers } from "../../../test/support/manual-timers.js";
import { createMemoryBudget, resolveMemoryBudget } from "./memory-budget.js";

describe("createMemoryBudget", () => {
  it("refuses while the last sample is above the budget, and stops refusing once it falls", async () => {
    let inUse = 100;
    const timers = createManualTimers();
    const budget = createMemoryBudget({ limit: 150, intervalMs: 10, sample: () => inUse, timers });
    try {
      expect(budget.over).toBe(false);
      budget.check();
      inUse = 200;
      // The verdict is the last sample's: it changes on the next tick, not before.
      await timers.advance(9);
      expect(budget.over).toBe(false);
      await timers.advance(1);
      expect(budget.over).toBe(true);
      const e = thrownBy(() => budget.check(), Code.ResourceExhausted);
      expect(e.rawMessage).toBe(
        "the server is at its memory budget (--memory-budget: 200 bytes in use, the budget is 150 bytes); try again later",
      );
      inUse = 120;
      await timers.advance(10);
      expect(budget.over).toBe(false);
      budget.check();
    } finally {
      budget.close();
    }
    expect(timers.pending).toBe(0);
  });

  it("never refuses when off, and still reports what is in use", () => {
    const budget = createMemoryBudget({ limit: 0, sample: () => 1e12 });
    expect(budget.over).toBe(false);
    budget.check();
    expect(budget.used).toBe(1e12);
    budget.close();
  });

  it("auto is three quarters of V8's heap limit", () => {
    expect(resolveMemoryBudget(1234)).toBe(1234);
    expect(resolveMemoryBudget("auto")).toBeGreaterThan(64 * 1024 * 1024);
  });
});
