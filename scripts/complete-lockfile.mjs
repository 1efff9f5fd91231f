// Completes package-lock.json with the platform-specific optional packages
// (biome's and buf's binaries for other operating systems) that the npm
// registry mirror of our build machines does not serve. `npm install` cannot
// fetch their manifests, so it leaves them out of the lock file, and then
// `npm ci` refuses the lock file as out of sync. The added entries are never
// installed on a machine whose platform does not match (npm skips optional
// packages for other platforms without fetching them). Run after changing
// dependencies: `npm run lock:complete`.
import { readFileSync, writeFileSync } from "node:fs";

const path = new URL("../package-lock.json", import.meta.url);
const lock = JSON.parse(readFileSync(path, "utf8"));
const OS = ["android", "darwin", "freebsd", "linux", "netbsd", "openbsd", "sunos", "win32", "aix"];
const CPU = {
  arm64: "arm64",
  x64: "x64",
  armv7: "arm",
  arm: "arm",
  ia32: "ia32",
  ppc64: "ppc64",
  s390x: "s390x",
};

let added = 0;
for (const [key, entry] of Object.entries(lock.packages)) {
  for (const [name, range] of Object.entries(entry.optionalDependencies ?? {})) {
    const at = `node_modules/${name}`;
    if (lock.packages[at] !== undefined || !/^\d+\.\d+\.\d+$/.test(range)) continue;
    const tokens = name.split("/").pop().split("-");
    const os = tokens.find((t) => OS.includes(t));
    const cpu = tokens.map((t) => CPU[t]).find(Boolean);
    if (os === undefined || cpu === undefined) continue;
    lock.packages[at] = {
      version: range,
      cpu: [cpu],
      ...(entry.dev ? { dev: true } : {}),
      ...(tokens.includes("musl") ? { libc: ["musl"] } : {}),
      optional: true,
      os: [os],
    };
    added++;
    void key;
  }
}
lock.packages = Object.fromEntries(
  Object.entries(lock.packages).sort(([a], [b]) => (a === "" ? -1 : b === "" ? 1 : a < b ? -1 : 1)),
);
writeFileSync(path, `${JSON.stringify(lock, null, 2)}\n`);
console.log(`package-lock.json: ${added} platform entries added`);
