/**
 * gRPC's standard health service (`grpc.health.v1.Health`), which Envoy's
 * gRPC health check, Kubernetes gRPC probes and grpc_health_probe speak. It
 * reports the same readiness as `GET /healthz`: SERVING while the store is
 * reachable and the server is not shutting down, NOT_SERVING otherwise.
 */
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  type Health,
  HealthCheckResponse_ServingStatus,
} from "../../gen/grpc/health/v1/health_pb.js";
import { BridgeService } from "../../gen/snakepit/bridge/bridge_pb.js";
import { type ServerTimers, systemTimers } from "../common/timers.js";

/** The service names health checkers may ask about: the whole server ("") and BridgeService. */
export const healthServiceNames: readonly string[] = Object.freeze(["", BridgeService.typeName]);

/** Options of {@link createHealthService}. */
export interface HealthServiceOptions {
  /** Whether the server is ready to serve (the `/healthz` readiness). */
  readonly ready: () => boolean;
  /** Aborted when the server begins to shut down: watches get NOT_SERVING and end. */
  readonly shutdownSignal: AbortSignal;
  /** How often a watch looks at {@link ready} (default 1000 ms). */
  readonly watchIntervalMs?: number;
  /** Watch streams held at once; more fail with RESOURCE_EXHAUSTED (default 256). */
  readonly maxWatchers?: number;
  /** Paces the watches (default: Node's timers). */
  readonly timers?: ServerTimers;
}

const { SERVING, NOT_SERVING, SERVICE_UNKNOWN } = HealthCheckResponse_ServingStatus;

/**
 * Creates the Health implementation. Check answers at once; Watch sends the
 * current status, then each change (readiness is looked at every
 * `watchIntervalMs`), and ends after NOT_SERVING when the server shuts down.
 * An unknown service name fails Check with NOT_FOUND and gets
 * SERVICE_UNKNOWN on Watch, as the service's contract says.
 *
 * @example
 * ```ts
 * router.service(Health, createHealthService({ ready: () => !draining, shutdownSignal }));
 * ```
 */
export function createHealthService(options: HealthServiceOptions): ServiceImpl<typeof Health> {
  const intervalMs = options.watchIntervalMs ?? 1000;
  const maxWatchers = options.maxWatchers ?? 256;
  const timers = options.timers ?? systemTimers;
  const known = new Set(healthServiceNames);
  let watchers = 0;
  const status = () => (!options.shutdownSignal.aborted && options.ready() ? SERVING : NOT_SERVING);

  return {
    check(req) {
      if (!known.has(req.service)) {
        throw new ConnectError(
          `unknown service '${req.service.slice(0, 200)}'; this server reports on "" (the whole server) and "${BridgeService.typeName}"`,
          Code.NotFound,
        );
      }
      return { status: status() };
    },

    async *watch(req, ctx) {
      if (watchers >= maxWatchers) {
        throw new ConnectError(
          `too many health watches open (${maxWatchers}); use Check, or close a watch`,
          Code.ResourceExhausted,
        );
      }
      watchers++;
      try {
        if (!known.has(req.service)) {
          // The set of names never changes: the answer stays SERVICE_UNKNOWN.
          yield { status: SERVICE_UNKNOWN };
          await untilAborted(timers, ctx.signal, options.shutdownSignal);
          return;
        }
        let last = status();
        yield { status: last };
        while (!ctx.signal.aborted && !options.shutdownSignal.aborted) {
          await tick(timers, intervalMs, ctx.signal, options.shutdownSignal);
          const now = status();
          if (now !== last) {
            last = now;
            yield { status: now };
          }
        }
        if (options.shutdownSignal.aborted && last !== NOT_SERVING) yield { status: NOT_SERVING };
      } finally {
        watchers--;
      }
    },
  };
}

/** Resolves after `ms`, or as soon as one of `signals` aborts. */
function tick(timers: ServerTimers, ms: number, ...signals: AbortSignal[]): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      timers.clearTimeout(timer);
      for (const s of signals) s.removeEventListener("abort", done);
      resolve();
    };
    // A watch must not keep the process alive.
    const timer = timers.setTimeout(done, ms);
    timer.unref();
    for (const s of signals) s.addEventListener("abort", done, { once: true });
    if (signals.some((s) => s.aborted)) done();
  });
}

function untilAborted(timers: ServerTimers, ...signals: AbortSignal[]): Promise<void> {
  return tick(timers, 2 ** 31 - 1, ...signals);
}
