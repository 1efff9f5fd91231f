import type { Interceptor, Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

/** A transport that counts the calls made through it, by method name. */
export interface CountingTransport {
  readonly transport: Transport;
  /** Unary calls by method name since the last reset (streams excluded). */
  readonly calls: Map<string, number>;
  /** Server-streaming calls opened, by method name. */
  readonly streams: Map<string, number>;
  /** Total unary calls since the last reset. */
  total(): number;
  reset(): void;
}

/**
 * Wraps a gRPC transport to `baseUrl` with an interceptor that counts calls,
 * so tests can assert round trips. `delay` lets a test hold a method's
 * responses back (to race them against other calls).
 */
export function countingTransport(
  baseUrl: string,
  delay?: (method: string) => Promise<void> | undefined,
): CountingTransport {
  const calls = new Map<string, number>();
  const streams = new Map<string, number>();
  const counter: Interceptor = (next) => async (req) => {
    const bucket = req.stream ? streams : calls;
    bucket.set(req.method.name, (bucket.get(req.method.name) ?? 0) + 1);
    const response = await next(req);
    const wait = delay?.(req.method.name);
    if (wait !== undefined) await wait;
    return response;
  };
  return {
    transport: createGrpcTransport({ baseUrl, interceptors: [counter] }),
    calls,
    streams,
    total: () => [...calls.values()].reduce((a, b) => a + b, 0),
    reset() {
      calls.clear();
      streams.clear();
    },
  };
}
