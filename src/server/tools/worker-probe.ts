/**
 * One health check of a worker, over a connection kept for the next one.
 * Workers speak different dialects: a gRPC server with the standard health
 * service answers `grpc.health.v1.Health/Check`; snakepit's own workers
 * (v0.4.3 and v0.13) serve only BridgeService, whose `Ping` they answer;
 * a minimal worker (the demo's) serves neither, yet answers every call
 * with a gRPC status, which shows its process is there. The probe finds
 * each worker's dialect once and keeps using it until a check fails.
 */
import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Health, HealthCheckResponse_ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import { BridgeService } from "../../gen/snakepit/bridge/bridge_pb.js";
import { clip } from "../common/message-text.js";
import type { ServerTimers } from "../common/timers.js";
import type { WorkerAddress } from "./worker-address.js";
import { createWorkerConnection, type WorkerConnection } from "./worker-connection.js";

/** Probes workers; see {@link createWorkerProbe}. */
export interface WorkerProbe {
  /**
   * Checks the worker at `address`: resolves to undefined when it answers
   * as alive, else to why not (for the operator: it may name the address).
   * Never rejects.
   */
  check(address: WorkerAddress, signal: AbortSignal): Promise<string | undefined>;
  /** Closes the connection to an address and forgets its dialect (a failed check does too). */
  forget(address: WorkerAddress): void;
  /** Closes every connection. */
  close(): void;
}

/** Options of {@link createWorkerProbe}. */
export interface WorkerProbeOptions {
  /** How long one check may take, connecting included. */
  readonly timeoutMs: number;
  /** Connections kept open; the least recently used is closed beyond. */
  readonly maxConnections: number;
  /** An idle connection is closed after this long. */
  readonly idleMs: number;
  /** Runs the connections' connect deadlines (default: Node's timers). */
  readonly timers?: ServerTimers;
}

/** Which call shows that a worker is alive. */
type Dialect = "health" | "ping";

interface Link {
  readonly connection: WorkerConnection;
  readonly health: Client<typeof Health>;
  readonly bridge: Client<typeof BridgeService>;
  dialect: Dialect;
}

// A check reads tiny replies: anything bigger is not a worker's answer.
const READ_MAX_BYTES = 64 * 1024;

/** Creates a probe with its own small pool of connections. */
export function createWorkerProbe(options: WorkerProbeOptions): WorkerProbe {
  // Least recently used first: a Map keeps insertion order.
  const links = new Map<string, Link>();

  const linkTo = (address: WorkerAddress): Link => {
    const known = links.get(address.display);
    if (known !== undefined) {
      links.delete(address.display);
      links.set(address.display, known);
      return known;
    }
    const connection = createWorkerConnection(address.url, {
      connectTimeoutMs: options.timeoutMs,
      idleMs: options.idleMs,
      ...(options.timers === undefined ? {} : { timers: options.timers }),
    });
    const transport = createGrpcTransport({
      baseUrl: address.url,
      sessionManager: connection,
      readMaxBytes: READ_MAX_BYTES,
    });
    const link: Link = {
      connection,
      health: createClient(Health, transport),
      bridge: createClient(BridgeService, transport),
      dialect: "health",
    };
    links.set(address.display, link);
    while (links.size > options.maxConnections) {
      const [oldest, evicted] = links.entries().next().value as [string, Link];
      links.delete(oldest);
      evicted.connection.close();
    }
    return link;
  };

  // The deadline is counted on Node's clock (Date.now), not the injected
  // one: what is left of it becomes connect-node's call timeout, which runs
  // on Node's timers.
  const check = async (
    link: Link,
    signal: AbortSignal,
    deadline: number,
  ): Promise<string | undefined> => {
    const call = () => ({ signal, timeoutMs: Math.max(1, deadline - Date.now()) });
    if (link.dialect === "health") {
      try {
        const { status } = await link.health.check({ service: "" }, call());
        return status === HealthCheckResponse_ServingStatus.SERVING
          ? undefined
          : `health check answered ${HealthCheckResponse_ServingStatus[status] ?? status}`;
      } catch (e) {
        const error = ConnectError.from(e);
        // No health service, or one that does not report the server as a
        // whole (grpcio's leaves "" unset): ask the bridge protocol instead.
        if (
          !answered(error) ||
          (error.code !== Code.Unimplemented && error.code !== Code.NotFound)
        ) {
          return failure(error);
        }
        link.dialect = "ping";
      }
    }
    try {
      await link.bridge.ping({ message: "health check" }, call());
      return undefined;
    } catch (e) {
      const error = ConnectError.from(e);
      if (!answered(error)) return failure(error);
      // A status of the worker's own (UNIMPLEMENTED from one serving
      // neither call, like the demo's): its process is there, serving gRPC.
      return undefined;
    }
  };

  const forget = (address: WorkerAddress) => {
    links.get(address.display)?.connection.close();
    links.delete(address.display);
  };

  return {
    async check(address, signal) {
      let failed: string | undefined;
      // One deadline for the check, however many calls it takes.
      const deadline = Date.now() + options.timeoutMs;
      try {
        const link = linkTo(address);
        const goaways = link.connection.goaways;
        failed = await check(link, signal, deadline);
        // A worker closing its connection (GOAWAY, as servers with a
        // maximum connection age do) may refuse a call it never began: that
        // says nothing about its health, so the check runs once more on a
        // new connection.
        if (failed !== undefined && link.connection.goaways > goaways && Date.now() < deadline) {
          failed = await check(link, signal, deadline);
        }
      } catch (e) {
        // Whatever else went wrong is a failed check, never an exception
        // out of the checking loop.
        failed = failure(ConnectError.from(e));
      }
      // After a failure the next check starts afresh: a new connection
      // (the old one may be dead without having said so) and the dialect
      // found again (whatever serves there now may be another program).
      if (failed !== undefined) forget(address);
      return failed;
    },
    forget,
    close() {
      for (const link of links.values()) link.connection.close();
      links.clear();
    },
  };
}

/**
 * Whether the worker itself answered with a status: a status it sends
 * while it is alive. UNAVAILABLE is what a proxy in front of a dead worker
 * answers; a deadline or a broken connection is the bridge's own error.
 */
function answered(error: ConnectError): boolean {
  return (
    error.isWireError && error.code !== Code.Unavailable && error.code !== Code.DeadlineExceeded
  );
}

function failure(error: ConnectError): string {
  return clip(`${Code[error.code]}: ${error.rawMessage}`, 200);
}
