/**
 * memory: (1) heap bytes a variable costs beyond its value, with string
 * values of 16 B and 1 KiB, through the real RPC handlers (in-memory
 * transport), after RegisterVariable + GetVariable; (2) the RSS of a server
 * holding 100k sessions × 10 variables. Each measurement runs in a fresh
 * `--expose-gc` process. Targets: ≤ 1 KiB per variable over its
 * value; 100k × 10 in ≤ 1 GiB.
 */
import { startChild } from "./support/child-processes.ts";
import { type BenchContext, type BenchResult, formatBytes } from "./support/result.ts";
import { round } from "./support/stats.ts";
import type { MemoryRequest, PerVariable, SessionsRss } from "./workers/memory-probe.ts";

const overheadTarget = 1024;
const rssTarget = 2 ** 30;

async function probe<T>(request: MemoryRequest): Promise<T> {
  const worker = await startChild(new URL("./workers/memory-probe.ts", import.meta.url), {
    execArgv: ["--expose-gc"],
  });
  try {
    return await worker.request<T>(request);
  } finally {
    await worker.close();
  }
}

/** Runs the benchmark; see the module comment. */
export async function run(ctx: BenchContext): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  const sessions = Math.max(100, Math.round(250 * ctx.scale));
  const perSession = 20;
  for (const valueBytes of [16, 1024]) {
    ctx.log(`memory: ${sessions * perSession} variables of ${valueBytes} B`);
    const m = await probe<PerVariable>({ type: "per-variable", valueBytes, sessions, perSession });
    results.push({
      name: `memory/variable-overhead/${valueBytes}B`,
      value: Math.round(m.overheadBytes),
      unit: "B",
      target: `≤ ${formatBytes(overheadTarget)}`,
      pass: m.overheadBytes <= overheadTarget,
      ratio: round(m.overheadBytes / overheadTarget, 3),
      display: `${formatBytes(m.overheadBytes)}/variable over a ${formatBytes(valueBytes)} value (+${formatBytes(m.perWriteBytes)} per write kept in history)`,
      details: {
        ...m,
        overheadBytes: Math.round(m.overheadBytes),
        perWriteBytes: Math.round(m.perWriteBytes),
        perSessionBytes: Math.round(m.perSessionBytes),
        measuredAs:
          "V8 heapUsed + external after full GCs, filled via RegisterVariable + GetVariable",
      },
    });
  }

  const count = Math.round(100_000 * ctx.scale);
  ctx.log(`memory: RSS of ${count} sessions × 10 variables`);
  const r = await probe<SessionsRss>({ type: "sessions-rss", sessions: count });
  // A quick run holds fewer sessions; the verdict is on the full 100k only.
  const full = count === 100_000;
  results.push({
    name: "memory/rss-100k-sessions",
    value: r.rssBytes,
    unit: "B",
    target: `≤ ${formatBytes(rssTarget)}`,
    pass: full ? r.rssBytes <= rssTarget : null,
    ratio: round(r.rssBytes / rssTarget, 3),
    display: `RSS ${formatBytes(r.rssBytes)} for ${r.sessions} sessions × 10 (heap ${formatBytes(r.heapUsedBytes)})`,
    details: {
      ...r,
      bytesPerVariable: Math.round((r.rssBytes - r.baselineRssBytes) / Math.max(1, r.variables)),
      fillSeconds: round(r.fillSeconds, 3),
      filledVia:
        "store.createSession + the server's register semantics + the response's wire messages (support/populate.ts)",
    },
  });
  return results;
}
