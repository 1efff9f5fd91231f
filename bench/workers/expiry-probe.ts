/**
 * Mass expiry: a bridge server (not listening: expiry needs no sockets) whose
 * in-memory store holds N sessions, with a clock this probe controls. After
 * filling, the clock jumps past every session's TTL and the server's own
 * sweeper (real timer, default interval and chunk size) removes them while
 * `monitorEventLoopDelay` records how late the event loop ran. The server's
 * session-ended handling (watch streams, session tools, one info log line
 * per session, to stdout, which the runner points at a file) is included.
 */
import { monitorEventLoopDelay } from "node:perf_hooks";
import { createBridgeServer, createLogger, defaultLimits } from "unified-session-bridge/server";
import { serveRequests } from "../support/child-processes.ts";
import { type Declaration, populateSessions } from "../support/populate.ts";

/** The one request this worker answers. */
export interface ExpiryRequest {
  readonly type: "expire";
  readonly sessions: number;
}

/** What happened while the sessions expired. */
export interface ExpiryReport {
  readonly sessions: number;
  /** Largest event-loop delay while sweeping, ms. */
  readonly maxStallMs: number;
  readonly p99StallMs: number;
  readonly meanStallMs: number;
  /** Largest delay over one second before the jump (the idle baseline), ms. */
  readonly idleMaxStallMs: number;
  /** From the clock jump until the store was empty, ms. */
  readonly sweepMs: number;
  readonly fillSeconds: number;
  readonly remaining: number;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const ttlMs = 30 * 60_000;

const declarations: readonly Declaration[] = [
  { name: "temperature", type: "float", value: () => 0.7 },
  { name: "system_prompt", type: "string", value: (i) => `You are assistant number ${i}.` },
];

async function expire(req: ExpiryRequest): Promise<ExpiryReport> {
  let skew = 0;
  const now = () => Date.now() + skew;
  const limits = { ...defaultLimits, maxSessions: req.sessions + 10 };
  const server = createBridgeServer({
    now,
    maxSessions: limits.maxSessions,
    // The default production logger: info lines as JSON on stdout.
    logger: createLogger({ level: "info" }),
  });
  const started = performance.now();
  await populateSessions({
    store: server.store,
    limits,
    now,
    prefix: "e",
    count: req.sessions,
    declarations,
    ttlMs,
  });
  const fillSeconds = (performance.now() - started) / 1000;
  // Filling 100k sessions in seconds leaves a GC debt that real traffic,
  // spread over the TTL, would not; pay it before measuring.
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error("start this worker with --expose-gc");
  gc();
  gc();

  const histogram = monitorEventLoopDelay({ resolution: 1 });
  histogram.enable();
  await sleep(1000);
  const idleMaxStallMs = histogram.max / 1e6;
  histogram.reset();

  skew = ttlMs + 5000;
  const jumped = performance.now();
  let remaining = req.sessions;
  while (remaining > 0 && performance.now() - jumped < 60_000) {
    await sleep(20);
    remaining = (await server.store.stats()).sessions;
  }
  const sweepMs = performance.now() - jumped;
  // Keep watching a little longer: freeing 100k sessions is work for the GC.
  await sleep(1000);
  histogram.disable();
  await server.store.close();
  return {
    sessions: req.sessions,
    maxStallMs: histogram.max / 1e6,
    p99StallMs: histogram.percentile(99) / 1e6,
    meanStallMs: histogram.mean / 1e6,
    idleMaxStallMs,
    sweepMs,
    fillSeconds,
    remaining,
  };
}

serveRequests((raw) => expire(raw as ExpiryRequest));
