import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { createKeyedLogSampler, createLogSampler } from "./log-sampler.js";
import { createLogger } from "./logger.js";

function capture() {
  const lines: string[] = [];
  const logger = createLogger({ sink: { write: (chunk: string) => lines.push(chunk) } });
  const parsed = () =>
    lines.map((l) => {
      const { time: _, ...rest } = JSON.parse(l) as Record<string, unknown>;
      return rest;
    });
  return { logger, parsed };
}

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe("createLogSampler", () => {
  it("logs a window's first event in full and the rest as one count when the window ends", () => {
    const { logger, parsed } = capture();
    const sampler = createLogSampler(logger, {
      level: "warn",
      msg: "bad",
      windowMs: 1000,
      fields: { kind: "x" },
    });
    for (let i = 0; i < 30_000; i++) sampler.report({ i });
    expect(parsed()).toEqual([{ level: "warn", i: 0, msg: "bad" }]);
    vi.advanceTimersByTime(1000);
    expect(parsed()).toHaveLength(2);
    expect(parsed()[1]).toEqual({
      level: "warn",
      kind: "x",
      suppressed: 29_999,
      windowMs: 1000,
      msg: "bad (more of the same)",
    });
    expect(sampler.suppressed).toBe(29_999);
    // A new window starts with a full line again, and a lone event has no summary.
    sampler.report({ i: 1 });
    vi.advanceTimersByTime(1000);
    expect(parsed().slice(2)).toEqual([{ level: "warn", i: 1, msg: "bad" }]);
  });
});

describe("createKeyedLogSampler", () => {
  it("samples each key on its own, so one outcome never hides another, and names the key in its summary", () => {
    const { logger, parsed } = capture();
    const sampler = createKeyedLogSampler(logger, { level: "info", msg: "tool executed" });
    for (let i = 0; i < 1000; i++) {
      sampler.report({ outcome: "not_found" }, { tool: `t${i}` });
      sampler.report({ outcome: "denied" }, { tool: `d${i}` });
    }
    expect(parsed()).toEqual([
      { level: "info", tool: "t0", outcome: "not_found", msg: "tool executed" },
      { level: "info", tool: "d0", outcome: "denied", msg: "tool executed" },
    ]);
    vi.advanceTimersByTime(10_000);
    expect(parsed().slice(2)).toEqual([
      {
        level: "info",
        outcome: "not_found",
        suppressed: 999,
        windowMs: 10_000,
        msg: "tool executed (more of the same)",
      },
      {
        level: "info",
        outcome: "denied",
        suppressed: 999,
        windowMs: 10_000,
        msg: "tool executed (more of the same)",
      },
    ]);
    expect(sampler.suppressed).toBe(1998);
  });

  it("shares one sampler among keys past maxKeys, so made-up keys cannot grow it", () => {
    const { logger, parsed } = capture();
    const sampler = createKeyedLogSampler(logger, { level: "warn", msg: "m", maxKeys: 2 });
    for (let i = 0; i < 500; i++) sampler.report({ code: `c${i}` });
    expect(parsed().map((l) => l.code)).toEqual(["c0", "c1", "c2"]);
    vi.advanceTimersByTime(10_000);
    expect(parsed()[3]).toMatchObject({ others: true, suppressed: 497 });
  });
});
