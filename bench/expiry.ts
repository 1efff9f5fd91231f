/**
 * expiry: the largest event-loop stall while 100k sessions expire at once
 * in the in-memory store (controllable clock, the server's real sweeper and
 * session-ended handling), measured with `monitorEventLoopDelay` in a fresh
 * process. The scenario runs three times, each in a fresh process; the
 * median of the three maxima is reported (every run is in the details).
 * Target: no stall > 50 ms, so a mass expiry never holds up the calls being
 * served.
 */
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startChild } from "./support/child-processes.ts";
import type { BenchContext, BenchResult } from "./support/result.ts";
import { median, round } from "./support/stats.ts";
import type { ExpiryReport } from "./workers/expiry-probe.ts";

const stallTarget = 50;
const runs = 3;

/** Runs the benchmark; see the module comment. */
export async function run(ctx: BenchContext): Promise<BenchResult[]> {
  const sessions = Math.round(100_000 * ctx.scale);
  const reports: (ExpiryReport & { logLines: number })[] = [];
  for (let i = 0; i < runs; i++) {
    ctx.log(`expiry: run ${i + 1}/${runs}: filling ${sessions} sessions, then expiring them all`);
    reports.push(await expireOnce(sessions));
  }
  const maxStall = median(reports.map((r) => r.maxStallMs));
  const sweep = median(reports.map((r) => r.sweepMs));
  const full = sessions === 100_000;
  const complete = reports.every((r) => r.remaining === 0);
  return [
    {
      name: "expiry/max-stall-100k",
      value: round(maxStall, 3),
      unit: "ms",
      target: `≤ ${stallTarget} ms`,
      pass: full ? complete && maxStall <= stallTarget : null,
      ratio: round(maxStall / stallTarget, 3),
      display: `max stall ${maxStall.toFixed(1)} ms (runs: ${reports.map((r) => r.maxStallMs.toFixed(0)).join(", ")}) while ${sessions} sessions expired in ${(sweep / 1000).toFixed(2)} s`,
      details: {
        sessions,
        variablesPerSession: 2,
        runs: reports.map((r) => ({
          maxStallMs: round(r.maxStallMs),
          p99StallMs: round(r.p99StallMs),
          meanStallMs: round(r.meanStallMs),
          idleMaxStallMs: round(r.idleMaxStallMs),
          sweepMs: Math.round(r.sweepMs),
          fillSeconds: round(r.fillSeconds, 3),
          remaining: r.remaining,
          sessionEndedLogLines: r.logLines,
        })),
      },
    },
  ];
}

async function expireOnce(sessions: number): Promise<ExpiryReport & { logLines: number }> {
  const dir = mkdtempSync(join(tmpdir(), "ub-bench-expiry-"));
  try {
    // The server logs one line per ended session; in production stdout is a
    // file or pipe written synchronously, so give it a real file.
    const logFile = join(dir, "server.log");
    const fd = openSync(logFile, "w");
    let report: ExpiryReport;
    try {
      const worker = await startChild(new URL("./workers/expiry-probe.ts", import.meta.url), {
        stdout: fd,
        execArgv: ["--expose-gc"],
      });
      try {
        report = await worker.request<ExpiryReport>({ type: "expire", sessions });
      } finally {
        await worker.close();
      }
    } finally {
      closeSync(fd);
    }
    const logLines = readFileSync(logFile, "utf8")
      .split("\n")
      .filter((l) => l.includes("session ended")).length;
    return { ...report, logLines };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
