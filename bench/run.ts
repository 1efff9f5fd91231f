/**
 * Runs the benchmarks of the performance targets (each file states its
 * target and why), prints a table
 * (benchmark, measured, target, ratio, pass) and writes the same rows to
 * `bench/results.json` (rows of benchmarks not run this time are kept).
 *
 *   npm run bench                      # every benchmark (~4 min on 2 cores)
 *   npm run bench -- expiry redis      # some of them
 *   npm run bench -- --quick memory    # smoke test: shorter, smaller; results.json untouched
 *   npm run bench -- --list
 *
 * Children (servers, load generators, probes, redis-server) are killed when
 * the runner exits, however it exits. `UB_BENCH_CPU_PROF=<dir>` makes every
 * child write a V8 CPU profile there.
 *
 * Adding a benchmark: write `bench/<name>.ts` exporting `run(ctx)` (see
 * `support/result.ts`) and add one line to `benchmarks` below.
 *
 * The server code measured is the compiled build in `dist/`: when it is
 * missing or older than a source in `src/`, the runner compiles it first
 * (and exits with 2 if that fails). Exit status is 1 when a benchmark crashed, or with `--strict`
 * also when a target was missed.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { ensureFreshDist } from "./support/fresh-dist.ts";
import type { BenchContext, Benchmark, BenchResult } from "./support/result.ts";
import { renderTable } from "./support/table.ts";

const benchmarks: Readonly<Record<string, () => Promise<Benchmark>>> = {
  "server-throughput": () => import("./server-throughput.ts"),
  "batch-get": () => import("./batch-get.ts"),
  "watch-fanout": () => import("./watch-fanout.ts"),
  memory: () => import("./memory.ts"),
  expiry: () => import("./expiry.ts"),
  redis: () => import("./redis.ts"),
  "redis-store": () => import("./redis-store.ts"),
  "redis-replicas": () => import("./redis-replicas.ts"),
  "redis-cluster": () => import("./redis-cluster.ts"),
  "feed-work": () => import("./feed-work.ts"),
  "cache-hit": () => import("./cache-hit.ts"),
  "rpc-counts": () => import("./rpc-counts.ts"),
  workload: () => import("./workload.ts"),
};

const resultsFile = new URL("./results.json", import.meta.url);

async function main(argv: readonly string[]): Promise<number> {
  const flags = new Set(argv.filter((a) => a.startsWith("--")));
  const names = argv.filter((a) => !a.startsWith("--"));
  if (flags.has("--list")) {
    console.log(Object.keys(benchmarks).join("\n"));
    return 0;
  }
  const unknownFlags = [...flags].filter((f) => !["--quick", "--strict", "--list"].includes(f));
  const unknown = names.filter((n) => !(n in benchmarks));
  if (unknown.length > 0 || unknownFlags.length > 0) {
    console.error(
      `unknown ${[...unknown, ...unknownFlags].join(", ")}; benchmarks: ${Object.keys(benchmarks).join(", ")}; flags: --quick --strict --list`,
    );
    return 2;
  }
  const selected = names.length > 0 ? names : Object.keys(benchmarks);
  const ctx: BenchContext = {
    scale: flags.has("--quick") ? 0.3 : 1,
    log: (message) => process.stderr.write(`[bench] ${message}\n`),
  };
  // Figures of an old build would be credited to the code in src/.
  if (!ensureFreshDist(ctx.log)) return 2;

  const results: BenchResult[] = [];
  let crashed = false;
  for (const name of selected) {
    const load = benchmarks[name];
    if (load === undefined) continue;
    const started = performance.now();
    ctx.log(`${name}: start`);
    try {
      const bench = await load();
      results.push(...(await bench.run(ctx)));
    } catch (error) {
      crashed = true;
      ctx.log(
        `${name}: crashed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`,
      );
      results.push({
        name,
        value: Number.NaN,
        unit: "",
        target: "runs",
        pass: false,
        ratio: null,
        display: `error: ${error instanceof Error ? error.message.split("\n", 1)[0] : String(error)}`,
        details: {},
      });
    }
    ctx.log(`${name}: done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  }

  console.log(renderTable(results));
  // Quick figures are not comparable with full runs: never record them.
  if (ctx.scale === 1) writeResults(selected, results);
  const missed = results.filter((r) => r.pass === false).length;
  if (missed > 0) console.log(`\n${missed} of ${results.length} rows missed their target`);
  return crashed || (flags.has("--strict") && missed > 0) ? 1 : 0;
}

/**
 * Writes the rows of this run, keeping rows of benchmarks not run this time
 * (each row carries when it was measured), in registry order.
 */
function writeResults(ran: readonly string[], results: readonly BenchResult[]): void {
  const measuredAt = new Date().toISOString();
  const benchOf = (name: string) => name.split("/", 1)[0] ?? name;
  let kept: unknown[] = [];
  if (existsSync(resultsFile)) {
    try {
      const previous: unknown = JSON.parse(readFileSync(resultsFile, "utf8"));
      if (Array.isArray(previous)) {
        kept = previous.filter((row: { name?: unknown }) => {
          const name = typeof row?.name === "string" ? row.name : "";
          return name in benchmarks || benchOf(name) in benchmarks
            ? !ran.includes(benchOf(name))
            : false;
        });
      }
    } catch {
      // An unreadable previous file is simply replaced.
    }
  }
  const order = Object.keys(benchmarks);
  const rows = [...kept, ...results.map((r) => ({ ...r, measuredAt }))] as { name: string }[];
  rows.sort((a, b) => order.indexOf(benchOf(a.name)) - order.indexOf(benchOf(b.name)));
  writeFileSync(resultsFile, `${JSON.stringify(rows, null, 2)}\n`);
}

process.exitCode = await main(process.argv.slice(2));
