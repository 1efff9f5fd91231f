/**
 * The telemetry reader against a real, stock snakepit v0.13.0 worker (see
 * test/support/snakepit-v013.ts), whose showcase tool `telemetry_demo`
 * emits four events per call; a bridge is the worker's host. The worker's
 * tests are skipped, saying why, when snakepit's code is not here.
 */
import net from "node:net";
import { type Client, Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type RunningBridge, startBridge } from "../../../test/support/bridge.js";
import { thrownBy } from "../../../test/support/errors.js";
import {
  prepareV013Tree,
  startV013Worker,
  type V013Tree,
  type V013Worker,
  v013Unavailable,
} from "../../../test/support/snakepit-v013.js";
import { startTcpProxy } from "../../../test/support/tcp-proxy.js";
import { until } from "../../../test/support/wait.js";
import { BridgeService } from "../../gen/snakepit/bridge/bridge_pb.js";
import { encodeJsonAny } from "../../values/index.js";
import { createLogger } from "../observability/logger.js";
import { createMetrics, type MetricsRegistry } from "../observability/metrics.js";
import { createTelemetryReader, type TelemetryReader } from "./telemetry-reader.js";

const unavailable = v013Unavailable();

/** A fresh registry, logger and log capture per test. */
function observed() {
  const metrics = createMetrics({ processMetrics: false });
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({
    level: "debug",
    sink: { write: (line: string) => lines.push(JSON.parse(line)) },
  });
  return { metrics, lines, logger };
}

/** The value of a series (a histogram's by its `_count` or `_sum` name), 0 when it has none. */
async function seriesValue(
  metrics: MetricsRegistry,
  name: string,
  labels: Record<string, string>,
): Promise<number> {
  const base = name.replace(/_(count|sum)$/, "");
  const metric = metrics.registry.getSingleMetric(name) ?? metrics.registry.getSingleMetric(base);
  if (metric === undefined) return 0;
  const values = (await metric.get()).values as {
    value: number;
    labels: Record<string, string | number>;
    metricName?: string;
  }[];
  const match = values.find(
    (v) =>
      Object.entries(labels).every(([k, l]) => v.labels[k] === l) &&
      (v.metricName === undefined || v.metricName === name),
  );
  return match?.value ?? 0;
}

/** Every label value of `label` in a metric's series. */
async function labelValues(
  metrics: MetricsRegistry,
  name: string,
  label: string,
): Promise<string[]> {
  const metric = metrics.registry.getSingleMetric(name);
  if (metric === undefined) return [];
  return (await metric.get()).values.map((v) => String(v.labels[label]));
}

const readers: TelemetryReader[] = [];
afterEach(async () => {
  await Promise.all(readers.splice(0).map((r) => r.close()));
});
const track = (reader: TelemetryReader) => {
  readers.push(reader);
  return reader;
};

describe("createTelemetryReader without a worker", () => {
  it("refuses a malformed address with INVALID_ARGUMENT", () => {
    const { metrics, logger } = observed();
    const e = thrownBy(
      () => createTelemetryReader({ address: "ftp://x:1", workerId: "w", metrics, logger }),
      Code.InvalidArgument,
    );
    expect(e.rawMessage).toContain("has a scheme other than http://");
  });

  it("keeps trying a worker that is not there, and close() stops it and removes its series", async () => {
    const closedPort = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, "127.0.0.1", () => {
        const { port } = s.address() as net.AddressInfo;
        s.close(() => resolve(port));
      });
    });
    const { metrics, logger, lines } = observed();
    const reader = createTelemetryReader({
      address: `127.0.0.1:${closedPort}`,
      workerId: "absent",
      metrics,
      logger,
      initialBackoffMs: 5,
      maxBackoffMs: 20,
    });
    await until(
      async () =>
        (await seriesValue(metrics, "bridge_worker_telemetry_reconnects_total", {
          worker: "absent",
        })) >= 3,
      "three attempts",
    );
    expect(reader.connected).toBe(false);
    expect(
      await seriesValue(metrics, "bridge_worker_telemetry_stream_up", { worker: "absent" }),
    ).toBe(0);
    // Repeated failures are sampled: one line per window, not one per attempt.
    const attempts = await seriesValue(metrics, "bridge_worker_telemetry_reconnects_total", {
      worker: "absent",
    });
    const failures = lines.filter((l) => l.msg === "worker telemetry stream failed; reopening");
    expect(failures.length).toBeGreaterThanOrEqual(1);
    expect(failures.length).toBeLessThan(attempts);
    expect(failures[0]).toMatchObject({ worker: "absent", code: "Unavailable" });
    await reader.close();
    expect(await labelValues(metrics, "bridge_worker_telemetry_stream_up", "worker")).toEqual([]);
    expect(
      await labelValues(metrics, "bridge_worker_telemetry_reconnects_total", "worker"),
    ).toEqual([]);
  });
});

describe.skipIf(unavailable !== undefined)(
  `createTelemetryReader with a stock snakepit v0.13.0 worker${unavailable === undefined ? "" : ` (skipped: ${unavailable})`}`,
  () => {
    let bridge: RunningBridge;
    let tree: V013Tree;
    let worker: V013Worker;
    let workerClient: Client<typeof BridgeService>;
    let sessionId: string;

    beforeAll(async () => {
      bridge = await startBridge();
      tree = await prepareV013Tree();
      worker = await startV013Worker(tree, new URL(bridge.workerUrl).host);
      workerClient = createClient(
        BridgeService,
        createGrpcTransport({ baseUrl: `http://${worker.address}` }),
      );
      ({ sessionId } = await bridge.client().initializeSession({}));
    }, 120_000);

    afterAll(async () => {
      await worker?.stop();
      await bridge?.stop();
      await tree?.remove();
    });

    /** Runs the showcase's telemetry_demo on the worker: four events carrying `correlationId`. */
    async function demo(correlationId: string): Promise<void> {
      const response = await workerClient.executeTool(
        {
          sessionId,
          toolName: "telemetry_demo",
          // Workers read raw JSON parameters.
          parameters: { delay_ms: encodeJsonAny(2, "raw-json") },
        },
        { headers: { "x-snakepit-correlation-id": correlationId } },
      );
      expect(response.success, response.errorMessage).toBe(true);
    }

    /** The events the reader logged for one call, by name, in order. */
    const eventsOf = (lines: Record<string, unknown>[], correlationId: string) =>
      lines
        .filter((l) => l.msg === "worker telemetry event" && l.correlation_id === correlationId)
        .map((l) => l.event);

    const everything = { filter: { allow: [], deny: [] } };

    it("turns a worker's events into metrics and log lines", async () => {
      const { metrics, logger, lines } = observed();
      const reader = track(
        createTelemetryReader({
          address: worker.address,
          workerId: "w1",
          metrics,
          logger,
          settings: everything,
        }),
      );
      await until(() => reader.connected, "the stream to open");
      expect(
        await seriesValue(metrics, "bridge_worker_telemetry_stream_up", { worker: "w1" }),
      ).toBe(1);
      await demo("cid-metrics");
      await until(
        () => eventsOf(lines, "cid-metrics").includes("tool.execution.stop"),
        "the call's last event",
      );
      expect(eventsOf(lines, "cid-metrics")).toEqual([
        "tool.execution.start",
        "tool.execution.start",
        "tool.result_size",
        "tool.execution.stop",
      ]);
      const count = (event: string) =>
        seriesValue(metrics, "bridge_worker_telemetry_events_total", { worker: "w1", event });
      expect(await count("tool.execution.start")).toBeGreaterThanOrEqual(2);
      expect(await count("tool.result_size")).toBeGreaterThanOrEqual(1);
      // The span's duration (nanoseconds on the wire) is a histogram in seconds.
      const labels = { worker: "w1", event: "tool.execution.stop" };
      expect(
        await seriesValue(metrics, "bridge_worker_telemetry_event_duration_seconds_count", labels),
      ).toBeGreaterThanOrEqual(1);
      const seconds = await seriesValue(
        metrics,
        "bridge_worker_telemetry_event_duration_seconds_sum",
        labels,
      );
      expect(seconds).toBeGreaterThanOrEqual(0.002);
      expect(seconds).toBeLessThan(30);
      const sizeLine = lines.find(
        (l) => l.event === "tool.result_size" && l.correlation_id === "cid-metrics",
      );
      expect(sizeLine).toMatchObject({
        level: "debug",
        worker: "w1",
        measurements: { bytes: 42 },
        metadata: { tool: "telemetry_demo" },
      });

      await reader.close();
      expect(reader.connected).toBe(false);
      const series = await metrics.render();
      expect(series).not.toContain('worker="w1"');
    });

    it("sends the host's control messages: a filter at once, a new one by update()", async () => {
      const { metrics, logger, lines } = observed();
      const reader = track(
        createTelemetryReader({
          address: worker.address,
          workerId: "w2",
          metrics,
          logger,
          settings: { filter: { deny: ["tool.result_size"] } },
        }),
      );
      await until(() => reader.connected, "the stream to open");
      // The filter went with the stream's first messages: no call sees it unset.
      await demo("cid-deny-1");
      await until(
        () => eventsOf(lines, "cid-deny-1").includes("tool.execution.stop"),
        "the call's last event",
      );
      expect(eventsOf(lines, "cid-deny-1")).not.toContain("tool.result_size");

      reader.update({ filter: { allow: ["tool.result_size"] } });
      // The update travels beside the calls: once a call shows it applied,
      // the next one must be filtered throughout.
      for (let n = 1, applied = false; !applied; n++) {
        if (n > 50) throw new Error("the new filter did not apply within 50 calls");
        const id = `cid-allow-${n}`;
        await demo(id);
        await until(
          () =>
            eventsOf(lines, id).some(
              (e) => e === "tool.result_size" || e === "tool.execution.stop",
            ),
          "the call's events",
        );
        applied = eventsOf(lines, id).includes("tool.result_size");
      }
      await demo("cid-allow-last");
      await until(
        () => eventsOf(lines, "cid-allow-last").length > 0,
        "the events the new filter lets through",
      );
      expect(eventsOf(lines, "cid-allow-last")).toEqual(["tool.result_size"]);
    });

    it("bounds the event label: names past the cap are counted as (other)", async () => {
      const { metrics, logger, lines } = observed();
      const reader = track(
        createTelemetryReader({
          address: worker.address,
          workerId: "w3",
          metrics,
          logger,
          settings: everything,
          maxEventNames: 1,
        }),
      );
      await until(() => reader.connected, "the stream to open");
      await demo("cid-cap");
      await until(() => eventsOf(lines, "cid-cap").length === 4, "the call's four events");
      const labels = await labelValues(metrics, "bridge_worker_telemetry_events_total", "event");
      expect(labels.filter((l) => l !== "(other)")).toHaveLength(1);
      expect(labels).toContain("(other)");
      expect(
        await seriesValue(metrics, "bridge_worker_telemetry_events_total", { event: "(other)" }),
      ).toBeGreaterThanOrEqual(2);
    });

    it("reopens the stream after the connection breaks, and reads on", async () => {
      const proxy = await startTcpProxy(worker.port);
      try {
        const { metrics, logger, lines } = observed();
        const reader = track(
          createTelemetryReader({
            address: `127.0.0.1:${proxy.port}`,
            workerId: "w4",
            metrics,
            logger,
            settings: everything,
            initialBackoffMs: 10,
            maxBackoffMs: 100,
          }),
        );
        await until(() => reader.connected, "the stream to open");
        proxy.cut();
        await until(() => !reader.connected, "the reader to see the break");
        expect(
          await seriesValue(metrics, "bridge_worker_telemetry_stream_up", { worker: "w4" }),
        ).toBe(0);
        await until(
          async () =>
            (await seriesValue(metrics, "bridge_worker_telemetry_reconnects_total", {
              worker: "w4",
            })) >= 2,
          "attempts while the connection is cut",
        );
        proxy.restore();
        await until(() => reader.connected, "the stream to reopen");
        await demo("cid-after-break");
        await until(
          () => eventsOf(lines, "cid-after-break").includes("tool.execution.stop"),
          "events after the reconnect",
        );
      } finally {
        await Promise.all(readers.splice(0).map((r) => r.close()));
        await proxy.close();
      }
    });
  },
);
