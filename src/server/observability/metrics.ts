/**
 * The bridge's metrics on prom-client, and the RPC metrics interceptor.
 *
 * Each bridge server has a registry of its own (never prom-client's global
 * one), so several bridges embedded in one process keep separate series;
 * its `/metrics` also carries prom-client's default process metrics
 * (event-loop lag, heap, GC, CPU, file descriptors).
 */
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

/** Label values keyed by the metric's declared label names. */
export type Labels<L extends string> = Readonly<Record<L, string>>;

/** One sample a labelled gauge's `collect` callback reports. */
export interface GaugeSample<L extends string> {
  readonly labels: Labels<L>;
  readonly value: number;
}

/**
 * Latency buckets in seconds: a loopback unary call costs a few hundred
 * microseconds, a slow tool call seconds.
 */
export const defaultBuckets: readonly number[] = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

/**
 * A bridge's metrics: a prom-client {@link Registry} and the declarations
 * the server makes on it.
 *
 * Declaring a metric again with the same name, type, help, labels and
 * buckets returns the existing one, so code may declare where it records;
 * any difference throws, because two definitions under one name would
 * expose nonsense. Names and label names are checked by prom-client.
 */
export interface MetricsRegistry {
  /** This bridge's prom-client registry, e.g. to merge into an embedder's with `Registry.merge`. */
  readonly registry: Registry;
  /** Content-Type of {@link MetricsRegistry.render}'s output, from the registry. */
  readonly contentType: string;
  /** A counter, e.g. `counter("bridge_tool_executions_total", "…", ["tool", "outcome"])`. */
  counter<L extends string = never>(
    name: string,
    help: string,
    labelNames?: readonly L[],
  ): Counter<L>;
  /**
   * A gauge read at scrape time: right for sizes something else already keeps
   * (sessions, variables, watchers).
   */
  gauge(name: string, help: string, collect: () => number): Gauge;
  /**
   * A gauge kept up to date with `set`/`inc`/`dec`, or, with `collect`, one
   * whose labelled samples are read at scrape time (replacing the last ones).
   */
  gauge<L extends string = never>(
    name: string,
    help: string,
    labelNames?: readonly L[],
    collect?: () => Iterable<GaugeSample<L>>,
  ): Gauge<L>;
  /** A histogram; `buckets` are upper bounds (default {@link defaultBuckets}). */
  histogram<L extends string = never>(
    name: string,
    help: string,
    labelNames?: readonly L[],
    buckets?: readonly number[],
  ): Histogram<L>;
  /**
   * Every metric in the text exposition format: this registry's in
   * declaration order, then the process metrics.
   */
  render(): Promise<string>;
}

/** Options of {@link createMetrics}. */
export interface MetricsOptions {
  /** Append prom-client's default process metrics to {@link MetricsRegistry.render} (default true). */
  readonly processMetrics?: boolean;
}

// The default process metrics describe the process, not a bridge, and each
// collection starts an event-loop delay monitor and a GC observer that
// prom-client never stops: one collection per process, made on first use
// and shared by every bridge in it, instead of one per bridge.
let processRegistry: Registry | undefined;

function processMetrics(): Registry {
  if (processRegistry === undefined) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

/**
 * Create an empty registry of its own (plus the shared process metrics).
 *
 * @example
 * ```ts
 * const metrics = createMetrics();
 * metrics.gauge("bridge_sessions", "Live sessions.", () => store.size);
 * metrics
 *   .counter("bridge_tool_executions_total", "Tool executions.", ["tool", "outcome"])
 *   .inc({ tool: "echo", outcome: "ok" });
 * ```
 */
export function createMetrics(options: MetricsOptions = {}): MetricsRegistry {
  const registry = new Registry();
  const process = options.processMetrics === false ? undefined : processMetrics();
  const declared = new Map<string, { signature: string; metric: unknown }>();

  function declare<M>(name: string, signature: unknown[], build: () => M): M {
    const key = JSON.stringify(signature);
    const existing = declared.get(name);
    if (existing !== undefined) {
      if (existing.signature !== key) {
        throw new Error(
          `metric "${name}" is already declared with a different type, help, labels or buckets`,
        );
      }
      return existing.metric as M;
    }
    const metric = build();
    declared.set(name, { signature: key, metric });
    return metric;
  }

  function gauge<L extends string = never>(
    name: string,
    help: string,
    labelNamesOrCollect?: readonly L[] | (() => number),
    collectSamples?: () => Iterable<GaugeSample<L>>,
  ): Gauge<L> {
    const collectOne = typeof labelNamesOrCollect === "function" ? labelNamesOrCollect : undefined;
    const labelNames = typeof labelNamesOrCollect === "function" ? [] : (labelNamesOrCollect ?? []);
    const collected = collectOne !== undefined || collectSamples !== undefined;
    return declare(name, ["gauge", help, labelNames, collected], () => {
      const g: Gauge<L> = new Gauge<L>({
        name,
        help,
        labelNames,
        registers: [registry],
        ...(collectOne !== undefined
          ? { collect: () => g.set(collectOne()) }
          : collectSamples !== undefined
            ? {
                collect: () => {
                  g.reset();
                  for (const s of collectSamples()) g.set(s.labels, s.value);
                },
              }
            : {}),
      });
      return g;
    });
  }

  return {
    registry,
    get contentType() {
      return registry.contentType;
    },
    counter: (name, help, labelNames = []) =>
      declare(
        name,
        ["counter", help, labelNames],
        () => new Counter({ name, help, labelNames, registers: [registry] }),
      ),
    gauge: gauge as MetricsRegistry["gauge"],
    histogram: (name, help, labelNames = [], buckets = defaultBuckets) =>
      declare(
        name,
        ["histogram", help, labelNames, buckets],
        () =>
          new Histogram({ name, help, labelNames, buckets: [...buckets], registers: [registry] }),
      ),
    async render() {
      const own = await registry.metrics();
      return process === undefined ? own : `${own}\n${await process.metrics()}`;
    },
  };
}

/**
 * The status code name used in metrics: "ok", or the Connect code in snake
 * case (`not_found`, `resource_exhausted`), the spelling the Connect protocol
 * puts on the wire.
 */
export function codeLabel(code: Code | undefined): string {
  if (code === undefined) return "ok";
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
}

/**
 * A server interceptor recording every call in `bridge_rpc_calls_total{rpc,code}`
 * and `bridge_rpc_duration_seconds{rpc}`.
 *
 * `rpc` is the method name (`Ping`, `WatchVariables`), the same whichever
 * protocol carried the call. Streaming calls are recorded when the response
 * stream ends, so the duration of a watch is its lifetime. Errors are counted
 * with the code the client receives: a thrown non-`ConnectError` is `internal`,
 * as connect-node reports it. Calls rejected before the implementation runs
 * (an unparsable or oversized unary request) never reach an interceptor and
 * are not counted.
 *
 * Declares both metrics in `registry`; a second interceptor on the same
 * registry records into the same series.
 */
export function createMetricsInterceptor(
  registry: MetricsRegistry,
  options: { buckets?: readonly number[] } = {},
): Interceptor {
  const recordCall = createRpcRecorder(registry, options);
  return (next) => async (req) => {
    const rpc = req.method.name;
    // A duration, on the monotonic clock: measured, never waited for.
    const start = performance.now();
    const record = (code: string) => recordCall(rpc, code, (performance.now() - start) / 1000);
    let res: Awaited<ReturnType<typeof next>>;
    try {
      res = await next(req);
    } catch (e) {
      record(codeLabel(serverCode(e)));
      throw e;
    }
    if (!res.stream) {
      record("ok");
      return res;
    }
    return { ...res, message: recordStream(res.message, req.signal, record) };
  };
}

/** Records one ended call in the series of {@link createMetricsInterceptor}. */
function createRpcRecorder(
  registry: MetricsRegistry,
  options: { buckets?: readonly number[] } = {},
): (rpc: string, code: string, seconds: number) => void {
  const calls = registry.counter(
    "bridge_rpc_calls_total",
    "RPCs handled, by method and status code.",
    ["rpc", "code"],
  );
  const duration = registry.histogram(
    "bridge_rpc_duration_seconds",
    "RPC handling time in seconds, by method; streams are measured until they end.",
    ["rpc"],
    options.buckets,
  );
  return (rpc, code, seconds) => {
    calls.inc({ rpc, code });
    duration.observe({ rpc }, seconds);
  };
}

function serverCode(e: unknown): Code {
  return e instanceof ConnectError ? e.code : Code.Internal;
}

async function* recordStream<T>(
  messages: AsyncIterable<T>,
  signal: AbortSignal,
  record: (code: string) => void,
): AsyncGenerator<T> {
  // Stays "canceled" when the consumer stops early: the client went away.
  let code = "canceled";
  try {
    yield* messages;
    // A handler that returns because its signal fired (deadline, client gone)
    // did not succeed from the client's point of view.
    code = signal.aborted ? codeLabel(ConnectError.from(signal.reason).code) : "ok";
  } catch (e) {
    code = codeLabel(serverCode(e));
    throw e;
  } finally {
    record(code);
  }
}
