import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

// The folders of src/server from the assembly down, as docs/development.md
// lists them: a folder imports only from the folders after it here.
const LAYERS = [
  "(top level)",
  "config",
  "rpc",
  "watch",
  "workers",
  "tools",
  "session",
  "edge",
  "limits",
  "access",
  "store",
  "observability",
  "common",
] as const;

/** The imports against that order, each with its reason (docs/development.md says the same). */
const EXCEPTIONS: ReadonlyMap<string, string> = new Map([
  // The context every handler and server-side tool is given: its type only.
  ["session/session-ops.ts -> rpc/bridge-core.ts", "type of the handlers' context"],
  ["session/variable-batch.ts -> rpc/bridge-core.ts", "type of the handlers' context"],
  ["tools/local-runner.ts -> rpc/bridge-core.ts", "type of the handlers' context"],
  ["tools/tool-executor.ts -> rpc/bridge-core.ts", "type of the handlers' context"],
  ["tools/tool-session.ts -> rpc/bridge-core.ts", "type of the handlers' context"],
  ["tools/worker-tools.ts -> rpc/bridge-core.ts", "type of the handlers' context"],
  ["watch/watch-endpoint.ts -> rpc/bridge-core.ts", "type of the handlers' context"],
  // What replicas share of tools and the audit trail: types only.
  ["store/session-store.ts -> tools/shared-tools.ts", "types of shared tools"],
  ["store/redis/feed-delivery.ts -> tools/shared-tools.ts", "types of shared tools"],
  ["store/redis/shared-tools.ts -> tools/shared-tools.ts", "types of shared tools"],
  ["store/redis/shared-audit.ts -> tools/shared-tools.ts", "types of shared tools"],
  ["store/redis/shared-audit.ts -> tools/audit-trail.ts", "type of an audit entry"],
  // A session's tool allowlist is checked with the registry's name rule.
  ["session/session-ops.ts -> tools/tool-registry.ts", "tool name rule"],
  // Token keys are given as lists, parsed as every option's are.
  ["access/token-keys.ts -> config/config-values.ts", "option value parsers"],
]);

const server = fileURLToPath(new URL("../src/server/", import.meta.url));

function modulesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return modulesUnder(path);
    return /(?<!\.test|\.d)\.ts$/.test(entry.name) ? [path] : [];
  });
}

const layerOf = (path: string): string => {
  const first = relative(server, path).split("/");
  return first.length === 1 ? "(top level)" : (first[0] as string);
};

/** Relative imports of `file` inside src/server, type-only and dynamic ones included. */
function importsOf(file: string): string[] {
  const code = readFileSync(file, "utf8");
  const specifiers = [
    ...code.matchAll(/(?<![.\w$])(?:import|export)\s*(?:[\w$*{}\s,]*?\sfrom\s*)?"(\.[^"]+)"/g),
    ...code.matchAll(/(?<![.\w$])import\s*\(\s*"(\.[^"]+)"\s*\)/g),
  ].map((m) => m[1] as string);
  return specifiers
    .map((s) => resolve(dirname(file), s.replace(/\.js$/, ".ts")))
    .filter((target) => !relative(server, target).startsWith(".."));
}

describe("src/server's folders", () => {
  const modules = modulesUnder(server);

  it("each belong to a layer of the documented order", () => {
    const unknown = [...new Set(modules.map(layerOf))].filter(
      (layer) => !(LAYERS as readonly string[]).includes(layer),
    );
    expect(unknown).toEqual([]);
  });

  it("import only from the layers below them, but for the documented exceptions", () => {
    const upward: string[] = [];
    for (const file of modules) {
      for (const target of importsOf(file)) {
        const from = LAYERS.indexOf(layerOf(file) as (typeof LAYERS)[number]);
        const to = LAYERS.indexOf(layerOf(target) as (typeof LAYERS)[number]);
        if (from >= to && from !== to) {
          upward.push(`${relative(server, file)} -> ${relative(server, target)}`);
        }
      }
    }
    expect(upward.filter((edge) => !EXCEPTIONS.has(edge)).sort()).toEqual([]);
    // An exception no longer needed is taken off the list.
    expect([...EXCEPTIONS.keys()].filter((edge) => !upward.includes(edge))).toEqual([]);
  });
});
