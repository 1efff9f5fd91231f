import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../../", import.meta.url));

/**
 * The first library source whose compiled file in `dist/` is missing or
 * older than it (undefined when the build is current). Tests are not
 * compiled, so they do not count.
 */
export function staleSource(): string | undefined {
  const walk = (dir: string): string | undefined => {
    for (const entry of readdirSync(`${root}${dir}`, { withFileTypes: true })) {
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory()) {
        const found = walk(path);
        if (found !== undefined) return found;
        continue;
      }
      if (!entry.name.endsWith(".ts") || entry.name.endsWith(".test.ts")) continue;
      if (entry.name.endsWith(".d.ts")) continue;
      const built = `${root}dist/${path.slice("src/".length, -".ts".length)}.js`;
      if (!existsSync(built) || statSync(built).mtimeMs < statSync(`${root}${path}`).mtimeMs) {
        return path;
      }
    }
    return undefined;
  };
  return walk("src");
}

/**
 * Makes sure the benchmarks measure the code in `src/`: compiles the
 * library (tsconfig.build.json) when `dist/` is missing or older than a
 * source. Returns false, having said why, when the build fails.
 */
export function ensureFreshDist(log: (message: string) => void): boolean {
  const stale = staleSource();
  if (stale === undefined) return true;
  log(`dist/ is older than ${stale}: compiling the library (tsc -p tsconfig.build.json)`);
  try {
    execFileSync(`${root}node_modules/.bin/tsc`, ["-p", "tsconfig.build.json"], {
      cwd: root,
      stdio: "inherit",
    });
  } catch {
    log("the build failed: fix it, or run `npm run build` to see why");
    return false;
  }
  const still = staleSource();
  if (still !== undefined) {
    log(`dist/ is still older than ${still} after the build; refusing to measure it`);
    return false;
  }
  return true;
}
