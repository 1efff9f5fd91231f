/**
 * Watch-stream load: opens many WatchVariables streams over HTTP/2 (up to
 * `streamsPerConnection` per connection) with a real gRPC client, and
 * records for each delivered update how long after the write it arrived.
 * The writer puts its clock reading (epoch ms, from
 * `performance.timeOrigin + performance.now()`) in the value itself.
 *
 * Two clients: connect-node's gRPC client, and a lean one on node:http2
 * that parses the frames and decodes each update with protobuf-es, so that
 * thousands of streams measure the server rather than the client's own
 * per-message pipeline (both decode every update).
 */
import { setMaxListeners } from "node:events";
import http2 from "node:http2";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { decodeValue } from "unified-session-bridge/values";
import { serveRequests } from "../support/child-processes.ts";
import {
  BridgeService,
  type VariableUpdate,
  VariableUpdateSchema,
  WatchVariablesRequestSchema,
} from "../support/internals.ts";

/** Requests this worker answers. */
export type WatchRequest =
  | {
      readonly type: "open";
      readonly url: string;
      readonly sessionId: string;
      readonly variable: string;
      readonly streams: number;
      /** Default "connect". */
      readonly client?: "connect" | "h2";
      /** Default 200 (the bridge allows 256 streams per connection). */
      readonly streamsPerConnection?: number;
    }
  | { readonly type: "clock" }
  | { readonly type: "collect" }
  /** Deliveries recorded since the last collect (nothing is reset). */
  | { readonly type: "count" }
  | { readonly type: "close" };

/** Reply to `collect`: every delivery since the last collect. */
export interface WatchDeliveries {
  /** Latency in ms of each delivery, grouped by session and version (`<session>@<version>`). */
  readonly byVersion: Readonly<Record<string, number[]>>;
  /** Streams that ended before `close` (with their first error). */
  readonly ended: number;
  readonly firstError?: string;
  /** CPU time this process used since the previous collect, ms. */
  readonly cpuMs: number;
}

const wallClock = () => performance.timeOrigin + performance.now();

const abort = new AbortController();
// Every stream of this process listens to it.
setMaxListeners(0, abort.signal);
let byVersion: Record<string, number[]> = {};
let ended = 0;
let firstError: string | undefined;
let cpuMark = process.cpuUsage();

const sessions: http2.ClientHttp2Session[] = [];

/** Records one update; true for the initial value (the stream is ready). */
function record(sessionId: string, update: VariableUpdate): boolean {
  if (update.updateType === "initial_value") return true;
  if (update.updateType !== "value_changed" || update.variable === undefined) return false;
  const received = wallClock();
  const written = decodeValue(update.variable.value).value as number;
  const key = `${sessionId}@${update.variable.version}`;
  let list = byVersion[key];
  if (list === undefined) {
    list = [];
    byVersion[key] = list;
  }
  list.push(received - written);
  return false;
}

function onEnded(error?: unknown): void {
  if (abort.signal.aborted) return;
  ended++;
  if (error !== undefined) firstError ??= String(error);
}

async function open(req: Extract<WatchRequest, { type: "open" }>): Promise<number> {
  const perConnection = req.streamsPerConnection ?? 200;
  const ready: Promise<void>[] = [];
  let client = createClient(BridgeService, createGrpcTransport({ baseUrl: req.url }));
  let session: http2.ClientHttp2Session | undefined;
  const body = toBinary(
    WatchVariablesRequestSchema,
    create(WatchVariablesRequestSchema, {
      sessionId: req.sessionId,
      variableIdentifiers: [req.variable],
      includeInitialValues: true,
    }),
  );
  const frame = Buffer.alloc(5 + body.length);
  frame.writeUInt32BE(body.length, 1);
  frame.set(body, 5);
  for (let i = 0; i < req.streams; i++) {
    if (i % perConnection === 0 && i > 0) {
      // One transport is one HTTP/2 connection.
      client = createClient(BridgeService, createGrpcTransport({ baseUrl: req.url }));
    }
    if (req.client === "h2" && i % perConnection === 0) {
      session = http2.connect(req.url);
      session.on("error", (e) => onEnded(e));
      sessions.push(session);
    }
    let markReady: () => void = () => {};
    ready.push(new Promise<void>((resolve) => (markReady = resolve)));
    if (req.client === "h2") {
      watchRaw(session as http2.ClientHttp2Session, frame, req.sessionId, markReady);
      continue;
    }
    const stream = client.watchVariables(
      { sessionId: req.sessionId, variableIdentifiers: [req.variable], includeInitialValues: true },
      { signal: abort.signal },
    );
    (async () => {
      for await (const update of stream) if (record(req.sessionId, update)) markReady();
    })().then(
      () => onEnded(),
      (error: unknown) => {
        onEnded(error);
        markReady();
      },
    );
  }
  await Promise.all(ready);
  return req.streams;
}

/** One stream on the lean client: frames parsed here, each update decoded. */
function watchRaw(
  session: http2.ClientHttp2Session,
  request: Buffer,
  sessionId: string,
  markReady: () => void,
): void {
  const stream = session.request({
    ":method": "POST",
    ":path": "/snakepit.bridge.BridgeService/WatchVariables",
    "content-type": "application/grpc",
    te: "trailers",
  });
  stream.end(request);
  let buffered: Buffer = Buffer.alloc(0);
  stream.on("data", (chunk: Buffer) => {
    buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
    while (buffered.length >= 5) {
      const size = buffered.readUInt32BE(1);
      if (buffered.length < 5 + size) break;
      const update = fromBinary(VariableUpdateSchema, buffered.subarray(5, 5 + size));
      buffered = buffered.subarray(5 + size);
      if (record(sessionId, update)) markReady();
    }
  });
  stream.on("trailers", (t) => {
    if (t["grpc-status"] !== "0")
      firstError ??= `grpc-status ${t["grpc-status"]}: ${t["grpc-message"]}`;
  });
  let closed = false;
  const end = (error?: unknown) => {
    if (closed) return;
    closed = true;
    onEnded(error);
    markReady();
  };
  stream.on("error", end);
  stream.on("close", () => end());
}

serveRequests(
  async (raw) => {
    const req = raw as WatchRequest;
    switch (req.type) {
      case "open":
        return open(req);
      case "clock":
        return wallClock();
      case "count": {
        let n = 0;
        for (const l of Object.values(byVersion)) n += l.length;
        return n;
      }
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
        for (const session of sessions) session.destroy();
        return null;
    }
  },
  () => abort.abort(),
);
