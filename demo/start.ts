/**
 * `npm start`: the bridge server and the demo page in one command.
 *
 *   node demo/start.ts            (Node 24: runs TypeScript by type stripping)
 *
 * Environment: PORT (page, default 5173), BRIDGE_PORT (default 50051),
 * WORKER_PORT (the bridge's worker listener, default 50052),
 * HOST (default 127.0.0.1), LOG_LEVEL (bridge logs: debug|info|warn|error,
 * default warn). Ctrl-C stops both.
 */
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
  ➜  Bridge:  ${stack.bridgeUrl}  (gRPC h2c, gRPC-Web, Connect; in-memory sessions)
  ➜  Workers: ${stack.workerTarget}  (worker listener: RegisterTools)
  ➜  Python:  ${python}

  Share a session: open the page, then "Open in another tab" (the URL carries ?session=…).
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
