// Fails when src/gen is not exactly what `buf generate` makes from proto/.
// Generates into a temporary copy of the project's config and compares the
// trees, so the working tree is never modified.
import { execFileSync } from "node:child_process";
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const work = mkdtempSync(join(tmpdir(), "ub-gen-"));
try {
  for (const entry of ["buf.yaml", "buf.gen.yaml", "proto"]) {
    cpSync(join(root, entry), join(work, entry), { recursive: true });
  }
  execFileSync(join(root, "node_modules/.bin/buf"), ["generate"], {
    cwd: work,
    stdio: "inherit",
    env: { ...process.env, PATH: `${join(root, "node_modules/.bin")}:${process.env.PATH}` },
  });
  const expected = listFiles(join(work, "src/gen"));
  const actual = listFiles(join(root, "src/gen"));
  const stale = [];
  for (const file of new Set([...expected.keys(), ...actual.keys()])) {
    if (expected.get(file) !== actual.get(file)) stale.push(file);
  }
  if (stale.length > 0) {
    console.error(`src/gen is stale (${stale.join(", ")}): run \`npm run generate\` and commit.`);
    process.exit(1);
  }
  console.log(`src/gen is up to date (${actual.size} files).`);
} finally {
  rmSync(work, { recursive: true, force: true });
}

function listFiles(dir) {
  const files = new Map();
  const walk = (d) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else files.set(relative(dir, p), readFileSync(p, "utf8"));
    }
  };
  walk(dir);
  return files;
}
