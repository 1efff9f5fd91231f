/**
 * The server under test, in a process of its own: the bridge and the echo
 * front (see `workers/serve-bridge.ts`), plus a gRPC client in the runner
 * for setting up fixtures.
 */
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { encodeValue } from "unified-session-bridge/values";
import type { ServeAddresses } from "../workers/serve-bridge.ts";
import { type ChildWorker, startChild } from "./child-processes.ts";
import { BridgeService } from "./internals.ts";

/** A running server process. */
export interface BridgeProcess {
  readonly worker: ChildWorker;
  readonly bridgeUrl: string;
  readonly echoUrl: string;
  /** A gRPC client of the bridge, for fixtures. */
  readonly client: Client<typeof BridgeService>;
  close(): Promise<void>;
}

/** Starts the server process and waits until both ports listen. */
export async function startBridgeProcess(
  options: {
    maxSessions?: number;
    redisUrl?: string;
    bridgeOptions?: Readonly<Record<string, number>>;
    /** Node flags for the server process, e.g. `["--expose-gc"]`. */
    execArgv?: readonly string[];
  } = {},
): Promise<BridgeProcess> {
  const worker = await startChild(new URL("../workers/serve-bridge.ts", import.meta.url), {
    execArgv: options.execArgv ?? [],
  });
  try {
    const { bridgeUrl, echoUrl } = await worker.request<ServeAddresses>({
      type: "start",
      ...options,
    });
    const client = createClient(BridgeService, createGrpcTransport({ baseUrl: bridgeUrl }));
    return {
      worker,
      bridgeUrl,
      echoUrl,
      client,
      async close() {
        await worker.request({ type: "stop" }).catch(() => {
          // Already gone: closing below is all that is left to do.
        });
        await worker.close();
      },
    };
  } catch (error) {
    await worker.close();
    throw error;
  }
}

/**
 * Creates the session the unary benchmarks call: one float variable in
 * [0, 2] at 0.7, the shape of a typical model setting.
 */
export async function seedSettingSession(
  client: Client<typeof BridgeService>,
  sessionId: string,
  variable: string,
): Promise<void> {
  await client.initializeSession({
    sessionId,
    initialVariables: [
      {
        name: variable,
        type: "float",
        initialValue: encodeValue("float", 0.7).any,
        constraintsJson: '{"min":0,"max":2}',
      },
    ],
  });
}
