import { readdirSync, readFileSync } from "node:fs";
import { describe, expect, expectTypeOf, it } from "vitest";
import {
  type ConnectionLimits,
  defaultConnectionLimits,
  defaultCorsAllowHeaders,
} from "../edge/http-front-defaults.js";
import { defaultLimits, type Limits, limitsFrom } from "../limits/limits.js";
import {
  defaultServerConfig,
  type OptionKeys,
  optionEntries,
  pickGroup,
  serverOptions,
} from "./config-options.js";

// README and the documentation beside it, read as one text.
const readme = [
  "README.md",
  ...readdirSync(new URL("../../../docs/", import.meta.url))
    .filter((f) => f.endsWith(".md"))
    .map((f) => `docs/${f}`),
]
  .map((f) => readFileSync(new URL(`../../../${f}`, import.meta.url), "utf8"))
  .join("\n\n");

/** README's way of writing a default: "10,000", "1 MiB", "1,800 s", "120,000 ms". */
function readmeNumber(text: string): number {
  const m = /^([\d,]+)\s*(KiB|MiB|s|ms)?$/.exec(text.trim());
  if (m === null) throw new Error(`"${text}" is not a README default`);
  const unit = m[2] === "KiB" ? 1024 : m[2] === "MiB" ? 1024 * 1024 : 1;
  return Number((m[1] as string).replace(/,/g, "")) * unit;
}

describe("the option table", () => {
  it("gives each option its own flag and environment variable", () => {
    const flags = optionEntries.map(([, o]) => o.flag);
    const envs = optionEntries.map(([, o]) => o.env);
    expect(new Set(flags).size).toBe(flags.length);
    expect(new Set(envs).size).toBe(envs.length);
    for (const [, o] of optionEntries) {
      expect(o.flag).toMatch(/^[a-z][a-z0-9]*(-[a-z0-9]+)*$/);
      expect(o.env).toMatch(/^UB_[A-Z0-9_]+$/);
    }
    // The two list options whose variables are plural.
    expect(serverOptions.corsOrigins.env).toBe("UB_CORS_ORIGINS");
    expect(serverOptions.trustedProxies.env).toBe("UB_TRUSTED_PROXIES");
  });

  it("accepts its own defaults, as shown in --help", () => {
    for (const [key, o] of optionEntries) {
      if (o.secret || o.default === "" || o.default === null) continue;
      const shown = Array.isArray(o.default) ? o.default.join(",") : String(o.default);
      if (shown === "") continue;
      const parsed = o.parse(shown);
      expect(parsed, key).toEqual(o.default);
    }
  });

  it("offers every server limit and connection limit, with its default", () => {
    // The groups name exactly the fields of the settings they feed (the
    // name length, fixed, is no option); typecheck fails otherwise.
    expectTypeOf<OptionKeys<"limits">>().toEqualTypeOf<Exclude<keyof Limits, "maxNameLength">>();
    expectTypeOf<OptionKeys<"connection">>().toEqualTypeOf<keyof ConnectionLimits>();
    expect(defaultLimits).toEqual({
      ...pickGroup(defaultServerConfig, "limits"),
      maxNameLength: 128,
    });
    expect(defaultConnectionLimits).toEqual(pickGroup(defaultServerConfig, "connection"));
    expect(defaultCorsAllowHeaders).toEqual(defaultServerConfig.corsAllowHeaders);
    expect(Object.keys(defaultConnectionLimits).sort()).toEqual(
      [
        "headersTimeoutMs",
        "idleTimeoutMs",
        "maxConnections",
        "maxConnectionsPerClient",
        "maxStreamsPerConnection",
        "requestTimeoutMs",
        "writeStallTimeoutMs",
      ].sort(),
    );
    const config = { ...defaultServerConfig, maxSessions: 3, maxWatchers: 9 };
    expect(limitsFrom(config)).toEqual({ ...defaultLimits, maxSessions: 3, maxWatchers: 9 });
  });
});

describe("README", () => {
  const byFlag = new Map(optionEntries.map(([key, o]) => [o.flag, { key, ...o }]));

  it("names only flags and variables that exist", () => {
    const prose = readme.replace(/```[\s\S]*?```/g, "");
    // Flags of other programs: npm run bench, and snakepit's Python workers.
    const others = new Set([
      "help",
      "quick",
      "list",
      "strict",
      "elixir-address",
      "adapter",
      "port-file",
    ]);
    for (const [, flag] of prose.matchAll(/`--([a-z][a-z0-9-]*)/g)) {
      if (!others.has(flag as string)) expect(byFlag.has(flag as string), `--${flag}`).toBe(true);
    }
    for (const [, flag, env] of prose.matchAll(/`--([a-z-]+)` \(`(UB_[A-Z_]+)`/g)) {
      expect(byFlag.get(flag as string)?.env).toBe(env);
    }
  });

  it("states the defaults of the limits table and the listeners as they are", () => {
    const table = readme.slice(readme.indexOf("| limit | flag | default |"));
    const rows = table.slice(0, table.indexOf("\n\n")).split("\n").slice(2);
    let checked = 0;
    for (const row of rows) {
      const [, flagCell, defaultCell] = row.split(" | ");
      const flags = [...(flagCell ?? "").matchAll(/`--([a-z0-9-]+)`/g)].map((m) => m[1] as string);
      if (flags.length === 0) continue; // a fixed limit
      const defaults = (defaultCell ?? "").replace(/ \|$/, "").split(" / ");
      expect(defaults, row).toHaveLength(flags.length);
      flags.forEach((flag, i) => {
        const option = byFlag.get(flag);
        expect(option, flag).toBeDefined();
        const cell = defaults[i] as string;
        // A default the server works out at start-up ("auto: …") is named, not a number.
        if (cell.startsWith("auto")) expect(option?.default, `--${flag}`).toBe("auto");
        else expect(readmeNumber(cell), `--${flag}`).toBe(option?.default);
        checked++;
      });
    }
    expect(checked).toBeGreaterThanOrEqual(20);
    for (const [, host, port, address, number] of readme.matchAll(
      /\(`--([a-z-]+)`, `--([a-z-]+)`\) \| ([\d.]+):(\d+) \|/g,
    )) {
      expect(byFlag.get(host as string)?.default).toBe(address);
      expect(byFlag.get(port as string)?.default).toBe(Number(number));
    }
  });
});
