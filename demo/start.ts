/**
 * `npm start`: the bridge server and the demo page in one command.
 *
 *   node demo/start.ts            (Node 24: runs TypeScript by type stripping)
 *
 * Environment: PORT (page, default 5173), BRIDGE_PORT (default 50051),
 * WORKER_PORT (the bridge's worker listener, default 50052),
 * HOST (default 127.0.0.1), LOG_LEVEL (bridge logs: debug|info|warn|error,
 * default warn). Ctrl-C stops both. In a terminal, "b" stops the bridge
 * (an outage to try the page against) and starts it again.
 */
import { emitKeypressEvents } from "node:readline";
import { startStack } from "./stack.ts";

const levels = ["debug", "info", "warn", "error"] as const;
const logLevel = levels.find((l) => l === process.env.LOG_LEVEL) ?? "warn";

function port(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    console.error(`${name} must be a port number (0-65535), got "${raw}"`);
    process.exit(1);
  }
  return n;
}

let stack: Awaited<ReturnType<typeof startStack>>;
try {
  stack = await startStack({
    bridgePort: port("BRIDGE_PORT", 50051),
    vitePort: port("PORT", 5173),
    workerPort: port("WORKER_PORT", 50052),
    host: process.env.HOST ?? "127.0.0.1",
    logLevel,
  });
} catch (error) {
  const code = (error as { code?: unknown } | null)?.code;
  const reason =
    code === "EADDRINUSE"
      ? "a port is already in use (another `npm start`?); set PORT / BRIDGE_PORT / WORKER_PORT to use others"
      : error instanceof Error
        ? error.message
        : String(error);
  console.error(`Could not start the demo: ${reason}`);
  process.exit(1);
}

const python = stack.python.running
  ? `running (${stack.python.runtime}): the optimizer can choose its module sklearn.LogisticRegression`
  : `not started: ${stack.python.reason} (the demo works without it)`;
console.log(`
  Spam filter tuning demo (unified-bridge)

  ➜  Open:    ${stack.url}
  ➜  Bridge:  ${stack.bridgeUrl}  (gRPC h2c, gRPC-Web, Connect; in-memory sessions; access: tokens)
  ➜  Workers: ${stack.workerTarget}  (worker listener: RegisterTools)
  ➜  Python:  ${python}

  Share a session: open the page, then "Copy link" or "Open in another tab" (the link
  carries the session and its access token); "Copy view-only link" shares it to watch only.${
    // Keys need a terminal; under a process manager or a pipe there is none.
    process.stdin.isTTY
      ? `
  Press b to stop the bridge (an outage: the page keeps your edits and sends
  them when it is back), b again to start it with the sessions as they were.`
      : ""
  }
  Ctrl-C stops both servers.
`);

let signals = 0;
const shutdown = () => {
  signals++;
  if (signals > 1) process.exit(1); // a second Ctrl-C: now
  console.log("Stopping…");
  stack.stop().then(
    () => process.exit(0),
    (error: unknown) => {
      console.error(`Stop failed: ${error instanceof Error ? error.message : String(error)}`);
      process.exit(1);
    },
  );
};
process.on("SIGINT", shutdown);
process.on("SIGTERM", shutdown);

let toggling = false;
const toggleBridge = async () => {
  if (toggling) return; // one change at a time; the key is ignored meanwhile
  toggling = true;
  try {
    if (stack.bridgeListening) {
      console.log("Stopping the bridge…");
      await stack.stopBridge();
      console.log(
        "  ✕ Bridge stopped. The page says it is unreachable and keeps edits in the browser (reload it too). Press b to start the bridge again.",
      );
    } else {
      console.log("Starting the bridge…");
      await stack.startBridge();
      console.log(
        `  ✓ Bridge listening again at ${stack.bridgeUrl} with the sessions as they were${stack.python.running ? " (its Python worker starts again)" : ""}; the page sends the kept edits.`,
      );
    }
  } catch (error) {
    console.error(
      `  The bridge could not change: ${error instanceof Error ? error.message : String(error)}`,
    );
  } finally {
    toggling = false;
  }
};

if (process.stdin.isTTY) {
  emitKeypressEvents(process.stdin);
  process.stdin.setRawMode(true);
  process.stdin.on(
    "keypress",
    (_text: string | undefined, key: { name?: string; ctrl?: boolean }) => {
      // Raw mode delivers Ctrl-C as a key instead of SIGINT.
      if (key.ctrl === true && key.name === "c") shutdown();
      else if (key.name === "b") void toggleBridge();
    },
  );
}
