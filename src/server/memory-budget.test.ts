import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { thrownBy } from "../../test/support/errors.js";
import { createMemoryBudget, resolveMemoryBudget } from "./memory-budget.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("createMemoryBudget", () => {
  it("refuses while the last sample is above the budget, and stops refusing once it falls", async () => {
    let inUse = 100;
    const budget = createMemoryBudget({ limit: 150, intervalMs: 10, sample: () => inUse });
    try {
      expect(budget.over).toBe(false);
      budget.check();
      inUse = 200;
      await sleep(60);
      expect(budget.over).toBe(true);
      const e = thrownBy(() => budget.check(), Code.ResourceExhausted);
      expect(e.rawMessage).toBe(
        "the server is at its memory budget (--memory-budget: 200 bytes in use, the budget is 150 bytes); try again later",
      );
      inUse = 120;
      await sleep(60);
      expect(budget.over).toBe(false);
      budget.check();
    } finally {
      budget.close();
    }
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
