/**
 * A tiny Prometheus registry (text exposition format 0.0.4) and the RPC
 * metrics interceptor.
 *
 * Self-contained rather than prom-client: the server needs counters, gauges
 * and fixed-bucket histograms with labels, nothing more, and a dependency for
 * that would be most of the server's install size.
 */
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";

/** Content-Type of {@link MetricsRegistry.render}'s output. */
export const prometheusContentType = "text/plain; version=0.0.4; charset=utf-8";

/** Label values keyed by the metric's declared label names. */
export type Labels<L extends string> = Readonly<Record<L, string>>;

/** Arguments of `inc`/`dec`: an unlabelled metric takes no labels, a labelled one requires them. */
export type IncArgs<L extends string> = [L] extends [never]
  ? [value?: number]
  : [labels: Labels<L>, value?: number];

/** Arguments of `set`/`observe`: the value, preceded by labels for a labelled metric. */
export type ValueArgs<L extends string> = [L] extends [never]
  ? [value: number]
  : [labels: Labels<L>, value: number];

/** A monotonically increasing count, e.g. `bridge_rpc_calls_total`. */
export interface Counter<L extends string = never> {
  /** Add `value` (default 1, never negative). */
  inc(...args: IncArgs<L>): void;
}

/** A value that goes up and down, e.g. the number of open sessions. */
export interface Gauge<L extends string = never> {
  set(...args: ValueArgs<L>): void;
  inc(...args: IncArgs<L>): void;
  dec(...args: IncArgs<L>): void;
}

/** A distribution over fixed buckets, e.g. RPC latency in seconds. */
export interface Histogram<L extends string = never> {
  observe(...args: ValueArgs<L>): void;
}

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
 * Holds metrics and renders them for `GET /metrics`.
 *
 * Declaring a metric again with the same name, type, help and labels returns
 * the existing one, so code may declare where it records; any difference
 * throws, because two definitions under one name would expose nonsense.
 * Names match `[a-zA-Z_:][a-zA-Z0-9_:]*`, label names `[a-zA-Z_][a-zA-Z0-9_]*`
 * (no leading `__`; `le` is reserved for histograms).
 */
export interface MetricsRegistry {
  /** A counter, e.g. `counter("bridge_tool_executions_total", "…", ["tool", "outcome"])`. */
  counter<L extends string = never>(
    name: string,
    help: string,
    labelNames?: readonly L[],
  ): Counter<L>;
  /**
   * A gauge read at scrape time: right for sizes something else already keeps
   * (sessions, variables, watchers). It cannot also be `set`.
   */
  gauge(name: string, help: string, collect: () => number): Gauge;
  /**
   * A gauge kept up to date with `set`/`inc`/`dec`, or, with `collect`, one
   * whose labelled samples are read at scrape time.
   */
  gauge<L extends string = never>(
    name: string,
    help: string,
    labelNames?: readonly L[],
    collect?: () => Iterable<GaugeSample<L>>,
  ): Gauge<L>;
  /** A histogram; `buckets` are finite, strictly increasing upper bounds (default {@link defaultBuckets}). */
  histogram<L extends string = never>(
    name: string,
    help: string,
    labelNames?: readonly L[],
    buckets?: readonly number[],
  ): Histogram<L>;
  /** Every metric in declaration order, in text exposition format 0.0.4. */
  render(): string;
}

interface Family {
  /** Identity of the declaration, compared when the name is declared again. */
  readonly signature: string;
  readonly metric: unknown;
  render(out: string[]): void;
}

const metricNamePattern = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const labelNamePattern = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/**
 * Create an empty registry.
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
export function createMetrics(): MetricsRegistry {
  const families = new Map<string, Family>();

  function declare<M>(
    type: string,
    name: string,
    help: string,
    labelNames: readonly string[],
    extra: string,
    build: (series: SeriesIndex, header: string) => { metric: M; render(out: string[]): void },
  ): M {
    const signature = JSON.stringify([type, help, labelNames, extra]);
    const existing = families.get(name);
    if (existing !== undefined) {
      if (existing.signature !== signature) {
        throw new Error(
          `metric "${name}" is already declared with a different type, help, labels or buckets`,
        );
      }
      return existing.metric as M;
    }
    if (!metricNamePattern.test(name)) {
      throw new Error(`metric name "${name}" is invalid: use [a-zA-Z_:][a-zA-Z0-9_:]*`);
    }
    for (const label of labelNames) {
      if (
        !labelNamePattern.test(label) ||
        label.startsWith("__") ||
        (type === "histogram" && label === "le")
      ) {
        throw new Error(
          `metric "${name}": label name "${label}" is invalid or reserved: use [a-zA-Z_][a-zA-Z0-9_]* without a leading "__"`,
        );
      }
    }
    if (new Set(labelNames).size !== labelNames.length) {
      throw new Error(`metric "${name}": label names repeat`);
    }
    const header = `# HELP ${name} ${escapeHelp(help)}\n# TYPE ${name} ${type}`;
    const { metric, render } = build(createSeriesIndex(name, labelNames), header);
    families.set(name, { signature, metric, render });
    return metric;
  }

  function counter<L extends string = never>(
    name: string,
    help: string,
    labelNames: readonly L[] = [],
  ): Counter<L> {
    return declare("counter", name, help, labelNames, "", (series, header) => {
      const values = new Map<string, number>();
      return {
        render(out) {
          out.push(header);
          renderSimple(out, name, series, values);
        },
        metric: {
          inc(...args: IncArgs<L>) {
            const [key, value] = series.incArgs(args as unknown[]);
            if (value < 0) throw new Error(`counter "${name}" cannot decrease (inc by ${value})`);
            values.set(key, (values.get(key) ?? 0) + value);
          },
        },
      };
    });
  }

  function gauge<L extends string = never>(
    name: string,
    help: string,
    labelNamesOrCollect?: readonly L[] | (() => number),
    collectSamples?: () => Iterable<GaugeSample<L>>,
  ): Gauge<L> {
    const collect = typeof labelNamesOrCollect === "function" ? labelNamesOrCollect : undefined;
    const labelNames = typeof labelNamesOrCollect === "function" ? [] : (labelNamesOrCollect ?? []);
    const collected = collect !== undefined || collectSamples !== undefined;
    return declare(
      "gauge",
      name,
      help,
      labelNames,
      collected ? "collected" : "",
      (series, header) => {
        const values = new Map<string, number>();
        const assertSettable = () => {
          if (collected) {
            throw new Error(`gauge "${name}" is read by its collect callback; it cannot be set`);
          }
        };
        const add = (args: unknown[], sign: 1 | -1) => {
          assertSettable();
          const [key, value] = series.incArgs(args);
          values.set(key, (values.get(key) ?? 0) + sign * value);
        };
        return {
          render(out) {
            out.push(header);
            if (collect !== undefined) {
              out.push(`${name} ${formatValue(collect())}`);
            } else if (collectSamples !== undefined) {
              for (const sample of collectSamples()) {
                const key = series.key(sample.labels);
                out.push(`${name}${series.labelText(key)} ${formatValue(sample.value)}`);
              }
            } else {
              renderSimple(out, name, series, values);
            }
          },
          metric: {
            set(...args: ValueArgs<L>) {
              assertSettable();
              const [key, value] = series.valueArgs(args as unknown[]);
              values.set(key, value);
            },
            inc: (...args: IncArgs<L>) => add(args as unknown[], 1),
            dec: (...args: IncArgs<L>) => add(args as unknown[], -1),
          },
        };
      },
    );
  }

  function histogram<L extends string = never>(
    name: string,
    help: string,
    labelNames: readonly L[] = [],
    buckets: readonly number[] = defaultBuckets,
  ): Histogram<L> {
    if (
      buckets.length === 0 ||
      buckets.some((b, i) => !Number.isFinite(b) || (i > 0 && b <= (buckets[i - 1] as number)))
    ) {
      throw new Error(
        `histogram "${name}": buckets must be finite and strictly increasing, got [${buckets.join(", ")}]`,
      );
    }
    return declare("histogram", name, help, labelNames, buckets.join(","), (series, header) => {
      const bounds = buckets.map(formatValue);
      // Per series: non-cumulative count per bucket (last slot is +Inf), sum, count.
      const data = new Map<string, { counts: number[]; sum: number; count: number }>();
      return {
        render(out) {
          out.push(header);
          for (const [key, d] of data) {
            let cumulative = 0;
            for (let i = 0; i <= buckets.length; i++) {
              cumulative += d.counts[i] ?? 0;
              const le = `le="${i < buckets.length ? bounds[i] : "+Inf"}"`;
              out.push(`${name}_bucket${series.labelText(key, le)} ${cumulative}`);
            }
            out.push(`${name}_sum${series.labelText(key)} ${formatValue(d.sum)}`);
            out.push(`${name}_count${series.labelText(key)} ${d.count}`);
          }
        },
        metric: {
          observe(...args: ValueArgs<L>) {
            const [key, value] = series.valueArgs(args as unknown[]);
            let d = data.get(key);
            if (d === undefined) {
              d = { counts: new Array<number>(buckets.length + 1).fill(0), sum: 0, count: 0 };
              data.set(key, d);
            }
            let i = 0;
            while (i < buckets.length && value > (buckets[i] as number)) i++;
            d.counts[i] = (d.counts[i] ?? 0) + 1;
            d.sum += value;
            d.count++;
          },
        },
      };
    });
  }

  return {
    counter,
    gauge: gauge as MetricsRegistry["gauge"],
    histogram,
    render() {
      const out: string[] = [];
      for (const family of families.values()) family.render(out);
      return out.length === 0 ? "" : `${out.join("\n")}\n`;
    },
  };
}

interface SeriesIndex {
  readonly labelled: boolean;
  /** Canonical key of a label set; throws on missing or unknown labels. */
  key(labels: unknown): string;
  /** `{a="x",b="y"}` for a key, with extra pairs appended (histogram `le`). */
  labelText(key: string, extra?: string): string;
  incArgs(args: unknown[]): [key: string, value: number];
  valueArgs(args: unknown[]): [key: string, value: number];
}

// A series is identified by its label values in declaration order; the JSON
// array of them is the key, which cannot collide the way joined strings can.
function createSeriesIndex(name: string, labelNames: readonly string[]): SeriesIndex {
  const texts = new Map<string, string[]>();
  const key = (labels: unknown): string => {
    if (labelNames.length === 0) {
      if (labels !== undefined) throw new Error(`metric "${name}" has no labels`);
      return "[]";
    }
    if (typeof labels !== "object" || labels === null) {
      throw new Error(`metric "${name}" needs labels {${labelNames.join(", ")}}`);
    }
    const record = labels as Record<string, unknown>;
    for (const k of Object.keys(record)) {
      if (!labelNames.includes(k)) throw new Error(`metric "${name}" has no label "${k}"`);
    }
    const values = labelNames.map((l) => {
      const v = record[l];
      if (typeof v !== "string") throw new Error(`metric "${name}": label "${l}" must be a string`);
      return v;
    });
    const k = JSON.stringify(values);
    if (!texts.has(k)) {
      texts.set(
        k,
        values.map((v, i) => `${labelNames[i]}="${escapeLabelValue(v)}"`),
      );
    }
    return k;
  };
  const number = (v: unknown, what: string): number => {
    if (typeof v !== "number" || Number.isNaN(v)) {
      throw new Error(`metric "${name}": ${what} must be a number, got ${String(v)}`);
    }
    return v;
  };
  return {
    labelled: labelNames.length > 0,
    key,
    labelText(k, extra) {
      const pairs = [...(texts.get(k) ?? []), ...(extra === undefined ? [] : [extra])];
      return pairs.length === 0 ? "" : `{${pairs.join(",")}}`;
    },
    incArgs(args) {
      if (labelNames.length === 0) return [key(undefined), number(args[0] ?? 1, "value")];
      return [key(args[0]), number(args[1] ?? 1, "value")];
    },
    valueArgs(args) {
      if (labelNames.length === 0) return [key(undefined), number(args[0], "value")];
      return [key(args[0]), number(args[1], "value")];
    },
  };
}

function renderSimple(
  out: string[],
  name: string,
  series: SeriesIndex,
  values: Map<string, number>,
): void {
  // An unlabelled metric is always exposed (as 0 before its first update), so
  // dashboards and alerts see the series from the first scrape.
  if (values.size === 0 && !series.labelled) {
    out.push(`${name} 0`);
    return;
  }
  for (const [key, value] of values) {
    out.push(`${name}${series.labelText(key)} ${formatValue(value)}`);
  }
}

function formatValue(v: number): string {
  if (v === Number.POSITIVE_INFINITY) return "+Inf";
  if (v === Number.NEGATIVE_INFINITY) return "-Inf";
  if (Number.isNaN(v)) return "NaN";
  return String(v);
}

function escapeHelp(s: string): string {
  return s.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

function escapeLabelValue(s: string): string {
  return s.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
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

/**
 * Records one ended call in the series of {@link createMetricsInterceptor},
 * for RPCs served outside connect-node (the WatchVariables fan-out path).
 */
export function createRpcRecorder(
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
