/**
 * Reads a snakepit v0.13 worker's telemetry: the bridge, as the worker's
 * host, opens the worker's `StreamTelemetry` (a bidirectional stream it
 * calls on the WORKER), sends the control messages v0.13's host sends (a
 * `TelemetryToggle` with enabled = true first, then any sampling or filter
 * settings), and turns each event into prom-client metrics and a log line.
 * A stream that ends or fails is opened again after a backoff, until
 * {@link TelemetryReader.close}.
 *
 * Workers choose event names freely (any Python code may emit any name), so
 * metric labels are bounded: the worker label is the id the pool gave it,
 * and each reader gives its own series to at most `maxEventNames` distinct
 * event names; the rest are counted under `"(other)"`, malformed names
 * under `"(invalid)"`. close() removes the reader's series, so workers that
 * come and go do not pile up series either.
 */
import { create } from "@bufbuild/protobuf";
import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import {
  BridgeService,
  type TelemetryControl,
  TelemetryControlSchema,
  type TelemetryEvent,
} from "../../gen/snakepit/bridge/bridge_pb.js";
import { clip } from "../common/message-text.js";
import { delay, type ServerTimers, systemTimers } from "../common/timers.js";
import { createKeyedLogSampler } from "../observability/log-sampler.js";
import type { Logger } from "../observability/logger.js";
import type { MetricsRegistry } from "../observability/metrics.js";
import { parseWorkerAddress } from "../tools/worker-address.js";

/** What the host tells the worker about its telemetry (sent at once and after each reconnect). */
export interface TelemetrySettings {
  /** Whether the worker sends events at all (default true). */
  readonly enabled?: boolean;
  /** The fraction of events sent, 0 to 1, for events matching `patterns` (glob, e.g. "python.*"). */
  readonly sampling?: { readonly rate: number; readonly patterns?: readonly string[] };
  /** Which events are sent, by glob pattern of the dotted name; deny wins; empty allow = all. */
  readonly filter?: { readonly allow?: readonly string[]; readonly deny?: readonly string[] };
}

/** Options of {@link createTelemetryReader}. */
export interface TelemetryReaderOptions {
  /** The worker's gRPC address: `host:port` or `http://host:port`. */
  readonly address: string;
  /** Names the worker in metrics and logs: the pool's id for it (a bounded set). */
  readonly workerId: string;
  readonly metrics: MetricsRegistry;
  readonly logger: Logger;
  readonly settings?: TelemetrySettings;
  /** Distinct event names given series of their own (default 64). */
  readonly maxEventNames?: number;
  /** First wait before opening the stream again (default 250 ms); doubles up to `maxBackoffMs`. */
  readonly initialBackoffMs?: number;
  /** Longest wait between attempts (default 30 s). */
  readonly maxBackoffMs?: number;
  /** Largest event message read (default 64 KiB); a bigger one ends the stream. */
  readonly readMaxBytes?: number;
  /** Paces the reconnections and the log samplers' windows (default: Node's timers). */
  readonly timers?: ServerTimers;
}

/** A running reader; see the module comment. */
export interface TelemetryReader {
  /** Whether the stream is open now (the worker answered its headers). */
  readonly connected: boolean;
  /** Events read since the reader started. */
  readonly events: number;
  /**
   * Changes the settings: sent on the open stream now and after every
   * reconnect. Fields left out keep their value.
   */
  update(settings: TelemetrySettings): void;
  /** Ends the stream, stops reconnecting and removes the reader's metric series. */
  close(): Promise<void>;
}

const OTHER = "(other)";
const INVALID = "(invalid)";
/** A part of an event name: what v0.13's own names use (`python`, `call`, `result_size`). */
const NAME_PART = /^[A-Za-z0-9_-]{1,48}$/;
const MAX_NAME_PARTS = 8;
/** Fields of a log line taken from an event, at most, and their text's length. */
const MAX_LOGGED_FIELDS = 16;
const MAX_LOGGED_TEXT = 200;
/** Seconds: a tool call's phases take from microseconds to minutes. */
const durationBuckets = [
  0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300,
];

/**
 * Starts reading a worker's telemetry.
 *
 * @example
 * const reader = createTelemetryReader({
 *   address: "127.0.0.1:50100",
 *   workerId: "worker-1",
 *   metrics,
 *   logger,
 *   settings: { filter: { deny: ["debug.*"] } },
 * });
 * // … when the worker goes away:
 * await reader.close();
 *
 * @throws ConnectError with `Code.InvalidArgument` for a malformed address.
 */
export function createTelemetryReader(options: TelemetryReaderOptions): TelemetryReader {
  const { workerId, logger } = options;
  const address = parseWorkerAddress(options.address);
  const maxEventNames = options.maxEventNames ?? 64;
  const initialBackoffMs = options.initialBackoffMs ?? 250;
  const maxBackoffMs = options.maxBackoffMs ?? 30_000;
  const timers = options.timers ?? systemTimers;

  const eventsTotal = options.metrics.counter(
    "bridge_worker_telemetry_events_total",
    "Telemetry events read from snakepit workers, by worker and event name ((other) past the per-worker cap of names, (invalid) for malformed ones).",
    ["worker", "event"],
  );
  const durations = options.metrics.histogram(
    "bridge_worker_telemetry_event_duration_seconds",
    "The duration measurement (nanoseconds on the wire) of snakepit workers' telemetry events, by worker and event name.",
    ["worker", "event"],
    durationBuckets,
  );
  const up = options.metrics.gauge(
    "bridge_worker_telemetry_stream_up",
    "Whether the telemetry stream of a snakepit worker is open (1) or being reopened (0).",
    ["worker"],
  );
  const reconnects = options.metrics.counter(
    "bridge_worker_telemetry_reconnects_total",
    "Times the telemetry stream of a snakepit worker was opened again after it ended or failed.",
    ["worker"],
  );
  // A worker emitting exceptions in a loop writes one line per window, not one per event.
  const exceptions = createKeyedLogSampler(logger, {
    level: "warn",
    msg: "worker telemetry exception event",
    timers,
  });
  const streamFailures = createKeyedLogSampler(logger, {
    level: "warn",
    msg: "worker telemetry stream failed; reopening",
    timers,
  });

  const manager = new Http2SessionManager(address.url, {
    // An idle stream (no events) on a dead connection is found by PING.
    pingIntervalMs: 15_000,
  });
  const client: Client<typeof BridgeService> = createClient(
    BridgeService,
    createGrpcTransport({
      baseUrl: address.url,
      sessionManager: manager,
      readMaxBytes: options.readMaxBytes ?? 65_536,
    }),
  );

  let settings: TelemetrySettings = { enabled: true, ...options.settings };
  const names = new Set<string>();
  let events = 0;
  let connected = false;
  let closed = false;
  const stop = new AbortController();
  /** Sends a control message on the open stream; undefined between streams. */
  let sendControl: ((control: TelemetryControl) => void) | undefined;

  up.set({ worker: workerId }, 0);

  const eventLabel = (parts: readonly string[]): string => {
    if (parts.length === 0 || parts.length > MAX_NAME_PARTS) return INVALID;
    if (!parts.every((p) => NAME_PART.test(p))) return INVALID;
    const name = parts.join(".");
    if (names.has(name)) return name;
    if (names.size >= maxEventNames) return OTHER;
    names.add(name);
    return name;
  };

  const record = (event: TelemetryEvent) => {
    events++;
    const name = eventLabel(event.eventParts);
    const labels = { worker: workerId, event: name };
    eventsTotal.inc(labels);
    const duration = event.measurements.duration?.value;
    if (duration !== undefined && duration.case !== "stringValue") {
      const ns = Number(duration.value);
      if (Number.isFinite(ns) && ns >= 0) durations.observe(labels, ns / 1e9);
    }
    const exception = name.endsWith(".exception");
    if (!exception && !logger.isLevelEnabled("debug")) return;
    const fields = {
      worker: workerId,
      event: name === INVALID ? clip(event.eventParts.join("."), 100) : name,
      ...(event.correlationId === "" ? {} : { correlation_id: clip(event.correlationId, 128) }),
      measurements: loggable(
        Object.entries(event.measurements).map(([k, v]) => [k, v.value.value]),
      ),
      metadata: loggable(Object.entries(event.metadata)),
      timestamp_ns: event.timestampNs.toString(),
    };
    if (exception) exceptions.report({ worker: workerId, event: name }, fields);
    else logger.debug("worker telemetry event", fields);
  };

  /** The control messages of the current settings, toggle first (as v0.13's host sends it). */
  const controlsOf = (s: TelemetrySettings): TelemetryControl[] => {
    const out = [
      create(TelemetryControlSchema, {
        control: { case: "toggle", value: { enabled: s.enabled ?? true } },
      }),
    ];
    if (s.sampling !== undefined) {
      out.push(
        create(TelemetryControlSchema, {
          control: {
            case: "sampling",
            value: {
              samplingRate: Math.min(1, Math.max(0, s.sampling.rate)),
              eventPatterns: [...(s.sampling.patterns ?? [])],
            },
          },
        }),
      );
    }
    if (s.filter !== undefined) {
      out.push(
        create(TelemetryControlSchema, {
          control: {
            case: "filter",
            value: { allow: [...(s.filter.allow ?? [])], deny: [...(s.filter.deny ?? [])] },
          },
        }),
      );
    }
    return out;
  };

  /** One stream, from opening to its end; resolves with whether it was ever open. */
  const readOnce = async (): Promise<boolean> => {
    const attempt = new AbortController();
    const onStop = () => attempt.abort();
    stop.signal.addEventListener("abort", onStop, { once: true });
    const pending: TelemetryControl[] = controlsOf(settings);
    let wake: (() => void) | undefined;
    sendControl = (control) => {
      pending.push(control);
      wake?.();
    };
    // The request side: control messages as they come, open until the attempt ends.
    async function* controls(): AsyncGenerator<TelemetryControl> {
      while (!attempt.signal.aborted) {
        const next = pending.shift();
        if (next !== undefined) {
          yield next;
          continue;
        }
        await new Promise<void>((resolve) => {
          wake = resolve;
          attempt.signal.addEventListener("abort", () => resolve(), { once: true });
        });
        wake = undefined;
      }
    }
    let opened = false;
    try {
      for await (const event of client.streamTelemetry(controls(), {
        signal: attempt.signal,
        onHeader: () => {
          opened = true;
          connected = true;
          up.set({ worker: workerId }, 1);
        },
      })) {
        record(event);
      }
      if (!stop.signal.aborted) {
        logger.info("worker telemetry stream ended; reopening", { worker: workerId });
      }
    } catch (e) {
      const err = ConnectError.from(e);
      if (err.code === Code.Unimplemented && !opened) {
        // A worker without telemetry (snakepit v0.4.3, or one of its own):
        // nothing to read, and asking again would not change that.
        unsupported = true;
      } else if (!stop.signal.aborted) {
        streamFailures.report(
          { worker: workerId, code: Code[err.code] },
          { address: address.display, error: clip(err.rawMessage, 300) },
        );
      }
    } finally {
      sendControl = undefined;
      connected = false;
      if (!closed) up.set({ worker: workerId }, 0);
      attempt.abort();
      stop.signal.removeEventListener("abort", onStop);
    }
    return opened;
  };

  // A reader waiting to reconnect must not keep a stopping process alive.
  const sleep = (ms: number) => delay(timers, ms, { signal: stop.signal, unref: true });

  let unsupported = false;
  const loop = (async () => {
    let backoff = initialBackoffMs;
    for (let first = true; !stop.signal.aborted; first = false) {
      if (!first) reconnects.inc({ worker: workerId });
      const opened = await readOnce();
      if (stop.signal.aborted) break;
      if (unsupported) {
        logger.info("worker has no telemetry stream (StreamTelemetry is UNIMPLEMENTED); not read", {
          worker: workerId,
        });
        break;
      }
      // A stream that opened starts the backoff over; failures to open double it.
      backoff = opened ? initialBackoffMs : Math.min(maxBackoffMs, backoff * 2);
      // ±20 % so that workers restarted together do not reconnect in step.
      await sleep(backoff * (0.8 + Math.random() * 0.4));
    }
  })();

  return {
    get connected() {
      return connected;
    },
    get events() {
      return events;
    },
    update(next) {
      settings = { ...settings, ...next };
      if (sendControl === undefined) return;
      const send = sendControl;
      // The toggle is only resent when it is what changed.
      for (const control of controlsOf(settings)) {
        const changed =
          (control.control.case === "toggle" && next.enabled !== undefined) ||
          (control.control.case === "sampling" && next.sampling !== undefined) ||
          (control.control.case === "filter" && next.filter !== undefined);
        if (changed) send(control);
      }
    },
    async close() {
      if (closed) return loop;
      closed = true;
      stop.abort();
      await loop;
      manager.abort();
      up.remove({ worker: workerId });
      reconnects.remove({ worker: workerId });
      for (const event of [...names, OTHER, INVALID]) {
        eventsTotal.remove({ worker: workerId, event });
        durations.remove({ worker: workerId, event });
      }
    },
  };
}

/** Up to {@link MAX_LOGGED_FIELDS} entries, texts clipped: a log line's share of an event. */
function loggable(entries: [string, unknown][]): Record<string, string | number> {
  // fromEntries: a worker's key "__proto__" stays a plain field.
  return Object.fromEntries(
    entries
      .slice(0, MAX_LOGGED_FIELDS)
      .map(([k, v]) => [
        clip(k, 48),
        typeof v === "bigint"
          ? Number(v)
          : typeof v === "number"
            ? v
            : clip(String(v), MAX_LOGGED_TEXT),
      ]),
  );
}
