/**
 * Memory measurements, in a fresh process started with `--expose-gc` so
 * that heap figures are taken after full collections.
 *
 * - `per-variable`: heap (V8 heap + external) of a server whose sessions
 *   hold N string variables of a known size, minus the same sessions
 *   empty, through the real RPC handlers (in-memory router transport).
 * - `sessions-rss`: RSS of a server holding 100k sessions × 10 variables,
 *   filled through `support/populate.ts`.
 */
import { createClient, createRouterTransport } from "@connectrpc/connect";
import { createBridgeServer, createLogger, defaultLimits } from "unified-session-bridge/server";
import { encodeValue } from "unified-session-bridge/values";
import { serveRequests } from "../support/child-processes.ts";
import { BridgeService } from "../support/internals.ts";
import { populateSessions, tenSettings } from "../support/populate.ts";

/** Requests this worker answers. */
export type MemoryRequest =
  | {
      readonly type: "per-variable";
      readonly valueBytes: number;
      readonly sessions: number;
      readonly perSession: number;
    }
  | { readonly type: "sessions-rss"; readonly sessions: number };

/** Reply to `per-variable`, all in bytes. */
export interface PerVariable {
  readonly variables: number;
  readonly valueBytes: number;
  /** Heap growth per variable after RegisterVariable + GetVariable, minus the value's length. */
  readonly overheadBytes: number;
  /** Further growth per variable after one SetVariable (the retained history entry). */
  readonly perWriteBytes: number;
  /** Heap per empty session. */
  readonly perSessionBytes: number;
}

/** Reply to `sessions-rss`. */
export interface SessionsRss {
  readonly sessions: number;
  readonly variables: number;
  readonly rssBytes: number;
  readonly heapUsedBytes: number;
  readonly externalBytes: number;
  /** RSS of the same process before filling. */
  readonly baselineRssBytes: number;
  readonly fillSeconds: number;
}

const logger = createLogger({ level: "warn" });

async function settledHeap(): Promise<number> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error("start this worker with --expose-gc");
  // Several passes: weak maps and finalizers need more than one.
  for (let i = 0; i < 4; i++) {
    gc();
    await new Promise((resolve) => setImmediate(resolve));
  }
  const m = process.memoryUsage();
  return m.heapUsed + m.external;
}

/** A distinct ASCII string of exactly `length` characters. */
function text(i: number, version: number, length: number): string {
  const head = `${version}:${i}:`;
  return (head + "x".repeat(Math.max(0, length - head.length))).slice(0, length);
}

async function perVariable(
  req: Extract<MemoryRequest, { type: "per-variable" }>,
): Promise<PerVariable> {
  const server = createBridgeServer({ logger, maxSessions: req.sessions + 10 });
  const client = createClient(BridgeService, createRouterTransport(server.routes));
  const string = (s: string) => encodeValue("string", s).any;

  // Warm-up: compile every path measured below, then drop it.
  await client.initializeSession({ sessionId: "memory-probe-warm-up" });
  for (let j = 0; j < 50; j++) {
    await client.registerVariable({
      sessionId: "memory-probe-warm-up",
      name: `w${j}`,
      type: "string",
      initialValue: string("w"),
    });
    await client.getVariable({ sessionId: "memory-probe-warm-up", variableIdentifier: `w${j}` });
    await client.setVariable({
      sessionId: "memory-probe-warm-up",
      variableIdentifier: `w${j}`,
      value: string("ww"),
    });
  }
  await client.cleanupSession({ sessionId: "memory-probe-warm-up" });

  const before = await settledHeap();
  for (let s = 0; s < req.sessions; s++)
    await client.initializeSession({ sessionId: `memory-probe-${s}-session` });
  const empty = await settledHeap();
  for (let s = 0; s < req.sessions; s++) {
    for (let j = 0; j < req.perSession; j++) {
      const i = s * req.perSession + j;
      await client.registerVariable({
        sessionId: `memory-probe-${s}-session`,
        name: `var_${j}`,
        type: "string",
        initialValue: string(text(i, 0, req.valueBytes)),
      });
      await client.getVariable({
        sessionId: `memory-probe-${s}-session`,
        variableIdentifier: `var_${j}`,
      });
    }
  }
  const filled = await settledHeap();
  for (let s = 0; s < req.sessions; s++) {
    for (let j = 0; j < req.perSession; j++) {
      const i = s * req.perSession + j;
      await client.setVariable({
        sessionId: `memory-probe-${s}-session`,
        variableIdentifier: `var_${j}`,
        value: string(text(i, 1, req.valueBytes)),
      });
    }
  }
  const written = await settledHeap();
  await server.stop();
  const n = req.sessions * req.perSession;
  return {
    variables: n,
    valueBytes: req.valueBytes,
    overheadBytes: (filled - empty) / n - req.valueBytes,
    perWriteBytes: (written - filled) / n,
    perSessionBytes: (empty - before) / req.sessions,
  };
}

async function sessionsRss(
  req: Extract<MemoryRequest, { type: "sessions-rss" }>,
): Promise<SessionsRss> {
  const limits = { ...defaultLimits, maxSessions: req.sessions + 10 };
  const server = createBridgeServer({ logger, maxSessions: limits.maxSessions });
  await settledHeap();
  const baselineRssBytes = process.memoryUsage.rss();
  const started = performance.now();
  await populateSessions({
    store: server.store,
    limits,
    prefix: "s",
    count: req.sessions,
    declarations: tenSettings,
  });
  const fillSeconds = (performance.now() - started) / 1000;
  await settledHeap();
  const m = process.memoryUsage();
  const stats = await server.store.stats();
  await server.stop();
  return {
    sessions: stats.sessions,
    variables: stats.variables,
    rssBytes: m.rss,
    heapUsedBytes: m.heapUsed,
    externalBytes: m.external,
    baselineRssBytes,
    fillSeconds,
  };
}

serveRequests((raw) => {
  const req = raw as MemoryRequest;
  return req.type === "per-variable" ? perVariable(req) : sessionsRss(req);
});
