/**
 * `npm run serve -- [options]`: the bridge server from a checkout.
 *
 * `--help` (or `-h`) prints the options at once: it runs the CLI from
 * source (Node 24 with scripts/ts-source-hooks.mjs), with no build. Serving
 * compiles the library first (`tsc -p tsconfig.build.json`, not the demo's
 * Vite build) so the server runs from dist/, as the installed package does.
 */
import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
const node = process.execPath;
const run = (file, argv) => spawnSync(file, argv, { cwd: root, stdio: "inherit" }).status ?? 1;

if (args.includes("--help") || args.includes("-h")) {
  process.exit(
    run(node, [
      "--disable-warning=ExperimentalWarning",
      "--experimental-transform-types",
      "--import",
      "./scripts/ts-source-hooks.mjs",
      "src/server/cli.ts",
      "serve",
      ...args,
    ]),
  );
}
const built = run(node, [
  join(root, "node_modules/typescript/bin/tsc"),
  "-p",
  "tsconfig.build.json",
]);
if (built !== 0) process.exit(built);
process.exit(run(node, ["dist/server/cli.js", "serve", ...args]));
