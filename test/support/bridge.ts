import { type Client, createClient, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { afterEach } from "vitest";
import { BridgeService } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import {
  type BridgeServer,
  type BridgeServerOptions,
  createBridgeServer,
  createLogger,
} from "../../src/server/index.js";

/** The three protocols the server speaks on its one port. */
export const protocols = ["connect", "grpc", "grpc-web"] as const;
export type Protocol = (typeof protocols)[number];

/**
 * A Node transport of `protocol` to `baseUrl`: gRPC over HTTP/2, gRPC-Web
 * and Connect (binary) over HTTP/1.1, as browsers send them.
 */
export function transportFor(protocol: Protocol, baseUrl: string): Transport {
  if (protocol === "grpc") return createGrpcTransport({ baseUrl });
  if (protocol === "grpc-web") return createGrpcWebTransport({ baseUrl, httpVersion: "1.1" });
  return createConnectTransport({ baseUrl, httpVersion: "1.1" });
}

/** A real bridge server on free ports of 127.0.0.1. */
export interface RunningBridge {
  readonly server: BridgeServer;
  /** The public listener. */
  readonly url: string;
  readonly port: number;
  /** The worker listener (every caller there is a worker). */
  readonly workerUrl: string;
  /** The admin listener (/healthz, /metrics). */
  readonly adminUrl: string;
  /** A BridgeService client of the public port over the given protocol (default Connect). */
  client(protocol?: Protocol): Client<typeof BridgeService>;
  transport(protocol?: Protocol): Transport;
  /** A gRPC client of the worker listener, as a Python worker would call. */
  workerClient(): Client<typeof BridgeService>;
  stop(): Promise<void>;
}

/** Starts a bridge server for a test; silent logs unless UB_TEST_LOGS is set. */
export async function startBridge(options: BridgeServerOptions = {}): Promise<RunningBridge> {
  const server = createBridgeServer({
    host: "127.0.0.1",
    port: 0,
    workerPort: 0,
    adminPort: 0,
    shutdownGraceMs: 2000,
    logger: createLogger({ level: process.env.UB_TEST_LOGS ? "debug" : "error" }),
    ...options,
  });
  const { url, port, workerUrl, adminUrl } = await server.start();
  const transports = new Map<Protocol, Transport>();
  const transport = (protocol: Protocol = "connect") => {
    let t = transports.get(protocol);
    if (t === undefined) {
      t = transportFor(protocol, url);
      transports.set(protocol, t);
    }
    return t;
  };
  let worker: Client<typeof BridgeService> | undefined;
  return {
    server,
    url,
    port,
    workerUrl: workerUrl ?? "",
    adminUrl: adminUrl ?? "",
    transport,
    client: (protocol) => createClient(BridgeService, transport(protocol)),
    workerClient: () => {
      if (workerUrl === undefined) throw new Error("this bridge has no worker listener");
      worker ??= createClient(BridgeService, createGrpcTransport({ baseUrl: workerUrl }));
      return worker;
    },
    stop: () => server.stop(),
  };
}

/**
 * For suites that start a bridge per test: returns a starter whose servers
 * are all stopped after each test.
 */
export function bridgePerTest(): (options?: BridgeServerOptions) => Promise<RunningBridge> {
  const running: RunningBridge[] = [];
  afterEach(async () => {
    await Promise.all(running.splice(0).map((b) => b.stop()));
  });
  return async (options = {}) => {
    const b = await startBridge(options);
    running.push(b);
    return b;
  };
}
