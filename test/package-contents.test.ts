/**
 * What `npm pack` ships: the build without its source maps (the sources
 * they point to are not shipped), the proto files, README, LICENSE and
 * CHANGELOG. Packed with npm itself, from a copy of the package's own
 * package.json beside a stand-in build.
 */
import { execFile } from "node:child_process";
import { cp, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const run = promisify(execFile);
const root = fileURLToPath(new URL("..", import.meta.url));
let dir = "";

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "ub-pack-"));
  for (const file of ["package.json", "README.md", "LICENSE", "CHANGELOG.md", "proto"]) {
    await cp(path.join(root, file), path.join(dir, file), { recursive: true });
  }
  await mkdir(path.join(dir, "dist/client"), { recursive: true });
  for (const file of ["index.js", "index.d.ts", "index.js.map", "index.d.ts.map"]) {
    await writeFile(path.join(dir, "dist/client", file), "\n");
  }
});
afterAll(async () => {
  if (dir !== "") await rm(dir, { recursive: true, force: true });
});

describe("the published package", () => {
  it("ships the build, the protocol, README, LICENSE and CHANGELOG, and nothing else", async () => {
    const { stdout } = await run("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], {
      cwd: dir,
      timeout: 60_000,
    });
    const [pack] = JSON.parse(stdout) as [{ files: { path: string }[] }];
    const files = pack.files.map((f) => f.path).sort();
    expect(files).toEqual([
      "CHANGELOG.md",
      "LICENSE",
      "README.md",
      "dist/client/index.d.ts",
      "dist/client/index.js",
      "package.json",
      "proto/grpc/health/v1/health.proto",
      "proto/snakepit/bridge/bridge.proto",
    ]);
  });
});
