// The bridge an example talks to: the one at BRIDGE_URL, or, without it,
// one started in this process on a free port (public listener only), so
// that each example runs with one command. `stop()` stops only a bridge
// started here.
import { createBridgeServer, createLogger } from "unified-session-bridge/server";

export async function exampleBridge(): Promise<{
  readonly url: string;
  /** Whether this process started it. */
  readonly started: boolean;
  stop(): Promise<void>;
}> {
  const given = process.env.BRIDGE_URL;
  if (given !== undefined) return { url: given, started: false, stop: async () => {} };
  const bridge = createBridgeServer({
    port: 0,
    workerPort: null,
    adminPort: null,
    logger: createLogger({ level: "warn" }),
  });
  const { url } = await bridge.start();
  return { url, started: true, stop: () => bridge.stop() };
}
