/**
 * `unified-bridge serve`, reusable: the command's whole life (options,
 * store, listeners, ready line, signals, exit codes) for the CLI and for
 * programs that serve the same way with tools of their own.
 *
 * Prints one line to stdout once the port is bound (scripts and humans wait
 * for it), stops gracefully on SIGTERM/SIGINT and exits 1 with a one-line
 * reason on stderr when it cannot start: a port taken, or a Redis store
 * unreachable within --store-connect-timeout-ms.
 */
import { pino } from "pino";
import { type BridgeAddresses, createBridgeServer } from "./bridge-server.js";
import { parseServerConfig, type ServerConfig } from "./config/config.js";
import { createLogger, type LogSink } from "./observability/logger.js";
import { parseRedisUrl } from "./store/redis-url.js";
import { type HealthReportingStore, openRedisStore } from "./store/store-loader.js";
import type { ToolDefinition } from "./tools/tool-definition.js";

/** What a program serving with {@link runServe} adds to the plain command. */
export interface ServeOptions {
  /** Global tools registered besides the built-in ones. */
  readonly tools?: readonly ToolDefinition[];
  /**
   * Called once the listeners are bound, before the ready line: tools that
   * call the bridge itself learn its address here.
   */
  readonly onListening?: (addresses: BridgeAddresses) => void;
}

// Log lines and the ready line share one buffered writer to stdout, so they
// keep their order and the event loop never waits for a slow log reader;
// every exit below writes out what is buffered first.
const stdout = pino.destination({ dest: 1, sync: false });
// Until the listeners are bound, lines are written at once instead: a
// start-up failure's reason (on stderr) is then the last line a person
// sees, never overtaken by a log line still on its way.
const startupStdout = pino.destination({ dest: 1, sync: true });
for (const stream of [stdout, startupStdout]) {
  stream.on("error", (error: NodeJS.ErrnoException) => {
    // Whoever read stdout went away: the bridge keeps serving without logs.
    if (error.code !== "EPIPE") throw error;
  });
}

/**
 * Runs `serve` with `argv` (the options after the command) and `env`;
 * resolves once it serves (or printed its help). Exits the process itself
 * on a bad option, a failed start, and after SIGTERM/SIGINT.
 */
export async function runServe(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
  options: ServeOptions = {},
): Promise<void> {
  let config: ReturnType<typeof parseServerConfig>;
  try {
    config = parseServerConfig(argv, env);
  } catch (e) {
    fail(e instanceof Error ? e.message : String(e));
  }
  if ("help" in config) {
    console.log(config.help);
    return;
  }

  let sink: LogSink = startupStdout;
  const terminal = process.stdout.isTTY === true;
  const logger = createLogger({
    level: config.logLevel,
    sink: { write: (line) => sink.write(line) },
    format: config.logFormat === "auto" ? (terminal ? "pretty" : "json") : config.logFormat,
    // https://no-color.org: any value turns colour off.
    colorize: terminal && (env.NO_COLOR ?? "") === "",
  });
  // The Redis store is opened before the server exists, so that an
  // unreachable Redis stops startup with one line instead of a server that
  // fails every call.
  let redisStore: HealthReportingStore | undefined;
  if (config.store !== "memory") {
    try {
      redisStore = await openRedisStore({
        url: config.store.url,
        keyPrefix: config.storeKeyPrefix,
        connectTimeoutMs: config.storeConnectTimeoutMs,
        durability: config.storeDurability,
        logger: logger.child({ component: "store" }),
      });
    } catch (e) {
      fail(e instanceof Error ? e.message : String(e));
    }
  }
  const storeLabel =
    config.store === "memory"
      ? "memory"
      : `${parseRedisUrl(config.store.url).redacted} (key prefix ${config.storeKeyPrefix})`;
  const server = createBridgeServer({
    ...config,
    logger,
    ...(redisStore === undefined ? {} : { sessionStore: redisStore }),
    ...(options.tools === undefined ? {} : { tools: options.tools }),
  });

  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      // A second Ctrl-C means "now": skip the grace period.
      exit(1);
    }
    logger.info("stopping", { signal, graceMs: config.shutdownGraceMs });
    // The server does not close a store it was given: the store goes last,
    // once no call can use it any more.
    server
      .stop()
      .then(() => redisStore?.close())
      .then(
        () => exitAfterLogs(0),
        (error: unknown) => {
          logger.error("stop failed", { error });
          exitAfterLogs(1);
        },
      );
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);

  let addresses: Awaited<ReturnType<typeof server.start>>;
  try {
    addresses = await server.start();
  } catch (e) {
    // Exiting drops the store's connection too; nothing was written yet.
    fail(startupMessage(e, config));
  }
  sink = stdout;
  options.onListening?.(addresses);
  const { url, workerUrl, adminUrl } = addresses;
  stdout.write(
    `unified-bridge listening on ${url} (gRPC h2c, gRPC-Web, Connect); store: ${storeLabel}; access: ${config.access}; workers: ${workerUrl ?? "off"}; admin: ${adminUrl ?? "off"}\n`,
  );
}

/** Exits once every buffered line is written (the orderly way out). */
function exitAfterLogs(code: number): void {
  stdout.once("close", () => process.exit(code));
  // A reader that stopped reading must not keep the process alive. Node's
  // own timer: the server is gone by now, and so are its injected timers.
  setTimeout(() => exit(code), 2000);
  stdout.end();
}

/** Exits now, writing what is buffered synchronously first. */
export function exit(code: number): never {
  try {
    stdout.flushSync();
  } catch {
    // Nothing buffered can be written (stdout closed): exit all the same.
  }
  process.exit(code);
}

/** The listeners' settings, as `startupMessage` names them. */
type ListenerSettings = Pick<
  ServerConfig,
  "host" | "port" | "workerHost" | "workerPort" | "adminHost" | "adminPort"
>;

function startupMessage(e: unknown, config: ListenerSettings): string {
  const err = e as { code?: unknown; address?: unknown; port?: unknown } | null;
  const where = `${String(err?.address ?? "?")}:${String(err?.port ?? "?")}`;
  const code = err?.code;
  // Which setting chose the port that failed: the public, worker or admin
  // listener's (a port given to two of them names both).
  const listeners = [
    { port: config.port, host: config.host, flag: "port", hostFlag: "host" },
    {
      port: config.workerPort,
      host: config.workerHost,
      flag: "worker-port",
      hostFlag: "worker-host",
    },
    { port: config.adminPort, host: config.adminHost, flag: "admin-port", hostFlag: "admin-host" },
  ].filter((l) => l.port !== null && l.port === err?.port);
  const named = (flags: string[]) =>
    flags.length === 0
      ? undefined
      : flags.map((f) => `--${f} (UB_${f.toUpperCase().replace(/-/g, "_")})`).join(" or ");
  if (code === "EADDRINUSE") {
    const which =
      named(listeners.map((l) => l.flag)) ??
      "--port, --worker-port or --admin-port (UB_PORT, UB_WORKER_PORT, UB_ADMIN_PORT)";
    return `cannot listen on ${where}: the port is already in use (another bridge running?); choose another with ${which}`;
  }
  if (code === "EADDRNOTAVAIL") {
    const which =
      named(listeners.map((l) => l.hostFlag)) ?? "--host, --worker-host or --admin-host";
    return `cannot listen on ${where}: no such local address; check ${which}`;
  }
  if (code === "EACCES") {
    return `cannot listen on ${where}: permission denied; use a port above 1023`;
  }
  return `cannot start: ${e instanceof Error ? e.message : String(e)}`;
}

/** Prints `unified-bridge: <message>` to stderr and exits 1. */
export function fail(message: string): never {
  console.error(`unified-bridge: ${message}`);
  exit(1);
}
