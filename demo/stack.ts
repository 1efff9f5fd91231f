import { randomBytes } from "node:crypto";
import { createServer as createNetServer } from "node:net";
import { join } from "node:path";
import { createLogger, createServer, type ViteDevServer } from "vite";
import { type PythonWorker, preparePythonWorker } from "./python-worker.ts";
import type { DemoBridge } from "./server/demo-bridge.ts";

/**
 * The demo stack in one process: the bridge server (in-memory store, the
 * spam program's tools) and the Vite dev server for the page, whose proxy
 * forwards the bridge's RPC paths to the bridge (no Envoy in development).
 *
 * How the server code runs: src/ is TypeScript with `.js` import
 * specifiers, which Node's type stripping cannot follow. Instead of
 * requiring a `tsc` build first (and risking a stale dist/), the stack loads
 * the bridge through the dev server's own module runner (`ssrLoadModule`),
 * which resolves `.js` to `.ts` exactly as it does for the page. One source
 * of truth, nothing to build, and the same code path for `npm start` and
 * the e2e test. This file itself only imports `.ts` paths and uses
 * erasable syntax, so Node 24 runs it directly.
 */

/** Options of {@link startStack}. */
export interface StackOptions {
  /** The bridge's port; 0 picks a free one (default 50051). */
  readonly bridgePort?: number;
  /** The page's port; 0 picks a free one (default 5173). */
  readonly vitePort?: number;
  /** Interface both listen on (default 127.0.0.1). */
  readonly host?: string;
  /** Bridge log level (JSON lines on stdout; default "warn"). */
  readonly logLevel?: "debug" | "info" | "warn" | "error";
  /** Vite's own log level (default "warn"). */
  readonly viteLogLevel?: "info" | "warn" | "error" | "silent";
  /** The bridge's worker listener port; 0 picks a free one (default 50052). */
  readonly workerPort?: number;
  /**
   * Run the Python worker (its scikit-learn module) in the bridge's worker
   * pool: "auto" (default) when python3, grpcio, scikit-learn and protoc are
   * installed, false never.
   */
  readonly python?: "auto" | false;
  /**
   * Who may use a session (default "tokens"): "tokens", where the page
   * holds its session's owner token and a view-only link opens the session
   * for watching only; "session-id", where the session id opens it with
   * every right (a view-only link is then not offered: the id it carries
   * would open everything).
   */
  readonly access?: "tokens" | "session-id";
  /**
   * Watch the page's files and reload it when they change (default true);
   * tests turn it off, so an edit during a run cannot reload their pages.
   */
  readonly watch?: boolean;
}

/** A running stack. */
export interface Stack {
  /** The page. */
  readonly url: string;
  /** The bridge, for gRPC / gRPC-Web / Connect clients (e.g. Python workers). */
  readonly bridgeUrl: string;
  /** The bridge's worker listener (host:port), where workers register tools. */
  readonly workerTarget: string;
  /** The Python worker: running, or why not. */
  readonly python: PythonWorker;
  /** The pid of the Python worker serving now, if one is ready. */
  pythonPid(): number | undefined;
  /** Whether the bridge listens right now (false after {@link Stack.stopBridge}). */
  readonly bridgeListening: boolean;
  /**
   * Stops the bridge server, an outage to try the page against: its calls
   * fail (the page's proxy answers 502), watch streams end. The sessions
   * stay in the stack's in-memory store. The page server keeps running.
   */
  stopBridge(): Promise<void>;
  /**
   * Starts a new bridge server on the same ports with the same store: the
   * sessions come back as they were, and the new server starts its Python
   * worker (when there is one).
   */
  startBridge(): Promise<void>;
  /** Stops the page server, then the bridge. */
  stop(): Promise<void>;
}

/** The RPC path prefix the dev server forwards to the bridge. */
export const BRIDGE_PATH = "/snakepit.bridge.BridgeService";

/** Starts the bridge and the dev server; rejects (with both stopped) if either cannot start. */
export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const host = options.host ?? "127.0.0.1";
  const bridgePort =
    options.bridgePort === 0 ? await freePort(host) : (options.bridgePort ?? 50051);
  const vitePort = options.vitePort === 0 ? await freePort(host) : (options.vitePort ?? 5173);
  const workerPort =
    options.workerPort === 0 ? await freePort(host) : (options.workerPort ?? 50052);
  const target = `http://${host.includes(":") ? `[${host}]` : host}:${bridgePort}`;

  const prepared: PythonWorker =
    options.python === false
      ? { running: false, reason: "not asked for" }
      : await preparePythonWorker();
  let bridge: DemoBridge | undefined;
  // While the bridge is stopped on purpose (stopBridge), every call the
  // page makes fails in the proxy with ECONNREFUSED and is answered 502, as
  // it should; Vite would also print a stack trace for each one.
  const logger = createLogger(options.viteLogLevel ?? "warn");
  const logError = logger.error;
  logger.error = (message, errorOptions) => {
    if (bridge?.listening === false && message.includes("http proxy error")) return;
    logError(message, errorOptions);
  };
  const vite: ViteDevServer = await createServer({
    configFile: join(import.meta.dirname, "vite.config.ts"),
    root: import.meta.dirname,
    logLevel: options.viteLogLevel ?? "warn",
    customLogger: logger,
    server: {
      host,
      port: vitePort,
      strictPort: true,
      ...(options.watch === false ? { hmr: false, watch: null } : {}),
      proxy: {
        // Unary and streaming calls alike: the proxy streams responses, so
        // watch streams and tool progress arrive as they are produced.
        [BRIDGE_PATH]: { target, changeOrigin: false, xfwd: true },
      },
    },
  });

  try {
    const module = (await vite.ssrLoadModule(
      "/server/demo-bridge.ts",
    )) as typeof import("./server/demo-bridge.ts");
    bridge = await module.startDemoBridge({
      host,
      port: bridgePort,
      workerPort,
      access: options.access ?? "tokens",
      // One key for the stack's life: tokens stay valid when the bridge is
      // stopped and started again (an outage), never beyond the process.
      tokenKeys: [randomBytes(32).toString("base64")],
      // Browsers reach the bridge through the proxy (same origin); this
      // also lets a page served elsewhere call it directly.
      corsOrigins: [`http://${host}:${vitePort}`, `http://localhost:${vitePort}`],
      logLevel: options.logLevel ?? "warn",
      ...(prepared.running ? { workers: prepared.pool } : {}),
    });
    await vite.listen();
  } catch (error) {
    await bridge?.stop().catch(() => undefined);
    await vite.close().catch(() => undefined);
    if (prepared.running) await prepared.cleanup();
    throw error;
  }
  const running = bridge;
  const python = prepared.running ? await pythonReady(running, prepared) : prepared;
  const url = vite.resolvedUrls?.local[0] ?? `http://${host}:${vitePort}/`;
  let stopping: Promise<void> | undefined;
  return {
    url,
    bridgeUrl: running.url,
    workerTarget: running.workerTarget,
    python,
    get bridgeListening() {
      return running.listening;
    },
    pythonPid: () => running.pythonWorkers().find((w) => w.state === "ready")?.pid ?? undefined,
    stopBridge: () => running.stopServer(),
    async startBridge() {
      if (running.listening) return;
      await running.startServer();
    },
    stop() {
      stopping ??= (async () => {
        await vite.close();
        // Stops the Python worker too.
        await running.stop();
        if (prepared.running) await prepared.cleanup();
      })();
      return stopping;
    },
  };
}

/**
 * Waits (up to 30 s) for the bridge's Python worker to serve, so the page
 * offers its module from the first look; says why when it does not.
 */
async function pythonReady(
  bridge: DemoBridge,
  prepared: Extract<PythonWorker, { running: true }>,
): Promise<PythonWorker> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const [worker] = bridge.pythonWorkers();
    if (worker?.state === "ready") return prepared;
    if (worker?.state === "failed" || Date.now() > deadline) {
      return {
        running: false,
        reason: `the worker did not start (${worker?.lastError ?? "no answer within 30 s"})`,
      };
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** A port that was free a moment ago (the OS picks it). */
function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createNetServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, host, () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}
