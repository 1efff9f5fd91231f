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
 * formats, other methods) passes on to connect-node.
 *
 * Only the bytes take another path, not the call: every call here passes
 * through the same interceptors as connect-node's calls (metrics, the
 * binary-only check, error hygiene, and whatever check is added there),
 * with the same context values (the caller), as a connect `StreamRequest`
 * whose response stream ends when the watch ends; the status written is
 * the error as the interceptors left it. The request checks, limits and
 * messages are those of the connect-node path, which shares
 * {@link openWatch} with this one.
 */
import { gunzip } from "node:zlib";
import { fromBinary } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ContextValues,
  type Interceptor,
  type StreamRequest,
  type StreamResponse,
} from "@connectrpc/connect";
import {
  BridgeService,
  type WatchVariablesRequest,
  WatchVariablesRequestSchema,
} from "../../gen/snakepit/bridge/bridge_pb.js";
import { callerKey } from "../access/caller.js";
import type { TimerHandle } from "../common/timers.js";
import {
  connectEndStreamFrame,
  directWriter,
  grpcStatus,
  grpcWebTrailerFrame,
  type NodeRequest,
  type NodeResponse,
  parseDeadline,
} from "../edge/edge-compat.js";
import {
  createBase64Decoder,
  encodeGrpcWebTextChunk,
  grpcWebTextContentType,
  isGrpcWebText,
} from "../edge/grpc-web-text.js";
import { requestOverLimit } from "../edge/request-errors.js";
import type { Logger } from "../observability/logger.js";
import type { BridgeCore } from "../rpc/bridge-core.js";
import { checkBatch } from "../session/variable-batch.js";
import type { FrameSink, Watcher } from "./watch-hub.js";

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
  // Followed before the initial values are read: a change committed after
  // that read reaches the stream (a multi-node store delivers the changes
  // of followed sessions only).
  const release = await core.hub.follow(req.sessionId);
  try {
    return await openFollowed(core, req, identifiers, signal, sink, client);
  } finally {
    release();
  }
}

/** {@link openWatch} once the session is followed. */
function openFollowed(
  core: BridgeCore,
  req: WatchVariablesRequest,
  identifiers: ReadonlySet<string>,
  signal: AbortSignal,
  sink: FrameSink | undefined,
  client: string | undefined,
): Promise<Watcher> {
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
  /** The interceptors of the connect-node routes, outermost first: every call passes them. */
  readonly interceptors: readonly Interceptor[];
  /** The context values of a request, as the connect-node routes make them (the caller). */
  readonly contextValues: (req: NodeRequest) => ContextValues;
}

const watchMethod = BridgeService.method.watchVariables;
type WatchRequest = StreamRequest<typeof watchMethod.input, typeof watchMethod.output>;
type WatchResponse = StreamResponse<typeof watchMethod.input, typeof watchMethod.output>;
type WatchCall = (req: WatchRequest) => Promise<WatchResponse>;

/** Wraps `next` in `interceptors`, the first outermost (as connect does). */
function intercepted(next: WatchCall, interceptors: readonly Interceptor[]): WatchCall {
  let call = next;
  for (let i = interceptors.length - 1; i >= 0; i--) {
    call = (interceptors[i] as Interceptor)(call as never) as unknown as WatchCall;
  }
  return call;
}

/**
 * Returns a request handler that serves WatchVariables over gRPC, gRPC-Web
 * and Connect and returns false, touching nothing, for any other request.
 */
export function createWatchEndpoint(
  options: WatchEndpointOptions,
): (req: NodeRequest, res: NodeResponse) => boolean {
  const chain = (open: WatchCall) => intercepted(open, options.interceptors);
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
    serve(options, chain, protocol, req, res);
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
  chain: (open: WatchCall) => WatchCall,
  protocol: Protocol,
  req: NodeRequest,
  res: NodeResponse,
): void {
  const abort = new AbortController();
  let ended = false;
  const { timers } = options.core;
  let deadline: TimerHandle | undefined;
  let watcher: Watcher | undefined;

  // How the watch ended (its sink's `end`, the deadline, the client gone):
  // the response stream the interceptors see ends with it.
  let endWatch: (error: ConnectError | undefined) => void = () => {};
  const watchEnded = new Promise<ConnectError | undefined>((resolve) => {
    endWatch = resolve;
  });

  /** Sends the status (once): in the headers when nothing was written yet. */
  const finish = (error: ConnectError | undefined) => {
    if (ended) return;
    ended = true;
    timers.clearTimeout(deadline);
    if (res.destroyed || res.writableEnded) return;
    if (protocol.kind === "connect") {
      // Connect ends every stream, a refused one too, with an end-stream frame.
      res.end(connectEndStreamFrame(error));
      return;
    }
    const status = grpcStatus(error);
    if (!res.headersSent) {
      // Trailers-only: the status travels in the headers.
      for (const [k, v] of status) res.setHeader(k, v);
      res.end();
    } else if (protocol.kind === "grpc-web") {
      const trailer = grpcWebTrailerFrame(status);
      res.end(protocol.text === true ? encodeGrpcWebTextChunk(trailer) : trailer);
    } else {
      res.addTrailers(Object.fromEntries(status));
      res.end();
    }
  };

  // On HTTP/2 the frames go to the stream itself, past the compatibility
  // response (the headers and the end still go through it).
  const { target: out, sendHeaders } = directWriter(req, res);
  const sink: FrameSink = {
    text: protocol.text === true,
    write: (frames) => {
      // Nothing goes out after the status (a deadline may pass while the
      // watch opens) nor once the stream closed. `ended` is set by both;
      // a stream destroyed but not yet closed takes no write either (Node
      // refuses it, and false holds what follows until the close).
      if (ended) return false;
      sendHeaders();
      return out.write(frames);
    },
    end: (error) => endWatch(error),
  };

  // The client went away (a reset, a closed connection): the hub drops the
  // stream at once, and the call ends as canceled.
  res.once("close", () => {
    if (!ended) {
      ended = true;
      timers.clearTimeout(deadline);
    }
    endWatch(new ConnectError("the client went away", Code.Canceled));
    abort.abort();
  });
  out.on("drain", () => watcher?.resume());

  res.statusCode = 200;
  res.setHeader("content-type", protocol.contentType);

  const values = options.contextValues(req);
  const caller = values.get(callerKey);
  const request: WatchRequest = {
    stream: true,
    service: BridgeService,
    method: watchMethod,
    requestMethod: "POST",
    url: req.url ?? "",
    signal: abort.signal,
    header: headersOf(req),
    contextValues: values,
    // Read when the call asks for it, inside the interceptors: a request
    // that cannot be read fails the call as connect-node's would.
    message: readOnce(() =>
      readRequest(
        req,
        headerOf(req, protocol.kind === "connect" ? "connect-content-encoding" : "grpc-encoding") ??
          "identity",
        options.maxRequestBytes,
        protocol.text === true,
      ),
    ),
  };
  const open: WatchCall = async (call) => {
    let message: WatchVariablesRequest | undefined;
    for await (const m of call.message) message = m;
    if (message === undefined) {
      throw new ConnectError("protocol error: missing input message", Code.InvalidArgument);
    }
    const opened = await openWatch(
      options.core,
      message,
      abort.signal,
      sink,
      caller.kind === "worker" ? undefined : caller.client,
    );
    if (ended || abort.signal.aborted) {
      // The stream closed (or its deadline passed) while the session was read.
      opened.end();
    } else {
      watcher = opened;
      // The headers go out now, also when there was nothing to send yet.
      sendHeaders();
    }
    return {
      stream: true,
      service: BridgeService,
      method: watchMethod,
      header: new Headers(),
      trailer: new Headers(),
      message: untilEnded(watchEnded),
    };
  };

  const timeout =
    protocol.kind === "connect"
      ? parseDeadline("connect", headerOf(req, "connect-timeout-ms"))
      : parseDeadline("grpc", headerOf(req, "grpc-timeout"));
  if (timeout.timeoutMs !== undefined) {
    deadline = timers.setTimeout(() => {
      const error = new ConnectError("the deadline expired", Code.DeadlineExceeded);
      if (watcher === undefined) endWatch(error);
      else watcher.end(error);
      abort.abort(error);
    }, timeout.timeoutMs);
    deadline.unref();
  }

  const bad = timeout.error;
  chain(
    bad === undefined
      ? open
      : async () => {
          req.resume();
          throw bad;
        },
  )(request)
    .then(async (response) => {
      // The watch's frames went straight to the socket; this stream only
      // ends (or fails) when the watch does, after every interceptor saw it.
      for await (const _ of response.message) {
        // A watch yields nothing here.
      }
      finish(undefined);
    })
    .catch((reason: unknown) => {
      const error = ConnectError.from(reason);
      if (error.code === Code.Internal) {
        options.logger.error("WatchVariables failed", { error: error.rawMessage });
      }
      finish(error);
    });
}

/** An iterable of one message, read (once) when it is first iterated. */
async function* readOnce<T>(read: () => Promise<T>): AsyncIterable<T> {
  yield await read();
}

/** A response stream with no messages that ends as the watch does. */
function untilEnded(ended: Promise<ConnectError | undefined>): AsyncIterable<never> {
  return {
    [Symbol.asyncIterator]: () => ({
      async next(): Promise<IteratorResult<never>> {
        const error = await ended;
        if (error !== undefined) throw error;
        return { done: true, value: undefined };
      },
    }),
  };
}

/** The request's headers as connect's `Headers` (HTTP/2 pseudo-headers left out). */
function headersOf(req: NodeRequest): Headers {
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) {
    if (name.startsWith(":") || value === undefined) continue;
    if (Array.isArray(value)) for (const v of value) headers.append(name, v);
    else headers.set(name, value);
  }
  return headers;
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
    // The listeners go once the message is read: a watch's request stays
    // open as long as the watch, and would hold them (and the chunks) too.
    const detach = () => {
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onError);
    };
    const fail = (error: unknown) => {
      detach();
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
    const onEnd = () => {
      detach();
      try {
        if (decoder !== undefined) take(decoder.end());
        resolve(Buffer.concat(chunks, length));
      } catch (e) {
        reject(e);
      }
    };
    const onError = (error: Error) => {
      detach();
      reject(error);
    };
    req.on("data", onData);
    req.once("end", onEnd);
    req.once("error", onError);
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
