/**
 * A Cloudflare Worker that drives the unified-bridge client through
 * connect-web, bundled and run in real workerd by workerd.test.ts. Each path
 * is one scenario and answers with its outcome as JSON:
 *
 * - `/scenario?session=ID`: a request-scoped context (`watch: false`):
 *   register, set, a cache-hit get, getMany/setMany, rejected writes, a tool
 *   call, a streaming tool, `close({ cleanup: true })`.
 * - `/watch?session=ID`: a context with its watch stream on, inside one
 *   request: goes live, learns a server-side change by push, closes.
 * - `/plain`: connect-web with the runtime's own fetch, no `workerFetch`:
 *   reports the error workerd produces.
 * - `/json`: connect-web's default JSON format: reports why the Connect
 *   transport needs `useBinaryFormat: true`.
 * - `/outbox?session=ID`: a context with `memoryOutbox()` whose fetch the
 *   Worker can break: a write whose reply is lost after the bridge applied
 *   it (resent under its key), writes made while every fetch fails (stored,
 *   shown pending, committed in order once fetches work again), and a
 *   compare-and-swap conflict reported as a refusal.
 *
 * Runs in workerd only; the Node-side test imports nothing but its types.
 */
import { type Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import {
  createSessionContext,
  type JsonValue,
  memoryOutbox,
  type SessionContext,
  type VariableValue,
  workerFetch,
  writeOutcome,
} from "../../src/client/index.js";

/** The Worker's bindings. */
export interface Env {
  readonly BRIDGE_URL: string;
}

/** A caught error as the test sees it. */
export interface ErrorReport {
  readonly code: Code | undefined;
  readonly message: string;
  /** The message of the error's cause, when it has one. */
  readonly cause: string | undefined;
}

/** How long one step took, as workerd's clock saw it, and what it cost. */
export interface Step {
  readonly name: string;
  /** Milliseconds. workerd advances its clock only across I/O, so a step without any reads 0. */
  readonly ms: number;
  /** Unary calls the step made. */
  readonly rpcs: number;
}

/** Outcome of `/scenario`. */
export interface ScenarioResult {
  readonly sessionId: string;
  readonly registered: Readonly<Record<string, { value: VariableValue; version: number }>>;
  readonly afterSet: { value: VariableValue; version: number };
  readonly cachedGet: VariableValue;
  readonly batch: {
    readonly success: boolean;
    readonly versions: Readonly<Record<string, number>>;
  };
  /** getMany with bypassCache: what the server holds. */
  readonly serverView: Readonly<Record<string, { value: VariableValue; version: number }>>;
  /** The rejection of an out-of-range set the cache could check locally. */
  readonly rejectedLocally: ErrorReport;
  /** The same set with the variable unknown locally: the server's rejection. */
  readonly rejectedByServer: ErrorReport;
  readonly tool: JsonValue;
  readonly streamed: JsonValue[];
  readonly steps: readonly Step[];
}

/** Outcome of `/watch`. */
export interface WatchResult {
  readonly sessionId: string;
  /** The watch stream reached its sync marker and the cache went live. */
  readonly live: boolean;
  /** Server-pushed change of `counter` made by a tool, as the context saw it. */
  readonly pushed: { value: VariableValue; version: number } | undefined;
  /** get("counter") after the push: its value and the unary calls it cost. */
  readonly afterPush: { value: VariableValue; rpcs: number };
  /** Watch streams opened. */
  readonly streams: number;
  /** Events other than "change" the context emitted (e.g. "reconnecting"). */
  readonly events: readonly string[];
  readonly steps: readonly Step[];
}

/**
 * The transport every scenario but `/json` uses. Binary, because variable
 * values and tool arguments travel in Any messages with type URLs (e.g.
 * `snakepit.float`) that no JSON type registry can resolve.
 */
function bridgeTransport(env: Env, interceptor: Interceptor) {
  return createConnectTransport({
    baseUrl: env.BRIDGE_URL,
    fetch: workerFetch,
    useBinaryFormat: true,
    interceptors: [interceptor],
  });
}

/** Counts unary calls and streams made through a transport. */
function counter() {
  const counts = { unary: 0, streams: 0 };
  const interceptor: Interceptor = (next) => (req) => {
    if (req.stream) counts.streams++;
    else counts.unary++;
    return next(req);
  };
  return { counts, interceptor };
}

/** Runs named steps, recording each one's duration and unary calls. */
function stepper(counts: { readonly unary: number }) {
  const steps: Step[] = [];
  const step = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
    const start = Date.now();
    const before = counts.unary;
    const result = await fn();
    steps.push({ name, ms: Date.now() - start, rpcs: counts.unary - before });
    return result;
  };
  return { steps, step };
}

function report(error: unknown): ErrorReport {
  const cause = error instanceof Error ? error.cause : undefined;
  return {
    code: error instanceof ConnectError ? error.code : undefined,
    message: error instanceof ConnectError ? error.rawMessage : String(error),
    cause: cause instanceof Error ? cause.message : undefined,
  };
}

/** The error `promise` rejects with; fails if it resolves. */
async function rejection(promise: Promise<unknown>): Promise<ErrorReport> {
  try {
    await promise;
  } catch (error) {
    return report(error);
  }
  throw new Error("expected a rejection");
}

async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of iterable) out.push(item);
  return out;
}

/** Resolves once `condition` holds, polling; rejects after `ms`. */
async function until(condition: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

const brief = (s: { value: VariableValue; version: number }) => ({
  value: s.value,
  version: s.version,
});

async function scenario(env: Env, sessionId: string): Promise<ScenarioResult> {
  const { counts, interceptor } = counter();
  const transport = bridgeTransport(env, interceptor);
  const { steps, step } = stepper(counts);
  const ctx = await step("createSessionContext", () =>
    createSessionContext({ transport, sessionId, watch: false }),
  );
  try {
    const temperature = await step("register temperature", () =>
      ctx.register("temperature", "float", 0.7, { constraints: { min: 0, max: 2 } }),
    );
    const maxTokens = await step("register max_tokens", () =>
      ctx.register("max_tokens", "integer", 256, { constraints: { min: 1, max: 4096 } }),
    );
    const afterSet = await step("set", () => ctx.set("temperature", 0.9));
    const cachedGet = await step("get (cache hit)", () => ctx.get("temperature"));
    const batch = await step("setMany", () => ctx.setMany({ temperature: 1.1, max_tokens: 512 }));
    const serverView = await step("getMany (bypassCache)", () =>
      ctx.getMany(["temperature", "max_tokens"], { bypassCache: true }),
    );
    const rejectedLocally = await step("set 2.5 (rejected locally)", () =>
      rejection(ctx.set("temperature", 2.5)),
    );
    // Unknown to the cache, the value goes out unchecked: the server rejects it.
    ctx.cache.invalidate("temperature");
    const rejectedByServer = await step("set 2.5 (rejected by server)", () =>
      rejection(ctx.set("temperature", 2.5)),
    );
    const tool = await step("callTool conversation_append", () =>
      ctx.callTool("conversation_append", { role: "user", content: "hello from workerd" }),
    );
    const streamed = await step("streamTool export_variables", () =>
      collect(ctx.streamTool("export_variables", { pattern: "*" })),
    );
    await step("close (cleanup)", () => ctx.close({ cleanup: true }));
    return {
      sessionId: ctx.sessionId,
      registered: { temperature: brief(temperature), max_tokens: brief(maxTokens) },
      afterSet: brief(afterSet),
      cachedGet,
      batch: {
        success: batch.success,
        versions: Object.fromEntries(
          Object.entries(batch.variables).map(([name, s]) => [name, s.version]),
        ),
      },
      serverView: Object.fromEntries(
        Object.entries(serverView).map(([name, s]) => [name, brief(s)]),
      ),
      rejectedLocally,
      rejectedByServer,
      tool,
      streamed,
      steps,
    };
  } finally {
    await ctx.close();
  }
}

async function watchScenario(env: Env, sessionId: string): Promise<WatchResult> {
  const { counts, interceptor } = counter();
  const transport = bridgeTransport(env, interceptor);
  const { steps, step } = stepper(counts);
  const ctx: SessionContext = await step("createSessionContext (watch on)", () =>
    createSessionContext({ transport, sessionId, watch: { initialBackoffMs: 50 } }),
  );
  const events: string[] = [];
  for (const type of ["stale", "reconnecting", "resynchronized", "session-ended"] as const) {
    ctx.on(type, () => events.push(type));
  }
  try {
    await step("until live", () => until(() => ctx.cache.live, 5000, "the watch to go live"));
    const live = ctx.cache.live;
    await step("register counter", () => ctx.register("counter", "integer", 0));
    const pushed = new Promise<{ value: VariableValue; version: number }>((resolve) => {
      const off = ctx.on("change", (event) => {
        if (event.origin === "server" && event.name === "counter" && event.snapshot !== undefined) {
          if (event.snapshot.version < 1) return;
          off();
          resolve(brief(event.snapshot));
        }
      });
    });
    // A change made on the server, not by this context: only the watch can tell it.
    await step("callTool increment_variable", () =>
      ctx.callTool("increment_variable", { name: "counter", delta: 5 }),
    );
    const seen = await step("until pushed", () =>
      Promise.race([
        pushed,
        new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 5000)),
      ]),
    );
    const before = counts.unary;
    const value = await step("get (pushed, cached)", () => ctx.get("counter"));
    const afterPush = { value, rpcs: counts.unary - before };
    await step("close (cleanup, ends the stream)", () => ctx.close({ cleanup: true }));
    return {
      sessionId: ctx.sessionId,
      live,
      pushed: seen,
      afterPush,
      streams: counts.streams,
      events,
      steps,
    };
  } finally {
    await ctx.close();
  }
}

/** connect-web with workerd's own fetch: what a Worker gets without `workerFetch`. */
async function plainFetch(env: Env): Promise<ErrorReport> {
  const transport = createConnectTransport({ baseUrl: env.BRIDGE_URL, useBinaryFormat: true });
  return rejection(createSessionContext({ transport, watch: false }));
}

/** connect-web's default JSON format, otherwise as the scenarios use it. */
async function jsonFormat(env: Env): Promise<ErrorReport> {
  const transport = createConnectTransport({ baseUrl: env.BRIDGE_URL, fetch: workerFetch });
  return rejection(createSessionContext({ transport, watch: false }));
}

/** Outcome of `/outbox`. */
export interface OutboxResult {
  /** The write whose reply was lost: the version it resolved with. */
  readonly lostReply: number;
  /** While every fetch failed: what the writes' `stored` did, and what peek showed. */
  readonly offline: {
    readonly stored: number;
    readonly pending: readonly (readonly [string, VariableValue])[];
    readonly shown: VariableValue | undefined;
    readonly confirmed: VariableValue | undefined;
  };
  /** The versions the offline writes resolved with, in the order made. */
  readonly committed: readonly number[];
  /** A compare-and-swap against a stale version. */
  readonly conflict: { readonly code: Code | undefined; readonly outcome: string };
  readonly pendingAfter: number;
}

/**
 * A fetch the scenario can break: "down" fails every call as a network
 * failure does; "lose-reply" sends the next call and then fails it, after
 * the bridge answered.
 */
function breakableFetch() {
  let mode: "up" | "down" | "lose-reply" = "up";
  const fetch: typeof globalThis.fetch = async (input, init) => {
    if (mode === "down") throw new TypeError("Network connection lost.");
    const response = await workerFetch(input, init);
    if (mode === "lose-reply") {
      mode = "up";
      await response.arrayBuffer();
      throw new TypeError("Network connection lost.");
    }
    return response;
  };
  return {
    fetch,
    set: (next: typeof mode) => {
      mode = next;
    },
  };
}

async function outboxScenario(env: Env, sessionId: string): Promise<OutboxResult> {
  const network = breakableFetch();
  const ctx = await createSessionContext({
    transport: createConnectTransport({
      baseUrl: env.BRIDGE_URL,
      useBinaryFormat: true,
      fetch: network.fetch,
    }),
    sessionId,
    outbox: memoryOutbox(),
    watch: false,
  });
  try {
    await ctx.register("x", "integer", 0);
    network.set("lose-reply");
    const lostReply = (await ctx.set("x", 1)).version;

    network.set("down");
    const writes = [ctx.enqueue("x", 2), ctx.enqueue("x", 3)];
    const stored = (await Promise.allSettled(writes.map((w) => w.stored))).filter(
      (r) => r.status === "fulfilled",
    ).length;
    const offline = {
      stored,
      pending: ctx.pendingWrites().map((w) => [w.name, w.value] as const),
      shown: ctx.peek("x", { pending: true })?.snapshot.value,
      confirmed: ctx.peek("x")?.snapshot.value,
    };
    network.set("up");
    // Without a watch stream, the replay retries on its backoff (1 s first).
    const committed = (await Promise.all(writes.map((w) => w.committed))).map((s) => s.version);
    const conflict = await ctx.set("x", 9, { expectedVersion: 1 }).then(
      () => ({ code: undefined, outcome: "applied" }),
      (e: unknown) => ({ code: ConnectError.from(e).code, outcome: writeOutcome(e) }),
    );
    return { lostReply, offline, committed, conflict, pendingAfter: ctx.pendingWrites().length };
  } finally {
    await ctx.close({ cleanup: true });
  }
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const url = new URL(request.url);
    const sessionId = url.searchParams.get("session") ?? "";
    try {
      switch (url.pathname) {
        case "/scenario":
          return Response.json(await scenario(env, sessionId));
        case "/watch":
          return Response.json(await watchScenario(env, sessionId));
        case "/plain":
          return Response.json(await plainFetch(env));
        case "/json":
          return Response.json(await jsonFormat(env));
        case "/outbox":
          return Response.json(await outboxScenario(env, sessionId));
        default:
          return new Response("no such scenario", { status: 404 });
      }
    } catch (error) {
      // Hand the failure to the test instead of workerd's generic 500 page.
      return Response.json(report(error), { status: 500 });
    }
  },
};
