/**
 * scripts/test-prerequisites.mjs, which `npm test` and `.ci/run` start
 * with, against stand-ins for dpkg-query, apt-get and sudo on PATH (the
 * real ones are left alone): nothing to do when every package is there;
 * missing ones installed when the process may; otherwise one message
 * naming them and the command, and a failing exit before any suite runs.
 */
import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";

const script = new URL("../scripts/test-prerequisites.mjs", import.meta.url).pathname;
const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/**
 * A PATH whose dpkg-query reports `missing` as not installed (until the
 * fake apt-get installs them), whose apt-get logs its arguments, and whose
 * sudo runs the command (password-less sudo) or refuses.
 */
function fakeSystem(missing: readonly string[], options: { sudo: boolean }) {
  const dir = mkdtempSync(join(tmpdir(), "ub-prereq-"));
  dirs.push(dir);
  const state = join(dir, "missing");
  const log = join(dir, "apt-get.log");
  writeFileSync(state, missing.map((m) => `${m}\n`).join(""));
  const tool = (name: string, body: string) => {
    writeFileSync(join(dir, name), `#!/bin/sh\n${body}\n`);
    chmodSync(join(dir, name), 0o755);
  };
  tool(
    "dpkg-query",
    `[ "$1" = "--version" ] && exit 0
for last; do :; done
if grep -qx "$last" "${state}"; then exit 1; fi
printf 'install ok installed'`,
  );
  tool("apt-get", `echo "$@" >> "${log}"\n[ "$1" = "install" ] && : > "${state}"\nexit 0`);
  tool("sudo", options.sudo ? '[ "$1" = "-n" ] && shift\nexec "$@"' : "exit 1");
  chmodSync(dir, 0o755);
  return {
    path: `${dir}:/usr/bin:/bin`,
    aptCalls: () => {
      try {
        return readFileSync(log, "utf8").trim().split("\n");
      } catch {
        return [];
      }
    },
  };
}

/** Runs the script with `path`; as a user who is not root when `asUser` (via su, when this process is root). */
function runScript(path: string, asUser: boolean) {
  const node = process.execPath;
  const root = process.getuid?.() === 0;
  const result =
    asUser && root
      ? spawnSync("su", ["nobody", "-s", "/bin/sh", "-c", `PATH=${path} ${node} ${script}`], {
          encoding: "utf8",
        })
      : spawnSync(node, [script], { encoding: "utf8", env: { ...process.env, PATH: path } });
  return { status: result.status, stderr: result.stderr };
}

describe("the test prerequisites", () => {
  it("do nothing when every package is installed", () => {
    const system = fakeSystem([], { sudo: false });
    const result = runScript(system.path, false);
    expect({ ...result, apt: system.aptCalls() }).toEqual({ status: 0, stderr: "", apt: [] });
  });

  it("install what is missing when the process may (root, or sudo without a password)", () => {
    const system = fakeSystem(["redis-server", "chromium"], { sudo: true });
    const result = runScript(system.path, false);
    expect({ status: result.status, apt: system.aptCalls() }).toEqual({
      status: 0,
      apt: ["update -q", "install -y -q --no-install-recommends redis-server chromium"],
    });
  });

  it("stop at once, naming the packages and the command, when they cannot be installed", () => {
    const system = fakeSystem(["redis-server"], { sudo: false });
    const result = runScript(system.path, true);
    expect({ status: result.status, apt: system.aptCalls() }).toEqual({ status: 1, apt: [] });
    expect(result.stderr).toContain(
      "npm test needs these Debian packages, not installed here: redis-server",
    );
    expect(result.stderr).toContain(
      "sudo apt-get install -y -q --no-install-recommends redis-server",
    );
  });
});

describe("the package list", () => {
  it("is the one .ci/run installs", () => {
    const listed = spawnSync(process.execPath, [script, "--list"], { encoding: "utf8" });
    const ci = readFileSync(new URL("../.ci/run", import.meta.url), "utf8");
    const debs = /^debs=\(([^)]*)\)$/m.exec(ci)?.[1]?.split(/\s+/) ?? [];
    expect(debs.sort()).toEqual(listed.stdout.trim().split("\n").sort());
  });
});
