/**
 * docker-compose.yml as Compose itself resolves it (`docker-compose config`:
 * validated, variables substituted), and the bridge replicas' command read
 * by the bridge's own option parser.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { parse } from "yaml";
import { parseServerConfig, type ServerConfig } from "../../src/server/config/config.js";
import { cleanEnv } from "../support/cli.js";

const root = fileURLToPath(new URL("../..", import.meta.url));

/** Debian's docker-compose (1.29); `.ci/run` installs it. */
export const dockerCompose = "/usr/bin/docker-compose";

/** What `config` printed and how it exited. */
export function composeConfig(
  args: readonly string[] = [],
  file = "docker-compose.yml",
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      dockerCompose,
      ["-f", file, "config", ...args],
      // No UB_* of the machine running the tests leaks into the substitution.
      { cwd: root, env: cleanEnv(), timeout: 60_000 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === "number" ? error.code : -1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** A service as `docker-compose config` prints it (the parts the tests read). */
export interface ComposeService {
  readonly image?: string;
  readonly build?: { readonly context: string; readonly target?: string };
  readonly command?: readonly string[];
  readonly environment?: Readonly<Record<string, string>>;
  readonly deploy?: { readonly replicas?: number };
  readonly profiles?: readonly string[];
  readonly volumes?: readonly (string | { readonly source?: string; readonly target?: string })[];
  readonly entrypoint?: readonly string[];
  readonly networks?: Readonly<
    Record<string, { readonly ipv4_address?: string; readonly aliases?: readonly string[] } | null>
  >;
  readonly ports?: readonly unknown[];
  readonly init?: boolean;
  readonly stop_grace_period?: string;
}

/** A network as `docker-compose config` prints it. */
export interface ComposeNetwork {
  readonly internal?: boolean;
  readonly ipam?: { readonly config?: readonly { readonly subnet?: string }[] };
}

/** The parts of the resolved file the tests read. */
export interface ComposeFile {
  readonly services: Record<string, ComposeService>;
  readonly networks?: Record<string, ComposeNetwork | null>;
}

let resolved: Promise<ComposeFile> | undefined;

/** The resolved compose file (computed once per test file). */
export function composeFile(): Promise<ComposeFile> {
  resolved ??= composeConfig().then(({ code, stdout, stderr }) => {
    if (code !== 0) throw new Error(`docker-compose config failed (${code}):\n${stderr}`);
    return parse(stdout) as ComposeFile;
  });
  return resolved;
}

/** The services attached to `network`. */
export function onNetwork(file: ComposeFile, network: string): string[] {
  return Object.entries(file.services)
    .filter(([, service]) => service.networks !== undefined && network in service.networks)
    .map(([name]) => name)
    .sort();
}

/**
 * The bridge service's entrypoint as the container runs it: `config`
 * prints `$` escaped as `$$`, which Compose unescapes when it starts it.
 */
export async function bridgeEntrypoint(): Promise<string[]> {
  const entrypoint = (await composeFile()).services.bridge?.entrypoint;
  if (entrypoint === undefined) throw new Error("the bridge service has no entrypoint");
  return entrypoint.map((arg) => arg.replaceAll("$$", "$"));
}

/**
 * What an operator sets besides the compose file: the access token key
 * (`UB_TOKEN_KEY`, which the file leaves to the environment).
 */
export const operatorEnvironment: Readonly<Record<string, string>> = {
  UB_TOKEN_KEY: randomBytes(32).toString("base64"),
};

/**
 * The bridge replicas' configuration, parsed from their command and
 * environment (with {@link operatorEnvironment}) as the CLI does.
 */
export async function replicaConfig(): Promise<ServerConfig> {
  const bridge = (await composeFile()).services.bridge;
  if (bridge?.command?.[0] !== "serve") throw new Error("the bridge service does not run serve");
  const config = parseServerConfig(bridge.command.slice(1), {
    ...bridge.environment,
    ...operatorEnvironment,
  });
  if ("help" in config) throw new Error("the bridge service asks for help");
  return config;
}
