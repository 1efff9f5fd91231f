/**
 * WatchVariables over gRPC, gRPC-Web and Connect (binary), served straight
 * on the HTTP front instead of through connect-node.
 *
 * connect-node gives every stream its own pipeline: the messages pass
 * several async-iterable stages, are serialized once per stream and written
 * with a promise each, which cost about 60 µs per stream and update. Here a
 * stream is a {@link FrameSink} over the Node response: the watch hub
 * writes each update's frame, encoded once for every stream, with one
 * `write` and nothing in between. The three protocols frame messages the
 * same way and differ only in how the status travels: HTTP/2 trailers for
 * gRPC, a trailer frame for gRPC-Web, an end-stream frame with JSON for
 * Connect.
 *
 * gRPC-Web's text mode takes the same path, each frame (shared as well)
 * in its own padded base64 (see grpc-web-text.ts). Everything else (JSON
 * formats, other methods) passes on to connect-node; the request checks, limits and messages are
 * those of the connect-node path, which shares {@link openWatch} with this one.
 */
import http from "node:http";
import { gunzip } from "node:zlib";
import { fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  endStreamFlag,
  endStreamToJson,
  parseTimeout as parseConnectTimeout,
} from "@connectrpc/connect/protocol-connect";
import { parseTimeout, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { trailerFlag, trailerSerialize } from "@connectrpc/connect/protocol-grpc-web";
import type { connectNodeAdapter } from "@connectrpc/connect-node";
import {
  type WatchVariablesRequest,
  WatchVariablesRequestSchema,
} from "../gen/snakepit/bridge/bridge_pb.js";
import type { BridgeCore } from "./bridge-core.js";
import { safeMessage } from "./error-hygiene.js";
import {
  createBase64Decoder,
  encodeGrpcWebTextChunk,
  grpcWebTextContentType,
  isGrpcWebText,
} from "./grpc-web-text.js";
import type { Logger } from "./logger.js";
import { requestOverLimit } from "./request-errors.js";
import { frameWith } from "./request-refusal.js";
import { checkBatch } from "./variable-batch.js";
import type { FrameSink, Watcher } from "./watch-hub.js";

// The request and response types connect-node accepts: HTTP/1 or HTTP/2 compat.
type NodeHandler = ReturnType<typeof connectNodeAdapter>;
type NodeRequest = Parameters<NodeHandler>[0];
type NodeResponse = Parameters<NodeHandler>[1];
/** What this module writes with, common to both response types. */
interface FrameWriter {
  write(chunk: Uint8Array): boolean;
}

/** The path of the method this module serves. */
export const watchVariablesPath = "/snakepit.bridge.BridgeService/WatchVariables";

/**
 * Opens a watch for a request: the checks, the session, the limits, then
 * the initial values and the sync marker. Shared by both paths.
 */
export async function openWatch(
  core: BridgeCore,
  req: WatchVariablesRequest,
  signal: AbortSignal,
  sink?: FrameSink,
  client?: string,
): Promise<Watcher> {
  checkBatch(core.settings.limits, req.variableIdentifiers.length, "WatchVariables");
  const identifiers = new Set(req.variableIdentifiers);
  return core.read(req.sessionId, (view) => {
    const records = [...identifiers].map((identifier) => core.ops.find(view, identifier));
    const watcher = core.hub.watch(req.sessionId, { identifiers }, signal, sink, client);
    if (req.includeInitialValues) {
      for (const record of identifiers.size === 0 ? view.variables() : records) {
        watcher.pushInitial(record);
      }
    }
    if (req.syncMarker) watcher.pushSyncMarker();
    return watcher;
  });
}

/** Options of {@link createWatchEndpoint}. */
export interface WatchEndpointOptions {
  readonly core: BridgeCore;
  /** Largest request message read; larger ones fail with RESOURCE_EXHAUSTED. */
  readonly maxRequestBytes: number;
  readonly logger: Logger;
  /** Told how each call ended (`undefined`: OK) and how long it lasted. */
  readonly onEnd?: (code: Code | undefined, seconds: number) => void;
  /** The public client a request comes from (undefined for a worker), for per-client limits. */
  readonly clientOf?: (req: NodeRequest) => string | undefined;
}

/**
 * Returns a request handler that serves WatchVariables over gRPC, gRPC-Web
 * and Connect and returns false, touching nothing, for any other request.
 */
export function createWatchEndpoint(
  options: WatchEndpointOptions,
): (req: NodeRequest, res: NodeResponse) => boolean {
  return (req, res) => {
    // Every RPC passes here first: the cheapest test goes first.
    const url = req.url;
    if (
      url === undefined ||
      !url.startsWith(watchVariablesPath) ||
      (url.length > watchVariablesPath.length && url[watchVariablesPath.length] !== "?") ||
      req.method !== "POST"
    ) {
      return false;
    }
    const protocol = protocolOf(req);
    if (protocol === undefined) return false;
    serve(options, protocol, req, res);
    return true;
  };
}

interface Protocol {
  readonly kind: "grpc" | "grpc-web" | "connect";
  readonly contentType: string;
  /** gRPC-Web's text mode: base64 both ways. */
  readonly text?: boolean;
}

/**
 * gRPC (HTTP/2 only), gRPC-Web or Connect streaming, in the binary format;
 * anything else is connect-node's.
 */
function protocolOf(req: NodeRequest): Protocol | undefined {
  const type = (req.headers["content-type"] ?? "").split(";", 1)[0]?.trim().toLowerCase();
  switch (type) {
    case "application/grpc":
    case "application/grpc+proto":
      return req.httpVersionMajor === 2 ? { kind: "grpc", contentType: type } : undefined;
    case "application/grpc-web":
    case "application/grpc-web+proto":
      return { kind: "grpc-web", contentType: type };
    case "application/connect+proto":
      return { kind: "connect", contentType: type };
    default:
      return isGrpcWebText(type)
        ? { kind: "grpc-web", contentType: grpcWebTextContentType, text: true }
        : undefined;
  }
}

function serve(
  options: WatchEndpointOptions,
  protocol: Protocol,
  req: NodeRequest,
  res: NodeResponse,
): void {
  const started = performance.now();
  const abort = new AbortController();
  let ended = false;
  let deadline: ReturnType<typeof setTimeout> | undefined;
  let watcher: Watcher | undefined;

  /** Sends the status (once): in the headers when nothing was written yet. */
  const finish = (error: ConnectError | undefined) => {
    if (ended) return;
    ended = true;
    clearTimeout(deadline);
    options.onEnd?.(error?.code, (performance.now() - started) / 1000);
    if (res.destroyed || res.writableEnded) return;
    const safe =
      error === undefined
        ? undefined
        : new ConnectError(safeMessage(error.rawMessage), error.code, error.metadata);
    if (protocol.kind === "connect") {
      // Connect ends every stream, a refused one too, with an end-stream frame.
      const json = JSON.stringify(endStreamToJson(new Headers(), safe, undefined));
      res.end(frameWith(endStreamFlag, Buffer.from(json)));
      return;
    }
    const status = setTrailerStatus(new Headers(), safe);
    if (!res.headersSent) {
      // Trailers-only: the status travels in the headers.
      for (const [k, v] of status) res.setHeader(k, v);
      res.end();
    } else if (protocol.kind === "grpc-web") {
      const trailer = frameWith(trailerFlag, trailerSerialize(status));
      res.end(protocol.text === true ? encodeGrpcWebTextChunk(trailer) : trailer);
    } else {
      res.addTrailers(Object.fromEntries(status));
      res.end();
    }
  };

  // On HTTP/2 the frames go to the stream itself, past the compatibility
  // response (the headers and the end still go through it).
  const out: FrameWriter & NodeJS.EventEmitter =
    "stream" in req ? req.stream : (res as http.ServerResponse);
  const sendHeaders = () => {
    if (res.headersSent) return;
    if (res instanceof http.ServerResponse) res.flushHeaders();
    else res.writeHead(200);
  };
  const sink: FrameSink = {
    text: protocol.text === true,
    write: (frames) => {
      // Nothing goes out after the status (a deadline may pass while the
      // watch opens).
      if (ended || res.destroyed) return false;
      sendHeaders();
      return out.write(frames);
    },
    end: finish,
  };

  // The client went away (a reset, a closed connection): the hub drops the
  // stream at once.
  res.once("close", () => {
    if (!ended) {
      ended = true;
      clearTimeout(deadline);
      options.onEnd?.(Code.Canceled, (performance.now() - started) / 1000);
    }
    abort.abort();
  });
  out.on("drain", () => watcher?.resume());

  res.statusCode = 200;
  res.setHeader("content-type", protocol.contentType);

  const timeout =
    protocol.kind === "connect"
      ? parseConnectTimeout(headerOf(req, "connect-timeout-ms"), Number.MAX_SAFE_INTEGER)
      : parseTimeout(headerOf(req, "grpc-timeout"), Number.MAX_SAFE_INTEGER);
  if (timeout.error !== undefined) {
    finish(timeout.error);
    req.resume();
    return;
  }
  if (timeout.timeoutMs !== undefined) {
    deadline = setTimeout(() => {
      const error = new ConnectError("the deadline expired", Code.DeadlineExceeded);
      if (watcher === undefined) finish(error);
      else watcher.end(error);
      abort.abort();
    }, timeout.timeoutMs);
    deadline.unref();
  }

  const encodingHeader = protocol.kind === "connect" ? "connect-content-encoding" : "grpc-encoding";
  readRequest(
    req,
    headerOf(req, encodingHeader) ?? "identity",
    options.maxRequestBytes,
    protocol.text === true,
  )
    .then(async (message) => {
      if (ended) return;
      const opened = await openWatch(
        options.core,
        message,
        abort.signal,
        sink,
        options.clientOf?.(req),
      );
      if (ended) {
        // The stream closed (or its deadline passed) while the session was read.
        opened.end();
        return;
      }
      watcher = opened;
      // The headers go out now, also when there was nothing to send yet.
      sendHeaders();
    })
    .catch((reason: unknown) => {
      const error = ConnectError.from(reason);
      if (error.code === Code.Internal) {
        options.logger.error("WatchVariables failed", { error: error.rawMessage });
      }
      finish(error);
    });
}

function headerOf(req: NodeRequest, name: string): string | null {
  const value = req.headers[name];
  return typeof value === "string" ? value : null;
}

/** Reads the request's one message, within `maxBytes`. */
function readRequest(
  req: NodeRequest,
  encoding: string,
  maxBytes: number,
  base64: boolean,
): Promise<WatchVariablesRequest> {
  if (encoding !== "identity" && encoding !== "gzip") {
    req.resume();
    return Promise.reject(
      new ConnectError(
        `unsupported request compression '${encoding}' (identity and gzip are)`,
        Code.Unimplemented,
      ),
    );
  }
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Uint8Array[] = [];
    let length = 0;
    // Text mode: the limit holds for the decoded bytes.
    const decoder = base64 ? createBase64Decoder() : undefined;
    const fail = (error: unknown) => {
      req.off("data", onData);
      req.resume();
      reject(error);
    };
    const take = (bytes: Uint8Array) => {
      length += bytes.length;
      if (length > maxBytes + 5) {
        fail(new ConnectError(requestOverLimit(maxBytes), Code.ResourceExhausted));
        return;
      }
      chunks.push(bytes);
    };
    const onData = (chunk: Buffer) => {
      try {
        take(decoder === undefined ? chunk : decoder.push(chunk));
      } catch (e) {
        fail(e);
      }
    };
    req.on("data", onData);
    req.once("end", () => {
      try {
        if (decoder !== undefined) take(decoder.end());
        resolve(Buffer.concat(chunks, length));
      } catch (e) {
        reject(e);
      }
    });
    req.once("error", reject);
  }).then(async (body) => {
    if (body.length < 5) {
      throw new ConnectError("protocol error: missing input message", Code.InvalidArgument);
    }
    const flags = body[0] as number;
    const size = body.readUInt32BE(1);
    if (body.length !== 5 + size) {
      throw new ConnectError(
        `protocol error: promised ${size} bytes, received ${body.length - 5}`,
        Code.InvalidArgument,
      );
    }
    let payload: Uint8Array = body.subarray(5);
    if ((flags & 1) === 1) {
      if (encoding === "identity") {
        throw new ConnectError(
          "protocol error: received a compressed message without a request compression header",
          Code.InvalidArgument,
        );
      }
      payload = await gunzipWithin(payload, maxBytes);
    }
    try {
      return fromBinary(WatchVariablesRequestSchema, payload);
    } catch (e) {
      throw new ConnectError(
        `request is not a valid snakepit.bridge.WatchVariablesRequest message: ${e instanceof Error ? e.message : String(e)}`,
        Code.InvalidArgument,
      );
    }
  });
}

function gunzipWithin(data: Uint8Array, maxBytes: number): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    gunzip(data, { maxOutputLength: maxBytes }, (error, out) => {
      if (error === null) {
        resolve(out);
        return;
      }
      reject(
        (error as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE"
          ? new ConnectError(
              requestOverLimit(maxBytes, undefined, " once decompressed"),
              Code.ResourceExhausted,
            )
          : new ConnectError(`invalid gzip data: ${error.message}`, Code.InvalidArgument),
      );
    });
  });
}
