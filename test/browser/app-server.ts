import { readFile } from "node:fs/promises";
import { createServer, request as httpRequest } from "node:http";
import type { AddressInfo } from "node:net";
import { build } from "esbuild";

/** The path prefix of every BridgeService call. */
const RPC_PREFIX = "/snakepit.bridge.BridgeService/";

/**
 * The test page's origin: serves index.html and the bundled app, and
 * forwards RPCs to the bridge, like the demo's dev server does. Going
 * through it keeps the page same-origin (no CORS preflights in the counts)
 * and gives the test one place to count calls per tab and hold one back.
 */
export interface AppServer {
  readonly origin: string;
  /** Calls that reached the proxy from `tab` (the page's x-ub-tab header), by method. */
  calls(tab: string): Record<string, number>;
  reset(): void;
  /**
   * Holds every call of `method` until the returned function is called:
   * before it reaches the bridge ("request", the default) or after the
   * bridge answered it ("response": the write is applied and pushed to
   * watchers, but the caller does not know yet).
   */
  hold(method: string, stage?: "request" | "response"): () => void;
  /**
   * Forwards calls to another bridge from now on (one started again after
   * a stop, on another port); calls already forwarded stay where they went.
   */
  retarget(bridgeUrl: string): void;
  /**
   * The next call of `method` reaches the bridge, which applies it, and its
   * reply is lost: the page's connection is destroyed instead (the worst
   * moment for a write). Resolves when that happened.
   */
  loseReply(method: string): Promise<void>;
  close(): Promise<void>;
}

/** Bundles a page's script (test/browser/fixture/app.ts by default) for the browser, as an app would. */
export async function bundleApp(entry = "test/browser/fixture/app.ts"): Promise<string> {
  const result = await build({
    entryPoints: [entry],
    bundle: true,
    platform: "browser",
    format: "esm",
    target: "es2022",
    write: false,
    logLevel: "silent",
  });
  const [file] = result.outputFiles;
  if (file === undefined) throw new Error("esbuild produced no output");
  return file.text;
}

/** Starts the page server on a free port of 127.0.0.1. */
export async function startAppServer(bridgeUrl: string, appJs: string): Promise<AppServer> {
  const html = await readFile(new URL("./fixture/index.html", import.meta.url), "utf8");
  let target = new URL(bridgeUrl);
  const counts = new Map<string, Map<string, number>>();
  const held = new Map<string, { stage: "request" | "response"; until: Promise<void> }>();
  const losing = new Map<string, () => void>();

  const server = createServer(async (req, res) => {
    const path = req.url ?? "/";
    if (path.startsWith(RPC_PREFIX)) {
      const method = path.slice(RPC_PREFIX.length).split("?")[0] ?? "";
      const tab = String(req.headers["x-ub-tab"] ?? "");
      const byMethod = counts.get(tab) ?? new Map<string, number>();
      byMethod.set(method, (byMethod.get(method) ?? 0) + 1);
      counts.set(tab, byMethod);
      const hold = held.get(method);
      if (hold?.stage === "request") await hold.until;

      const { host: _host, ...headers } = req.headers;
      const upstream = httpRequest(
        { host: target.hostname, port: target.port, method: req.method, path, headers },
        async (answer) => {
          if (hold?.stage === "response") await hold.until;
          const lost = losing.get(method);
          if (lost !== undefined) {
            losing.delete(method);
            answer.resume();
            answer.once("end", () => {
              req.socket.destroy();
              lost();
            });
            return;
          }
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
        },
      );
      upstream.on("error", () => res.destroy());
      // A reloaded page aborts its watch stream: end the upstream one too.
      res.on("close", () => upstream.destroy());
      req.pipe(upstream);
      return;
    }
    if (path === "/app.js") {
      res.writeHead(200, { "content-type": "text/javascript; charset=utf-8" }).end(appJs);
    } else if (path === "/" || path.startsWith("/?")) {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(html);
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;

  return {
    origin: `http://127.0.0.1:${port}`,
    calls: (tab) => Object.fromEntries(counts.get(tab) ?? []),
    reset: () => counts.clear(),
    hold(method, stage = "request") {
      let release = () => {};
      const until = new Promise<void>((resolve) => {
        release = resolve;
      });
      held.set(method, { stage, until });
      return () => {
        held.delete(method);
        release();
      };
    },
    retarget(url) {
      target = new URL(url);
    },
    loseReply: (method) =>
      new Promise<void>((resolve) => {
        losing.set(method, resolve);
      }),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
