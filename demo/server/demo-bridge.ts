import { createBridgeServer, createLogger, type Logger } from "../../src/server/index.ts";
import { createSpamTools } from "./spam-tools.ts";

/** A running demo bridge. */
export interface DemoBridge {
  readonly url: string;
  readonly port: number;
  stop(): Promise<void>;
}

/**
 * The bridge server of the demo: the library's server with its in-memory
 * store, the built-in tools and the spam program's tools.
 */
export async function startDemoBridge(options: {
  host: string;
  port: number;
  corsOrigins: readonly string[];
  logLevel: Logger["level"];
}): Promise<DemoBridge> {
  const server = createBridgeServer({
    host: options.host,
    port: options.port,
    corsOrigins: [...options.corsOrigins],
    shutdownGraceMs: 1000,
    logger: createLogger({ level: options.logLevel }),
    tools: createSpamTools(),
  });
  const { url, port } = await server.start();
  return { url, port, stop: () => server.stop() };
}
