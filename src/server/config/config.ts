/**
 * Server configuration from command-line flags and `UB_*` environment
 * variables (a flag wins over its variable), validated up front so a bad value
 * stops the server at startup with a message naming the flag, the variable and
 * what is accepted. The options themselves are the table in
 * `config-options.ts`; this file reads argv (with `node:util` `parseArgs`)
 * and the environment against it, and writes `--help` from it.
 */
import { closeSync, openSync, readSync } from "node:fs";
import { parseArgs } from "node:util";
import { resolveAccessSettings } from "../access/access-options.js";
import {
  defaultServerConfig,
  optionEntries,
  type ServerConfig,
  type ServerOption,
  serverOptions,
} from "./config-options.js";

export type { RedisStoreConfig, ServerConfig } from "./config-options.js";
export { defaultServerConfig } from "./config-options.js";

type Key = keyof ServerConfig;
type Option = ServerOption<unknown>;

const byFlag = new Map<string, [Key, Option]>(optionEntries.map(([k, o]) => [o.flag, [k, o]]));

// What parseArgs needs to split argv: each flag's kind. Values are checked
// here, not by parseArgs, so that every refusal names the flag and says
// what is accepted.
const argvOptions = Object.fromEntries([
  ...optionEntries.map(([, o]) => [o.flag, { type: o.boolean ? "boolean" : "string" } as const]),
  ["help", { type: "boolean", short: "h" } as const],
]);

/** Thrown for any invalid flag, variable or combination; `message` says what to change. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/**
 * Build the configuration from `argv` (the arguments after `serve`) and
 * `env`; a flag wins over its environment variable, which wins over the
 * default. Returns `{ help }` for `--help`/`-h`. Empty environment variables
 * count as unset, as `docker compose` passes `${VAR:-}` through.
 *
 * @throws ConfigError naming the flag or variable and the accepted values.
 *
 * @example
 * ```ts
 * const config = parseServerConfig(process.argv.slice(3), process.env);
 * if ("help" in config) console.log(config.help);
 * ```
 */
export function parseServerConfig(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
): ServerConfig | { help: string } {
  const fromFlags = flagValues(argv);
  if (fromFlags === "help") return { help: serverHelp() };

  const config: Record<string, unknown> = { ...defaultServerConfig };
  /** Where each setting came from, as messages name it. */
  const sources = new Map<Key, string>();
  for (const [key, option] of optionEntries) {
    const flagged = fromFlags.get(key);
    const envValue = env[option.env];
    if (flagged !== undefined) {
      const parsed = flagged.map((v) => parseOne(option, v, `--${option.flag}`));
      config[key] = option.repeatable ? parsed.flat() : parsed[0];
      sources.set(key, `--${option.flag}`);
    } else if (envValue !== undefined && envValue.trim() !== "") {
      config[key] = parseOne(option, envValue, option.env);
      sources.set(key, option.env);
    }
  }
  const result = config as ServerConfig;
  checkCombination(result);
  if (result.workerTokenFile !== "") {
    const source = sources.get("workerTokenFile") ?? settingName("workerTokenFile");
    config.workerToken = parseOne(
      serverOptions.workerToken,
      readTokenFile(result.workerTokenFile, source),
      source,
    );
  }
  try {
    resolveAccessSettings(result, (key) => sources.get(key) ?? settingName(key));
  } catch (e) {
    throw new ConfigError((e as Error).message, { cause: e });
  }
  return result;
}

// A token is tens of bytes: reading more (a wrong path such as /dev/zero
// or a log file) would only hold memory for a refusal.
const maxTokenFileBytes = 4096;

/** The content of a token file, at most {@link maxTokenFileBytes}, trailing newline trimmed. */
function readTokenFile(file: string, source: string): string {
  const made = `write one with openssl rand -base64 32 > ${file}`;
  let text: string;
  try {
    const fd = openSync(file, "r");
    try {
      const buffer = Buffer.alloc(maxTokenFileBytes + 1);
      const length = readSync(fd, buffer, 0, buffer.length, null);
      if (length > maxTokenFileBytes) {
        throw new ConfigError(
          `${source}: ${file} is over ${maxTokenFileBytes} bytes; it must hold the token only`,
        );
      }
      text = buffer.toString("utf8", 0, length);
    } finally {
      closeSync(fd);
    }
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    const reason = (e as NodeJS.ErrnoException).code ?? String(e);
    throw new ConfigError(`${source}: cannot read ${file} (${reason}); ${made}`, { cause: e });
  }
  const token = text.replace(/\r?\n$/, "");
  if (token.trim() === "") throw new ConfigError(`${source}: ${file} is empty; ${made}`);
  return token;
}

/** The raw values of each flag given, in order; "help" once `--help` or `-h` comes. */
function flagValues(argv: readonly string[]): Map<Key, string[]> | "help" {
  const { tokens } = parseArgs({
    args: [...argv],
    options: argvOptions,
    strict: false,
    allowPositionals: true,
    allowNegative: true,
    tokens: true,
  });
  const values = new Map<Key, string[]>();
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i] as (typeof tokens)[number];
    if (token.kind !== "option") {
      const arg = token.kind === "positional" ? token.value : "--";
      throw new ConfigError(`unexpected argument "${arg}"; options start with -- (see --help)`);
    }
    if (token.name === "help") return "help";
    if (!token.rawName.startsWith("--")) {
      throw new ConfigError(
        `unexpected argument "${argv[token.index]}"; options start with -- (see --help)`,
      );
    }
    const negated = token.rawName !== `--${token.name}`;
    const found = byFlag.get(token.name);
    if (found === undefined || (negated && (!found[1].boolean || token.value !== undefined))) {
      throw new ConfigError(`unknown option ${token.rawName} (see --help)`);
    }
    const [key, option] = found;
    let value = token.value;
    if (negated) {
      value = "false";
    } else if (value === undefined && option.boolean) {
      // A bare boolean flag means true; only a following literal boolean is its value.
      const next = tokens[i + 1];
      if (next?.kind === "positional" && /^(true|false)$/i.test(next.value)) {
        value = next.value;
        i++;
      } else {
        value = "true";
      }
    } else if (value === undefined || (!token.inlineValue && value.startsWith("--"))) {
      throw new ConfigError(`--${option.flag} needs a value ${option.placeholder} (see --help)`);
    }
    const list = values.get(key) ?? [];
    if (list.length > 0 && !option.repeatable) {
      throw new ConfigError(`--${option.flag} is given more than once`);
    }
    list.push(value);
    values.set(key, list);
  }
  return values;
}

function parseOne(option: Option, raw: string, source: string): unknown {
  try {
    return option.parse(raw);
  } catch (e) {
    const reason = e instanceof Error ? e.message : String(e);
    throw new ConfigError(`${source}: ${reason}`, { cause: e });
  }
}

/** `--port / UB_PORT`: how messages name a setting. */
function settingName(key: Key): string {
  return `--${serverOptions[key].flag} / ${serverOptions[key].env}`;
}

/** Settings valid alone but not together. */
function checkCombination(config: ServerConfig): void {
  const ports = (["port", "workerPort", "adminPort"] as const).map(
    (key) => [settingName(key), config[key]] as const,
  );
  for (let i = 0; i < ports.length; i++) {
    for (let j = i + 1; j < ports.length; j++) {
      const [a, pa] = ports[i] as (typeof ports)[number];
      const [b, pb] = ports[j] as (typeof ports)[number];
      if (pa !== null && pa !== 0 && pa === pb) {
        throw new ConfigError(`${a} and ${b} are both ${pa}; each listener needs its own port`);
      }
    }
  }
  if (config.workerToken !== "" && config.workerTokenFile !== "") {
    throw new ConfigError(
      `${settingName("workerToken")} and ${settingName("workerTokenFile")} are both set; give the worker token by one of them only (the file or the variable keeps it out of ps)`,
    );
  }
  if (config.maxRequestBytes < config.maxValueBytes) {
    throw new ConfigError(
      `max request size (${config.maxRequestBytes} bytes, ${settingName("maxRequestBytes")}) is below the max value size (${config.maxValueBytes} bytes, ${settingName("maxValueBytes")}): values that large could never be sent; raise the former or lower the latter`,
    );
  }
}

/** The `serve --help` text: every option with its environment variable and default. */
export function serverHelp(): string {
  const lines = [
    "Usage: unified-bridge serve [options]",
    "",
    "Serves sessions, variables and tools over gRPC (HTTP/2 cleartext), gRPC-Web and",
    "Connect on the public port (anonymous callers, bounded), the same RPCs on the",
    "worker listener (trusted workers: RegisterTools), and GET /healthz and",
    "GET /metrics (Prometheus) on the admin listener.",
    "Every option can also be set by its environment variable; a flag wins.",
    "",
    "Options:",
  ];
  for (const [, o] of optionEntries) {
    lines.push(`  --${o.flag} ${o.placeholder}`);
    for (const line of wrap(o.help, 74)) lines.push(`      ${line}`);
    lines.push(`      env ${o.env}, default ${formatDefault(o.default)}`);
  }
  lines.push("  -h, --help");
  lines.push("      Show this help.");
  return lines.join("\n");
}

function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line !== "" && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line === "" ? word : `${line} ${word}`;
    }
  }
  if (line !== "") lines.push(line);
  return lines;
}

const MiB = 1024 * 1024;

/** How `--help` shows a default: lists joined, sizes with their unit. */
export function formatDefault(value: unknown): string {
  if (Array.isArray(value)) return value.length === 0 ? "none" : value.join(",");
  if (value === null) return "off";
  if (value === "") return "none";
  if (typeof value === "string") return value;
  if (typeof value === "number" && value >= MiB && value % MiB === 0) {
    return `${value} (${value / MiB} MiB)`;
  }
  return String(value);
}
