/**
 * Watch-stream load: opens many WatchVariables streams over one HTTP/2
 * connection with connect-node's gRPC client (a real client: every update
 * is decoded), and records for each delivered update how long after the
 * write it arrived. The writer puts its clock reading (epoch ms, from
 * `performance.timeOrigin + performance.now()`) in the value itself.
 */
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { decodeValue } from "unified-bridge/values";
import { serveRequests } from "../support/child-processes.ts";
import { BridgeService } from "../support/internals.ts";

/** Requests this worker answers. */
export type WatchRequest =
  | {
      readonly type: "open";
      readonly url: string;
      readonly sessionId: string;
      readonly variable: string;
      readonly streams: number;
    }
  | { readonly type: "clock" }
  | { readonly type: "collect" }
  | { readonly type: "close" };

/** Reply to `collect`: every delivery since the last collect. */
export interface WatchDeliveries {
  /** Latency in ms of each delivery, grouped by the variable's version. */
  readonly byVersion: Readonly<Record<string, number[]>>;
  /** Streams that ended before `close` (with their first error). */
  readonly ended: number;
  readonly firstError?: string;
  /** CPU time this process used since the previous collect, ms. */
  readonly cpuMs: number;
}

const wallClock = () => performance.timeOrigin + performance.now();

const abort = new AbortController();
let byVersion: Record<string, number[]> = {};
let ended = 0;
let firstError: string | undefined;
let cpuMark = process.cpuUsage();

async function open(req: Extract<WatchRequest, { type: "open" }>): Promise<number> {
  // One transport: one HTTP/2 connection carrying every stream of this process.
  const client = createClient(BridgeService, createGrpcTransport({ baseUrl: req.url }));
  const ready: Promise<void>[] = [];
  for (let i = 0; i < req.streams; i++) {
    let markReady: () => void = () => {};
    ready.push(new Promise<void>((resolve) => (markReady = resolve)));
    const watch = async () => {
      const stream = client.watchVariables(
        {
          sessionId: req.sessionId,
          variableIdentifiers: [req.variable],
          includeInitialValues: true,
        },
        { signal: abort.signal },
      );
      for await (const update of stream) {
        if (update.updateType === "initial_value") {
          markReady();
          continue;
        }
        if (update.updateType !== "value_changed" || update.variable === undefined) continue;
        const received = wallClock();
        const written = decodeValue(update.variable.value).value as number;
        const version = String(update.variable.version);
        let list = byVersion[version];
        if (list === undefined) {
          list = [];
          byVersion[version] = list;
        }
        list.push(received - written);
      }
    };
    watch().then(
      () => {
        if (!abort.signal.aborted) ended++;
      },
      (error: unknown) => {
        if (abort.signal.aborted) return;
        ended++;
        firstError ??= String(error);
        markReady();
      },
    );
  }
  await Promise.all(ready);
  return req.streams;
}

serveRequests(
  async (raw) => {
    const req = raw as WatchRequest;
    switch (req.type) {
      case "open":
        return open(req);
      case "clock":
        return wallClock();
      case "collect": {
        const cpu = process.cpuUsage(cpuMark);
        cpuMark = process.cpuUsage();
        const out: WatchDeliveries = {
          byVersion,
          ended,
          ...(firstError === undefined ? {} : { firstError }),
          cpuMs: (cpu.user + cpu.system) / 1000,
        };
        byVersion = {};
        return out;
      }
      case "close":
        abort.abort();
        return null;
    }
  },
  () => abort.abort(),
);
