#!/usr/bin/env node
/**
 * The `unified-bridge` command (also installed as `unified-session-bridge`, the package's name): `unified-bridge serve [options]`.
 *
 * Prints one line to stdout once the port is bound (scripts and humans wait
 * for it), stops gracefully on SIGTERM/SIGINT and exits 1 with a one-line
 * reason on stderr when it cannot start: a port taken, or a Redis store
 * unreachable within --store-connect-timeout-ms. The serve command itself
 * lives in serve-command.ts.
 */
import { readFileSync } from "node:fs";
import { fail, runServe } from "./serve-command.js";

const usage = `Usage: unified-bridge <command> [options]

Commands:
  serve [options]   Run the bridge server (unified-bridge serve --help lists the options)

Options:
  -h, --help        Show this help
  -v, --version     Print the version`;

async function main(argv: readonly string[]): Promise<void> {
  const [command, ...rest] = argv;
  if (command === undefined || command === "--help" || command === "-h" || command === "help") {
    console.log(usage);
    return;
  }
  if (command === "--version" || command === "-v") {
    console.log(version());
    return;
  }
  if (command !== "serve") {
    fail(`unknown command "${command}"\n\n${usage}`);
  }

  await runServe(rest, process.env);
}

function version(): string {
  // Two levels up from both src/server/cli.ts and dist/server/cli.js.
  const pkg: unknown = JSON.parse(
    readFileSync(new URL("../../package.json", import.meta.url), "utf8"),
  );
  return String((pkg as { version?: unknown }).version);
}

await main(process.argv.slice(2));
