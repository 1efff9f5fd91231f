/**
 * The HTTP front alone (no bridge behind it) on a free loopback port, for
 * tests of one mechanism of the front or the RPC handler: the routes and
 * interceptors are the test's, the rest are quiet defaults.
 */
import {
  createHttpFront,
  type HttpFront,
  type HttpFrontOptions,
} from "../../src/server/edge/http-front.js";
import { silentLogger } from "../../src/server/observability/logger.js";
import { createMetrics } from "../../src/server/observability/metrics.js";

/** Options of a front on 127.0.0.1 with a free port, no CORS origins and a silent logger. */
export function frontOptions(overrides: Partial<HttpFrontOptions> = {}): HttpFrontOptions {
  return {
    host: "127.0.0.1",
    port: 0,
    routes: () => {},
    corsOrigins: [],
    maxRequestBytes: 1 << 20,
    health: () => ({ ok: true }),
    metrics: createMetrics(),
    logger: silentLogger,
    ...overrides,
  };
}

/** A listening front; close it with `front.close()`. */
export async function startFront(
  overrides: Partial<HttpFrontOptions> = {},
): Promise<{ front: HttpFront; port: number; url: string }> {
  const front = createHttpFront(frontOptions(overrides));
  const { port } = await front.listen();
  return { front, port, url: `http://127.0.0.1:${port}` };
}
