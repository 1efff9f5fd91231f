/**
 * The demo's e2e fixture: the stack `npm start` runs (bridge + Vite dev
 * server with its proxy) on free ports, a Connect client of the bridge to
 * check what it holds, and two Chromium browsers with separate profiles:
 * two people, so what one sees of the other's work can only have come
 * through the bridge's watch stream.
 */
import { type Client, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { type Stack, startStack } from "../../demo/stack.ts";
import { BridgeService } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { launchChromium } from "../support/chromium.js";

type Browser = Awaited<ReturnType<typeof launchChromium>>;

export interface DemoPeople {
  readonly stack: Stack;
  readonly bridge: Client<typeof BridgeService>;
  readonly alice: Browser;
  readonly bob: Browser;
  /** Closes both browsers and stops the stack. */
  stop(): Promise<void>;
}

/**
 * Starts the stack and both browsers. With `python: true` the demo's Python
 * worker must be running, or this fails naming the Debian packages.
 */
export async function startDemoPeople(options: { python: boolean }): Promise<DemoPeople> {
  const stack = await startStack({
    bridgePort: 0,
    vitePort: 0,
    workerPort: 0,
    watch: false,
    // Other people open the session by its id alone, as in snakepit; the
    // view-only link's suite runs the demo as npm start does (tokens).
    access: "session-id",
    ...(options.python ? {} : { python: false as const }),
    logLevel: "error",
    viteLogLevel: "error",
  });
  try {
    if (options.python && !stack.python.running) {
      throw new Error(
        `the demo's Python worker did not start: ${stack.python.reason} (apt-get install python3-grpcio python3-sklearn protobuf-compiler protobuf-compiler-grpc)`,
      );
    }
    const [alice, bob] = await Promise.all([launchChromium(), launchChromium()]);
    return {
      stack,
      bridge: createClient(
        BridgeService,
        createConnectTransport({ baseUrl: stack.bridgeUrl, httpVersion: "1.1" }),
      ),
      alice,
      bob,
      async stop() {
        await Promise.allSettled([alice.close(), bob.close()]);
        await stack.stop();
      },
    };
  } catch (e) {
    await stack.stop();
    throw e;
  }
}
