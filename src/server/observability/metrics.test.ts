import { create } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  createClient,
  createRouterTransport,
} from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { startBridge } from "../../../test/support/bridge.js";
import {
  BridgeService,
  PingResponseSchema,
  VariableUpdateSchema,
} from "../../gen/snakepit/bridge/bridge_pb.js";
import { codeLabel, createMetrics, createMetricsInterceptor } from "./metrics.js";

/** This registry's own metrics only: the shared process metrics vary from scrape to scrape. */
const own = () => createMetrics({ processMetrics: false });

describe("createMetrics", () => {
  it("renders counters in the Prometheus text format", async () => {
    const metrics = own();
    const runs = metrics.counter("bridge_tool_executions_total", "Tool executions.", [
      "tool",
      "outcome",
    ]);
    runs.inc({ tool: "echo", outcome: "ok" });
    runs.inc({ tool: "echo", outcome: "ok" }, 2);
    runs.inc({ tool: "fail", outcome: "error" });
    expect(await metrics.render()).toBe(
      [
        "# HELP bridge_tool_executions_total Tool executions.",
        "# TYPE bridge_tool_executions_total counter",
        'bridge_tool_executions_total{tool="echo",outcome="ok"} 3',
        'bridge_tool_executions_total{tool="fail",outcome="error"} 1',
        "",
      ].join("\n"),
    );
    expect(metrics.contentType).toBe("text/plain; version=0.0.4; charset=utf-8");
  });

  it("exposes an unlabelled counter as 0 before its first increment", async () => {
    const metrics = own();
    metrics.counter("restarts_total", "Restarts.");
    expect(await metrics.render()).toContain("\nrestarts_total 0\n");
    metrics.counter("restarts_total", "Restarts.").inc();
    expect(await metrics.render()).toContain("\nrestarts_total 1\n");
  });

  it("escapes help text and label values", async () => {
    const metrics = own();
    metrics.counter("x_total", "Back\\slash and\nnewline.", ["v"]).inc({ v: 'a\\b"c\nd' });
    expect(await metrics.render()).toBe(
      [
        "# HELP x_total Back\\\\slash and\\nnewline.",
        "# TYPE x_total counter",
        'x_total{v="a\\\\b\\"c\\nd"} 1',
        "",
      ].join("\n"),
    );
  });

  it("renders gauges that are set, and gauges read at scrape time", async () => {
    const metrics = own();
    let sessions = 3;
    metrics.gauge("bridge_sessions", "Live sessions.", () => sessions);
    const queue = metrics.gauge("queue_depth", "Queued items.", ["queue"]);
    queue.set({ queue: "a" }, 5);
    queue.inc({ queue: "a" });
    queue.dec({ queue: "b" }, 2);
    let kinds = [
      { labels: { kind: "x" }, value: 1.5 },
      { labels: { kind: "y" }, value: Number.POSITIVE_INFINITY },
    ];
    metrics.gauge("by_kind", "Per kind.", ["kind"], () => kinds);
    sessions = 4;
    const text = await metrics.render();
    expect(text).toContain("# TYPE bridge_sessions gauge\nbridge_sessions 4\n");
    expect(text).toContain('queue_depth{queue="a"} 6\nqueue_depth{queue="b"} -2\n');
    expect(text).toContain('by_kind{kind="x"} 1.5\nby_kind{kind="y"} +Inf\n');
    // Samples read at scrape time replace the previous ones: a label gone is gone.
    kinds = [{ labels: { kind: "x" }, value: 2 }];
    const next = await metrics.render();
    expect(next).toContain('by_kind{kind="x"} 2\n');
    expect(next).not.toContain('kind="y"');
  });

  it("renders histograms with cumulative buckets, sum and count", async () => {
    const metrics = own();
    const h = metrics.histogram("lat_seconds", "Latency.", ["rpc"], [0.1, 1]);
    h.observe({ rpc: "Ping" }, 0.05);
    h.observe({ rpc: "Ping" }, 0.1); // on a bound: counts in that bucket (le = less or equal)
    h.observe({ rpc: "Ping" }, 0.5);
    h.observe({ rpc: "Ping" }, 7);
    expect(await metrics.render()).toBe(
      [
        "# HELP lat_seconds Latency.",
        "# TYPE lat_seconds histogram",
        'lat_seconds_bucket{le="0.1",rpc="Ping"} 2',
        'lat_seconds_bucket{le="1",rpc="Ping"} 3',
        'lat_seconds_bucket{le="+Inf",rpc="Ping"} 4',
        'lat_seconds_sum{rpc="Ping"} 7.65',
        'lat_seconds_count{rpc="Ping"} 4',
        "",
      ].join("\n"),
    );
  });

  it("returns the same metric when it is declared again identically", async () => {
    const metrics = own();
    metrics.counter("a_total", "A.", ["k"]).inc({ k: "x" });
    metrics.counter("a_total", "A.", ["k"]).inc({ k: "x" });
    expect(await metrics.render()).toContain('a_total{k="x"} 2');
  });

  it("rejects conflicting and invalid declarations", () => {
    const metrics = own();
    metrics.counter("a_total", "A.", ["k"]);
    expect(() => metrics.counter("a_total", "A.", ["other"])).toThrow("already declared");
    expect(() => metrics.gauge("a_total", "A.", ["k"])).toThrow("already declared");
    expect(() => metrics.histogram("h", "H.", [], [1, 2])).not.toThrow();
    expect(() => metrics.histogram("h", "H.", [], [1, 3])).toThrow("already declared");
    expect(() => metrics.counter("bad-name", "B.")).toThrow("Invalid metric name");
    expect(() => metrics.counter("b_total", "B.", ["bad-label"])).toThrow("Invalid label name");
    expect(() => metrics.histogram("h2", "H.", ["le"])).toThrow("le is a reserved label");
  });

  it("rejects wrong labels and values at the call", () => {
    const metrics = own();
    const c = metrics.counter("a_total", "A.", ["k"]);
    const untyped = c as unknown as { inc(...args: unknown[]): void };
    expect(() => untyped.inc({ k: "x", extra: "y" })).toThrow('label "extra"');
    expect(() => c.inc({ k: "x" }, -1)).toThrow("not possible to decrease");
    expect(() => c.inc({ k: "x" }, Number.POSITIVE_INFINITY)).toThrow("not a valid number");
  });

  it("keeps each registry's series apart, as several bridges in one process need", async () => {
    const a = own();
    const b = own();
    a.counter("runs_total", "Runs.").inc(2);
    b.counter("runs_total", "Runs.").inc(5);
    expect(await a.render()).toContain("\nruns_total 2\n");
    expect(await b.render()).toContain("\nruns_total 5\n");
    expect(a.registry).not.toBe(b.registry);
  });

  it("adds the process metrics: event-loop lag, heap and GC", async () => {
    const metrics = createMetrics();
    metrics.counter("runs_total", "Runs.").inc();
    const text = await metrics.render();
    expect(text.indexOf("\nruns_total 1\n")).toBeLessThan(text.indexOf("# TYPE process_"));
    for (const name of [
      "nodejs_eventloop_lag_seconds",
      "nodejs_heap_size_used_bytes",
      "nodejs_gc_duration_seconds",
      "process_cpu_seconds_total",
      "process_resident_memory_bytes",
    ]) {
      expect(text).toMatch(new RegExp(`^# TYPE ${name} `, "m"));
    }
    // Shared by every registry of the process, collected once.
    expect(await createMetrics().render()).toMatch(/^# TYPE nodejs_eventloop_lag_seconds /m);
    expect(await own().render()).not.toContain("nodejs_");
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
    const metrics = own();
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
    const count = async (rpc: string, code: string) => {
      const m = new RegExp(`bridge_rpc_calls_total\\{rpc="${rpc}",code="${code}"\\} (\\d+)`).exec(
        await metrics.render(),
      );
      return m === null ? 0 : Number(m[1]);
    };
    const durations = async (rpc: string) => {
      const m = new RegExp(`bridge_rpc_duration_seconds_count\\{rpc="${rpc}"\\} (\\d+)`).exec(
        await metrics.render(),
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
    expect(await count("Ping", "ok")).toBe(2);
    expect(await count("Ping", "not_found")).toBe(1);
    expect(await count("Ping", "internal")).toBe(1);
    expect(await durations("Ping")).toBe(4);
  });

  it("records a server stream when it ends, not when it starts", async () => {
    const { client, count, durations, release } = setup();
    const received: string[] = [];
    const done = (async () => {
      for await (const update of client.watchVariables({ sessionId: "s" })) {
        received.push(update.variableId);
        if (received.length === 1) {
          expect(await count("WatchVariables", "ok")).toBe(0);
          release();
        }
      }
    })();
    await done;
    expect(received).toEqual(["a", "b"]);
    expect(await count("WatchVariables", "ok")).toBe(1);
    expect(await durations("WatchVariables")).toBe(1);
  });

  it("records the code a stream fails with", async () => {
    const { client, count } = setup();
    const consume = async () => {
      for await (const _ of client.watchVariables({ sessionId: "fail" })) {
        // drain
      }
    };
    await expect(consume()).rejects.toThrow("gone");
    expect(await count("WatchVariables", "failed_precondition")).toBe(1);
  });

  it("shares series when two interceptors use one registry", async () => {
    const metrics = own();
    const routes = (router: ConnectRouter) =>
      router.service(BridgeService, {
        ping: (req) => create(PingResponseSchema, { message: req.message }),
      });
    const clientThrough = () =>
      createClient(
        BridgeService,
        createRouterTransport(routes, {
          router: { interceptors: [createMetricsInterceptor(metrics)] },
        }),
      );
    const [first, second] = [clientThrough(), clientThrough()];
    await first.ping({ message: "a" });
    await second.ping({ message: "b" });
    await second.ping({ message: "c" });
    const text = await metrics.render();
    // One series each, holding the calls of both: 1 + 2.
    expect(text.match(/^bridge_rpc_calls_total\{/gm)).toHaveLength(1);
    expect(text).toContain('\nbridge_rpc_calls_total{rpc="Ping",code="ok"} 3\n');
    expect(text).toContain('\nbridge_rpc_duration_seconds_count{rpc="Ping"} 3\n');
  });
});

describe("bridge servers in one process", () => {
  it("each serve their own series on their admin listener, with the process metrics", async () => {
    const [a, b] = await Promise.all([startBridge(), startBridge()]);
    try {
      await a.client().ping({ message: "1" });
      await a.client().ping({ message: "2" });
      await b.client().ping({ message: "3" });
      const scrape = async (url: string) => {
        const res = await fetch(`${url}/metrics`);
        expect(res.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
        return res.text();
      };
      const [textA, textB] = await Promise.all([scrape(a.adminUrl), scrape(b.adminUrl)]);
      expect(textA).toContain('\nbridge_rpc_calls_total{rpc="Ping",code="ok"} 2\n');
      expect(textB).toContain('\nbridge_rpc_calls_total{rpc="Ping",code="ok"} 1\n');
      for (const text of [textA, textB]) {
        expect(text).toMatch(/^nodejs_eventloop_lag_seconds \d/m);
        expect(text).toMatch(/^nodejs_heap_size_used_bytes \d/m);
      }
      expect(await a.server.metrics.render()).toContain(
        'bridge_rpc_calls_total{rpc="Ping",code="ok"} 2',
      );
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
  });
});
