import { create } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  createClient,
  createRouterTransport,
} from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import {
  BridgeService,
  PingResponseSchema,
  VariableUpdateSchema,
} from "../gen/snakepit/bridge/bridge_pb.js";
import { codeLabel, createMetrics, createMetricsInterceptor } from "./metrics.js";

describe("createMetrics", () => {
  it("renders counters in text format 0.0.4", () => {
    const metrics = createMetrics();
    const runs = metrics.counter("bridge_tool_executions_total", "Tool executions.", [
      "tool",
      "outcome",
    ]);
    runs.inc({ tool: "echo", outcome: "ok" });
    runs.inc({ tool: "echo", outcome: "ok" }, 2);
    runs.inc({ tool: "fail", outcome: "error" });
    expect(metrics.render()).toBe(
      [
        "# HELP bridge_tool_executions_total Tool executions.",
        "# TYPE bridge_tool_executions_total counter",
        'bridge_tool_executions_total{tool="echo",outcome="ok"} 3',
        'bridge_tool_executions_total{tool="fail",outcome="error"} 1',
        "",
      ].join("\n"),
    );
  });

  it("exposes an unlabelled counter as 0 before its first increment", () => {
    const metrics = createMetrics();
    metrics.counter("restarts_total", "Restarts.");
    expect(metrics.render()).toContain("\nrestarts_total 0\n");
    metrics.counter("restarts_total", "Restarts.").inc();
    expect(metrics.render()).toContain("\nrestarts_total 1\n");
  });

  it("escapes help text and label values", () => {
    const metrics = createMetrics();
    metrics.counter("x_total", 'Back\\slash and\nnewline "quoted".', ["v"]).inc({
      v: 'a\\b"c\nd',
    });
    expect(metrics.render()).toBe(
      [
        '# HELP x_total Back\\\\slash and\\nnewline "quoted".',
        "# TYPE x_total counter",
        'x_total{v="a\\\\b\\"c\\nd"} 1',
        "",
      ].join("\n"),
    );
  });

  it("renders gauges that are set, and gauges read at scrape time", () => {
    const metrics = createMetrics();
    let sessions = 3;
    metrics.gauge("bridge_sessions", "Live sessions.", () => sessions);
    const queue = metrics.gauge("queue_depth", "Queued items.", ["queue"]);
    queue.set({ queue: "a" }, 5);
    queue.inc({ queue: "a" });
    queue.dec({ queue: "b" }, 2);
    metrics.gauge("by_kind", "Per kind.", ["kind"], () => [
      { labels: { kind: "x" }, value: 1.5 },
      { labels: { kind: "y" }, value: Number.POSITIVE_INFINITY },
    ]);
    sessions = 4;
    expect(metrics.render()).toBe(
      [
        "# HELP bridge_sessions Live sessions.",
        "# TYPE bridge_sessions gauge",
        "bridge_sessions 4",
        "# HELP queue_depth Queued items.",
        "# TYPE queue_depth gauge",
        'queue_depth{queue="a"} 6',
        'queue_depth{queue="b"} -2',
        "# HELP by_kind Per kind.",
        "# TYPE by_kind gauge",
        'by_kind{kind="x"} 1.5',
        'by_kind{kind="y"} +Inf',
        "",
      ].join("\n"),
    );
    expect(() => metrics.gauge("bridge_sessions", "Live sessions.", () => 0).set(1)).toThrow(
      "cannot be set",
    );
  });

  it("renders histograms with cumulative buckets, sum and count", () => {
    const metrics = createMetrics();
    const h = metrics.histogram("lat_seconds", "Latency.", ["rpc"], [0.1, 1]);
    h.observe({ rpc: "Ping" }, 0.05);
    h.observe({ rpc: "Ping" }, 0.1); // on a bound: counts in that bucket (le = less or equal)
    h.observe({ rpc: "Ping" }, 0.5);
    h.observe({ rpc: "Ping" }, 7);
    expect(metrics.render()).toBe(
      [
        "# HELP lat_seconds Latency.",
        "# TYPE lat_seconds histogram",
        'lat_seconds_bucket{rpc="Ping",le="0.1"} 2',
        'lat_seconds_bucket{rpc="Ping",le="1"} 3',
        'lat_seconds_bucket{rpc="Ping",le="+Inf"} 4',
        'lat_seconds_sum{rpc="Ping"} 7.65',
        'lat_seconds_count{rpc="Ping"} 4',
        "",
      ].join("\n"),
    );
  });

  it("renders an unlabelled histogram", () => {
    const metrics = createMetrics();
    metrics.histogram("size_bytes", "Sizes.", [], [10]).observe(3);
    expect(metrics.render()).toContain(
      'size_bytes_bucket{le="10"} 1\nsize_bytes_bucket{le="+Inf"} 1\nsize_bytes_sum 3\nsize_bytes_count 1\n',
    );
  });

  it("returns the same metric when it is declared again identically", () => {
    const metrics = createMetrics();
    metrics.counter("a_total", "A.", ["k"]).inc({ k: "x" });
    metrics.counter("a_total", "A.", ["k"]).inc({ k: "x" });
    expect(metrics.render()).toContain('a_total{k="x"} 2');
  });

  it("rejects conflicting and invalid declarations", () => {
    const metrics = createMetrics();
    metrics.counter("a_total", "A.", ["k"]);
    expect(() => metrics.counter("a_total", "A.", ["other"])).toThrow("already declared");
    expect(() => metrics.gauge("a_total", "A.", ["k"])).toThrow("already declared");
    expect(() => metrics.counter("bad-name", "B.")).toThrow('metric name "bad-name" is invalid');
    expect(() => metrics.counter("b_total", "B.", ["__x"])).toThrow("invalid or reserved");
    expect(() => metrics.histogram("h", "H.", ["le"])).toThrow("invalid or reserved");
    expect(() => metrics.histogram("h2", "H.", [], [1, 1])).toThrow("strictly increasing");
    expect(() => metrics.counter("c_total", "C.", ["k", "k"])).toThrow("label names repeat");
  });

  it("rejects wrong labels and values at the call", () => {
    const metrics = createMetrics();
    const c = metrics.counter("a_total", "A.", ["k"]);
    const untyped = c as unknown as { inc(...args: unknown[]): void };
    expect(() => untyped.inc({ k: "x", extra: "y" })).toThrow('has no label "extra"');
    expect(() => untyped.inc({})).toThrow('label "k" must be a string');
    expect(() => untyped.inc()).toThrow("needs labels {k}");
    expect(() => c.inc({ k: "x" }, -1)).toThrow("cannot decrease");
    expect(() => metrics.histogram("h", "H.").observe(Number.NaN)).toThrow("must be a number");
  });
});

describe("codeLabel", () => {
  it("spells codes as the Connect protocol does", () => {
    expect(codeLabel(undefined)).toBe("ok");
    expect(codeLabel(Code.NotFound)).toBe("not_found");
    expect(codeLabel(Code.ResourceExhausted)).toBe("resource_exhausted");
    expect(codeLabel(Code.Canceled)).toBe("canceled");
    expect(codeLabel(Code.Unauthenticated)).toBe("unauthenticated");
  });
});

describe("createMetricsInterceptor", () => {
  function setup() {
    const metrics = createMetrics();
    const gate = Promise.withResolvers<void>();
    const routes = (router: ConnectRouter) =>
      router.service(BridgeService, {
        ping(req) {
          if (req.message === "missing") throw new ConnectError("no such thing", Code.NotFound);
          if (req.message === "bug") throw new Error("unexpected");
          return create(PingResponseSchema, { message: req.message });
        },
        async *watchVariables(req) {
          yield create(VariableUpdateSchema, { variableId: "a" });
          if (req.sessionId === "fail") throw new ConnectError("gone", Code.FailedPrecondition);
          await gate.promise;
          yield create(VariableUpdateSchema, { variableId: "b" });
        },
      });
    const transport = createRouterTransport(routes, {
      router: { interceptors: [createMetricsInterceptor(metrics)] },
    });
    const client = createClient(BridgeService, transport);
    const count = (rpc: string, code: string) => {
      const m = new RegExp(`bridge_rpc_calls_total\\{rpc="${rpc}",code="${code}"\\} (\\d+)`).exec(
        metrics.render(),
      );
      return m === null ? 0 : Number(m[1]);
    };
    const durations = (rpc: string) => {
      const m = new RegExp(`bridge_rpc_duration_seconds_count\\{rpc="${rpc}"\\} (\\d+)`).exec(
        metrics.render(),
      );
      return m === null ? 0 : Number(m[1]);
    };
    return { metrics, client, count, durations, release: () => gate.resolve() };
  }

  it("counts unary calls by method and code, and times them", async () => {
    const { client, count, durations } = setup();
    await client.ping({ message: "a" });
    await client.ping({ message: "b" });
    await expect(client.ping({ message: "missing" })).rejects.toThrow("no such thing");
    await expect(client.ping({ message: "bug" })).rejects.toThrow();
    expect(count("Ping", "ok")).toBe(2);
    expect(count("Ping", "not_found")).toBe(1);
    expect(count("Ping", "internal")).toBe(1);
    expect(durations("Ping")).toBe(4);
  });

  it("records a server stream when it ends, not when it starts", async () => {
    const { client, count, durations, release } = setup();
    const received: string[] = [];
    const done = (async () => {
      for await (const update of client.watchVariables({ sessionId: "s" })) {
        received.push(update.variableId);
        if (received.length === 1) {
          expect(count("WatchVariables", "ok")).toBe(0);
          release();
        }
      }
    })();
    await done;
    expect(received).toEqual(["a", "b"]);
    expect(count("WatchVariables", "ok")).toBe(1);
    expect(durations("WatchVariables")).toBe(1);
  });

  it("records the code a stream fails with", async () => {
    const { client, count } = setup();
    const consume = async () => {
      for await (const _ of client.watchVariables({ sessionId: "fail" })) {
        // drain
      }
    };
    await expect(consume()).rejects.toThrow("gone");
    expect(count("WatchVariables", "failed_precondition")).toBe(1);
  });

  it("shares series when two interceptors use one registry", async () => {
    const metrics = createMetrics();
    createMetricsInterceptor(metrics);
    expect(() => createMetricsInterceptor(metrics)).not.toThrow();
  });
});
