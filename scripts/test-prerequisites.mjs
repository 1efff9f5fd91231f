#!/usr/bin/env node
/**
 * What the test suites need besides `npm install`, provided before any
 * suite starts (`npm test` runs this first; `.ci/run` too): the Debian
 * packages of the real components the suites use. Missing ones are
 * installed when this process may (root, or sudo without a password);
 * otherwise it stops at once with one message naming them and the command
 * that installs them, instead of letting suites fail one by one.
 *
 * Plain JavaScript on purpose: it runs before `npm ci` on a fresh machine,
 * with whatever Node the system has.
 */
import { spawnSync } from "node:child_process";

/** The packages and what uses them. */
const packages = {
  "redis-server": "the Redis store's suites and benchmarks",
  chromium: "the browser suites and the demo's end-to-end tests",
  "python3-grpcio": "Python gRPC interop",
  "python3-protobuf": "Python gRPC interop",
  "protobuf-compiler": "Python and gRPC-Web stubs generated at test time",
  "protobuf-compiler-grpc": "Python gRPC stubs generated at test time",
  "libprotobuf-dev": "the well-known .proto files protoc includes",
  "docker-compose": "validating the production compose file (docker-compose config)",
  "python3-sklearn": "the demo's Python classifier worker",
  "python3-numpy": "snakepit's stock showcase adapter, run by the worker pool suites",
  "python3-psutil": "snakepit's stock showcase adapter, run by the worker pool suites",
};

const names = Object.keys(packages);

// `--list`: the package names, one per line (for checks of other lists).
if (process.argv.includes("--list")) {
  console.log(names.join("\n"));
  process.exit(0);
}

function installed(name) {
  // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's own format syntax
  const r = spawnSync("dpkg-query", ["-W", "-f=${Status}", name], { encoding: "utf8" });
  return r.status === 0 && r.stdout.trim() === "install ok installed";
}

function run(command, args) {
  const r = spawnSync(command, args, {
    stdio: "inherit",
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
  });
  return r.status === 0;
}

if (spawnSync("dpkg-query", ["--version"]).status !== 0) {
  console.error(
    `test prerequisites: not a Debian-based system; the suites need the equivalents of these Debian packages: ${names.join(", ")}`,
  );
  process.exit(0);
}

const missing = names.filter((name) => !installed(name));
if (missing.length === 0) process.exit(0);

const install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", ...missing];
const root = typeof process.getuid === "function" && process.getuid() === 0;
const sudo = !root && spawnSync("sudo", ["-n", "true"], { stdio: "ignore" }).status === 0;
if (root || sudo) {
  console.error(`test prerequisites: installing ${missing.join(" ")}`);
  const as = root ? (args) => ["apt-get", args] : (args) => ["sudo", ["apt-get", ...args]];
  // An old package index is refreshed first; a failed refresh (offline
  // mirror) still lets the install try with what it has.
  run(...as(["update", "-q"]));
  const [command, args] = as(install.slice(1));
  if (run(command, args) && missing.every(installed)) process.exit(0);
  console.error("test prerequisites: the installation failed (see above)");
  process.exit(1);
}

console.error(
  [
    `npm test needs these Debian packages, not installed here: ${missing.join(" ")}`,
    ...missing.map((name) => `  ${name}: ${packages[name]}`),
    "Install them, then run npm test again:",
    `  sudo ${install.join(" ")}`,
  ].join("\n"),
);
process.exit(1);
