/**
 * The tables of docs/ that restate code or data, generated from it: every
 * server option (src/server/config/config-options.ts) in docs/server.md, and the
 * latest benchmark results (bench/results.json) in docs/performance.md.
 * Each table sits between `<!-- generated:NAME -->` and
 * `<!-- /generated:NAME -->`; `npm run docs` rewrites it, and
 * test/doc-tables.test.ts fails when one differs from what this makes.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { formatDefault } from "../src/server/config/config.ts";
import { optionEntries } from "../src/server/config/config-options.ts";

const root = new URL("../", import.meta.url);

/** A table cell: one line, pipes escaped. */
const cell = (text: string) => text.replace(/\s*\n\s*/g, " ").replace(/\|/g, "\\|");

/** Every option of `unified-bridge serve`: flag, variable, default, meaning. */
export function optionsTable(): string {
  const rows = optionEntries.map(([, o]) => {
    const shown = o.secret === true ? "none" : formatDefault(o.default);
    const flag = o.boolean === true ? `--${o.flag}` : `--${o.flag} ${o.placeholder}`;
    return `| \`${cell(flag)}\` | \`${o.env}\` | ${cell(shown)} | ${cell(o.help)} |`;
  });
  return ["| flag | variable | default | meaning |", "|---|---|---|---|", ...rows].join("\n");
}

/** One benchmark result as bench/run.ts writes it. */
interface BenchRow {
  readonly name: string;
  readonly target?: string;
  readonly display?: string;
  readonly pass?: boolean | null;
  readonly measuredAt?: string;
}

/** Every benchmark of bench/results.json: target, measured, met, date. */
export function benchTable(rows: readonly BenchRow[]): string {
  const met = (pass: boolean | null | undefined) =>
    pass === true ? "met" : pass === false ? "missed" : "information";
  const lines = rows.map(
    (r) =>
      `| \`${r.name}\` | ${cell(r.target ?? "")} | ${cell(r.display ?? "")} | ${met(r.pass)} | ${(r.measuredAt ?? "").slice(0, 10)} |`,
  );
  return ["| benchmark | target | measured | | run on |", "|---|---|---|---|---|", ...lines].join(
    "\n",
  );
}

/** The generated tables by name, and the docs file each lives in. */
export function docTables(): { file: string; name: string; table: string }[] {
  const results = JSON.parse(
    readFileSync(new URL("bench/results.json", root), "utf8"),
  ) as BenchRow[];
  return [
    { file: "docs/server.md", name: "options", table: optionsTable() },
    { file: "docs/performance.md", name: "benchmarks", table: benchTable(results) },
  ];
}

/** `text` with the block `name` replaced by `table`; throws when the markers are missing. */
export function withTable(text: string, name: string, table: string): string {
  const open = `<!-- generated:${name} -->`;
  const close = `<!-- /generated:${name} -->`;
  const start = text.indexOf(open);
  const end = text.indexOf(close);
  if (start === -1 || end < start) throw new Error(`no ${open} … ${close} block`);
  return `${text.slice(0, start + open.length)}\n${table}\n${text.slice(end)}`;
}

// `node … scripts/doc-tables.ts`: rewrites the blocks in docs/.
if (import.meta.main) {
  for (const { file, name, table } of docTables()) {
    const url = new URL(file, root);
    const text = readFileSync(url, "utf8");
    const next = withTable(text, name, table);
    if (next !== text) {
      writeFileSync(url, next);
      console.log(`docs: ${file} (${name}) regenerated`);
    }
  }
}
