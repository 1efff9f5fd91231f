/** The results table printed at the end of a run. */
import type { BenchResult } from "./result.ts";

const headers = ["benchmark", "measured", "target", "ratio", "pass"] as const;

/** Renders results as an aligned plain-text table. */
export function renderTable(results: readonly BenchResult[]): string {
  const rows = results.map((r) => [
    r.name,
    r.display,
    r.target,
    r.ratio === null || !Number.isFinite(r.ratio) ? "—" : r.ratio.toFixed(3),
    r.pass === null ? "info" : r.pass ? "pass" : "FAIL",
  ]);
  const widths = headers.map((h, i) =>
    Math.max(h.length, ...rows.map((row) => (row[i] ?? "").length)),
  );
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === 3 ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  return [line(headers), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n");
}
