/**
 * Every place where the server's edge (the HTTP front, the RPC handler,
 * the request error handling, refusals and the directly served watch)
 * relies on something Node or connect-es do not promise: undocumented
 * behaviour, connect exports marked "@private … does not follow semantic
 * versioning", error texts, or the order in which a library does things.
 * Nothing else in src/server/ touches those; an upgrade of Node,
 * `@connectrpc/connect` or `@connectrpc/connect-node` is audited here.
 *
 * Checked against Node 24.21 and connect / connect-node 2.2.0. Each
 * reliance says what it relies on, why, what breaks if it changes, what
 * upstream would need for it to go, and which test pins it:
 * `edge-compat.test.ts` has one `describe` per reliance, under its name,
 * and names the wider suites that depend on it too.
 *
 * Node:
 * - {@link NodeRequest} / {@link NodeResponse}: connect-node's types, read
 *   off its adapter's signature.
 * - {@link handOffToHttp1} / {@link handOffToHttp2}: injecting classified
 *   sockets (documented) whose first bytes were read (not documented).
 * - {@link armHttp1Timeouts}: starting HTTP/1 timeouts with 'listening'.
 * - {@link resetOnWriteStall}: `Http2Stream._write` / `_writev`.
 * - {@link directWriter}: writing to the HTTP/2 stream behind a compat
 *   response.
 * - {@link closeIfBodyUnread}: implicit headers go through `writeHead`.
 *
 * connect-node and connect:
 * - {@link connectNodeAuthority}: where connect-node reads the authority,
 *   and that `new URL` throws on a bad one.
 * - {@link universalRequestOf} / {@link writeUniversalResponse}: the
 *   adapter's helpers, because the adapter has no hooks.
 * - {@link clampDeadline}: connect arms deadlines with unclamped timers.
 * - {@link abortWithReason}: the request gate's context is the controller
 *   connect aborts.
 * - {@link correctBeforeWritten}: handlers abort with an error, then write
 *   it; `ConnectError` is writable.
 * - {@link connectRequestFailure}: connect's error texts.
 * - {@link workerSessionManager}: connect-node's Http2SessionManager's
 *   `setState` and the `conn` of its "ready" state, to keep a session's late
 *   error from being uncaught (connect-es issue 1768).
 * - protocol pieces ({@link grpcStatus}, {@link grpcWebTrailerFrame},
 *   {@link connectEndStreamFrame}, {@link connectErrorBody},
 *   {@link connectHttpStatus}, {@link parseDeadline}): connect's @private
 *   protocol exports; and {@link frameEnvelope}, the one envelope writer.
 *
 * One public option replaced an internal: a `Connection: close` header
 * instead of the undocumented `ServerResponse.shouldKeepAlive`
 * ({@link closeIfBodyUnread}). connect's `maxTimeoutMs` was considered for
 * {@link clampDeadline} and does not fit (it refuses, the bridge serves).
 *
 * (Over 600 lines: each reliance carries its own account.)
 */
import { EventEmitter } from "node:events";
import http from "node:http";
import http2 from "node:http2";
import type net from "node:net";
import { Code, ConnectError, type ContextValues, type HandlerContext } from "@connectrpc/connect";
import type { UniversalServerRequest, UniversalServerResponse } from "@connectrpc/connect/protocol";
import {
  codeToHttpStatus,
  endStreamFlag,
  endStreamToJson,
  errorToJsonBytes,
  parseTimeout as parseConnectTimeoutHeader,
} from "@connectrpc/connect/protocol-connect";
import {
  parseTimeout as parseGrpcTimeoutHeader,
  setTrailerStatus,
} from "@connectrpc/connect/protocol-grpc";
import { trailerFlag, trailerSerialize } from "@connectrpc/connect/protocol-grpc-web";
import {
  type connectNodeAdapter,
  Http2SessionManager,
  universalRequestFromNodeRequest,
  universalResponseToNodeResponse,
} from "@connectrpc/connect-node";
import { type ServerTimers, systemTimers, type TimerHandle } from "../common/timers.js";

// ---------------------------------------------------------------------------
// Types

/** A request listener as connect-node's adapter returns it (HTTP/1 or HTTP/2 compat). */
export type NodeHandler = ReturnType<typeof connectNodeAdapter>;

/**
 * The request and response types connect-node accepts: `http.IncomingMessage`
 * or `http2.Http2ServerRequest`, and the matching responses with `write` and
 * `writeHead` made compatible with each other.
 *
 * Relies on: connect-node 2.2 names these `NodeServerRequest` and
 * `NodeServerResponse` but does not export them from its index (and its
 * package exports allow no deep import), so they are read off
 * `connectNodeAdapter`'s signature. Breaks (at compile time only) if that
 * signature changes. Upstream: export the two types.
 * Pinned by: the type test "NodeRequest / NodeResponse".
 */
export type NodeRequest = Parameters<NodeHandler>[0];
/** See {@link NodeRequest}. */
export type NodeResponse = Parameters<NodeHandler>[1];

// ---------------------------------------------------------------------------
// Node: handing sockets to the HTTP servers

/**
 * Hands a socket the front accepted and classified to an `http.Server`;
 * `received` are the bytes read to classify it.
 *
 * Relies on (Node 24): emitting 'connection' on an `http.Server` is the
 * documented way to inject a connection. Not documented: the HTTP/1 parser
 * takes over the socket's native handle, so later bytes bypass the JS
 * stream, and the bytes put back with `unshift` reach it through 'data'
 * once the socket flows again, from `process.nextTick`, which runs before
 * the next read callback.
 * Breaks: requests whose first bytes were read to classify them are lost or
 * reordered (the first request on every HTTP/1 connection).
 * Pinned by: "handOffToHttp1 / handOffToHttp2"; http-front.test.ts
 * "hand-off keeps bytes in order".
 */
export function handOffToHttp1(server: http.Server, socket: net.Socket, received: Buffer): void {
  socket.unshift(received);
  server.emit("connection", socket);
  socket.resume();
}

/**
 * Hands a socket that started with the HTTP/2 client preface to an
 * `http2.Http2Server` and returns the session it made for it (undefined if
 * it made none).
 *
 * Relies on (Node 24): emitting 'connection' is documented for Http2Server
 * too. Not documented: a socket without `alpnProtocol` (plain TCP) is taken
 * as HTTP/2 with prior knowledge; the session reads the bytes `unshift`ed
 * back into the socket first (so since Node 17, nodejs/node#41185); and the
 * server emits 'session' synchronously from 'connection', which is how the
 * session is tied to its socket (`session.socket` is a proxy). A peer's FIN
 * ends the connection, as http2's own `net.Server` (not half-open) would.
 * Breaks: HTTP/2 connections fail (preface bytes lost) or the front cannot
 * count, idle-close or drain their sessions.
 * Pinned by: "handOffToHttp1 / handOffToHttp2"; http-front.test.ts "waits
 * for the rest of an HTTP/2 preface that arrives in pieces".
 */
export function handOffToHttp2(
  server: http2.Http2Server,
  socket: net.Socket,
  received: Buffer,
): http2.ServerHttp2Session | undefined {
  socket.unshift(received);
  socket.allowHalfOpen = false;
  let made: http2.ServerHttp2Session | undefined;
  const onSession = (session: http2.ServerHttp2Session) => {
    made = session;
  };
  server.once("session", onSession);
  server.emit("connection", socket);
  server.off("session", onSession);
  return made;
}

/**
 * Starts an `http.Server`'s checks of `headersTimeout` and `requestTimeout`
 * (every `connectionsCheckingInterval`) for a server that never listens
 * itself, because the front owns the port and injects connections.
 *
 * Relies on (Node 24): `http.Server` starts those checks from its own
 * 'listening' listener (`setupConnectionsTracking`), so emitting 'listening'
 * starts them. Breaks: slow-loris guards on HTTP/1 stop (no 408 for headers
 * or bodies that never finish). Upstream: an option or method that starts
 * connection tracking for injected connections.
 * Pinned by: "armHttp1Timeouts"; test/hostile/connections.test.ts "answers
 * 408 and closes an HTTP/1.1 request whose headers do not arrive".
 */
export function armHttp1Timeouts(server: http.Server): void {
  server.emit("listening");
}

// ---------------------------------------------------------------------------
// Node: writes of HTTP/2 responses

/** Bytes of a reply handed to HTTP/2 at a time, so that its progress shows. */
const writePieceBytes = 64 * 1024;

type WriteCallback = (error?: Error | null) => void;

/**
 * Resets `stream` when a write of its response makes no progress for `ms`.
 *
 * Node's own `stream.setTimeout` cannot tell: its timeout is put off
 * whenever the session sends anything at all (another stream's bytes, a
 * PING acknowledgement, the reset of another stalled stream), so a peer
 * that never read but sent a PING now and then kept its replies, and their
 * memory, for as long as it liked. Here a large write goes out in pieces,
 * the next once the last was taken, and each piece taken counts as
 * progress. One timer per stream, armed when a write starts with none
 * running; a write only notes its time, and the timer, when due, waits on
 * for what is left since the last progress; it lapses unused once the
 * stream has been quiet for `ms`, so a quiet watch holds none.
 *
 * Relies on (Node 24): `Http2Stream` is a `Writable` whose `_write` and
 * `_writev` (the hooks for stream implementers, not for callers) receive
 * every chunk written to the stream or through its compat response, and
 * call back once the chunk is handed to the session; a write to a
 * destroyed stream is dropped without a callback. Breaks: stalled readers
 * keep their replies (memory) indefinitely, or writes hang. Upstream: a
 * per-stream write-progress timeout.
 * Pinned by: "resetOnWriteStall"; test/hostile/connections.test.ts "resets
 * the streams of a client that never reads (and keeps pinging)".
 */
export function resetOnWriteStall(
  stream: http2.ServerHttp2Stream,
  ms: number,
  timers: ServerTimers = systemTimers,
): void {
  // One state object per stream and hooks shared by every stream: a server
  // holds tens of thousands of watch streams, and closures per stream cost
  // about a kilobyte each.
  const guard: StallGuard = {
    stream,
    ms,
    timers,
    write: stream._write,
    writev: stream._writev,
    stall: undefined,
    writing: false,
    progressAt: 0,
    progressed: 0,
    progressedAtArm: 0,
    callback: undefined,
    done: undefined as unknown as WriteCallback,
    onStall: undefined as unknown as () => void,
  };
  guard.done = (error) => {
    guard.writing = false;
    const cb = guard.callback as WriteCallback;
    guard.callback = undefined;
    cb(error);
  };
  guard.onStall = () => onStall(guard);
  (stream as GuardedStream)[stallGuardKey] = guard;
  // Both hooks are guarded so that no write escapes the timer.
  stream._write = guardedWrite;
  if (guard.writev !== undefined) stream._writev = guardedWritev;
  stream.on("close", onGuardedClose);
}

const stallGuardKey = Symbol("stallGuard");

type GuardedStream = http2.ServerHttp2Stream & { [stallGuardKey]: StallGuard };

/** What {@link resetOnWriteStall} keeps of one stream. */
interface StallGuard {
  readonly stream: http2.ServerHttp2Stream;
  readonly ms: number;
  readonly timers: ServerTimers;
  /** The stream's own hooks. */
  readonly write: http2.ServerHttp2Stream["_write"];
  readonly writev: http2.ServerHttp2Stream["_writev"];
  stall: TimerHandle | undefined;
  writing: boolean;
  /** When the write in progress last made progress (started, or a piece taken). */
  progressAt: number;
  /** Progress made, counted, and as the timer saw it when it was armed. */
  progressed: number;
  progressedAtArm: number;
  /**
   * The callback of the write in progress: Http2Stream calls its write
   * hooks one at a time (Writable waits for a hook's callback before
   * calling the next), so one is held and `done` ends every write.
   */
  callback: WriteCallback | undefined;
  done: WriteCallback;
  onStall: () => void;
}

// Progress only notes the time: a watch stream writes once per update, and
// re-arming the timer each time (a timer list insertion) cost more than the
// rest of the write. The timer, once due, looks at the time of the last
// progress and waits on for what is left of `ms`; it resets the stream only
// after a whole wait with no progress at all, so a step of the wall clock
// cannot cut a stream that is being read.
function arm(guard: StallGuard, delay: number): void {
  guard.progressedAtArm = guard.progressed;
  if (guard.stall === undefined) {
    guard.stall = guard.timers.setTimeout(guard.onStall, delay);
    guard.stall.unref();
  } else if (delay === guard.ms) guard.stall.refresh();
  else {
    guard.timers.clearTimeout(guard.stall);
    guard.stall = guard.timers.setTimeout(guard.onStall, delay);
    guard.stall.unref();
  }
}

function onStall(guard: StallGuard): void {
  if (!guard.writing || guard.stream.destroyed) {
    // Quiet: the timer lapses, so a quiet watch holds none.
    guard.stall = undefined;
    return;
  }
  if (guard.progressed !== guard.progressedAtArm) {
    const left = guard.progressAt + guard.ms - guard.timers.now();
    arm(guard, left > 0 && left < guard.ms ? Math.ceil(left) : guard.ms);
    return;
  }
  guard.stall = undefined;
  guard.stream.close(http2.constants.NGHTTP2_CANCEL);
}

function progress(guard: StallGuard): void {
  guard.progressed++;
  guard.progressAt = guard.timers.now();
}

/** Notes the start of one write (the timer runs while one is in progress). */
function startWrite(guard: StallGuard, callback: WriteCallback): WriteCallback {
  guard.writing = true;
  guard.callback = callback;
  progress(guard);
  if (guard.stall === undefined) arm(guard, guard.ms);
  return guard.done;
}

function writeInPieces(
  guard: StallGuard,
  chunk: Buffer,
  encoding: BufferEncoding,
  done: WriteCallback,
): void {
  const { stream } = guard;
  let offset = 0;
  const next = (error?: Error | null) => {
    if (error != null || offset === chunk.length) {
      done(error);
      return;
    }
    // Http2Stream drops a write to a destroyed stream without calling back.
    if (stream.destroyed) {
      done(new Error("the stream was closed before its reply was written"));
      return;
    }
    progress(guard);
    const end = Math.min(offset + writePieceBytes, chunk.length);
    const piece = chunk.subarray(offset, end);
    offset = end;
    guard.write.call(stream, piece, encoding, next);
  };
  next();
}

function guardedWrite(
  this: http2.ServerHttp2Stream,
  chunk: unknown,
  encoding: BufferEncoding,
  callback: WriteCallback,
): void {
  const guard = (this as GuardedStream)[stallGuardKey];
  const done = startWrite(guard, callback);
  if (Buffer.isBuffer(chunk) && chunk.length > writePieceBytes) {
    writeInPieces(guard, chunk, encoding, done);
  } else {
    guard.write.call(this, chunk, encoding, done);
  }
}

function guardedWritev(
  this: http2.ServerHttp2Stream,
  chunks: Array<{ chunk: unknown; encoding: BufferEncoding }>,
  callback: WriteCallback,
): void {
  const guard = (this as GuardedStream)[stallGuardKey];
  const writev = guard.writev as NonNullable<StallGuard["writev"]>;
  const done = startWrite(guard, callback);
  let bytes = 0;
  for (const { chunk } of chunks) bytes += Buffer.isBuffer(chunk) ? chunk.length : 0;
  if (bytes <= writePieceBytes) {
    writev.call(this, chunks, done);
    return;
  }
  // Large: one after the other, in pieces.
  let index = 0;
  const next = (error?: Error | null) => {
    const entry = chunks[index++];
    if (error != null || entry === undefined) {
      done(error);
      return;
    }
    if (Buffer.isBuffer(entry.chunk)) writeInPieces(guard, entry.chunk, entry.encoding, next);
    else guard.write.call(this, entry.chunk, entry.encoding, next);
  };
  next();
}

function onGuardedClose(this: http2.ServerHttp2Stream): void {
  const guard = (this as GuardedStream)[stallGuardKey];
  guard.writing = false;
  guard.timers.clearTimeout(guard.stall);
  guard.stall = undefined;
}

/** What the directly served watch writes its frames with. */
export interface DirectWriter {
  /**
   * Where frames go, past the response object (the HTTP/2 stream, or the
   * HTTP/1 response): `write` returns false when the peer should be waited
   * for, and 'drain' says when.
   */
  readonly target: { write(chunk: Uint8Array): boolean } & NodeJS.EventEmitter;
  /** Sends the response's headers now, if they have not gone out. */
  sendHeaders(): void;
}

/**
 * Writes frames of a response straight to what carries them: the HTTP/2
 * stream behind a compat response, or the HTTP/1 response. The headers
 * (`writeHead(200)` on HTTP/2, `flushHeaders()` on HTTP/1), trailers
 * (`addTrailers`) and the end still go through the response object.
 *
 * Relies on (Node 24): `Http2ServerResponse` keeps no count or buffer of the
 * body, so bytes written to `req.stream` (documented as the stream behind
 * the request) between its `writeHead` and `end` go out in order, and its
 * `addTrailers` and `end` still send the trailers after them. Breaks: a
 * watch's frames are lost, reordered after the trailers, or its stream
 * does not end. Upstream: nothing needed if the compat layer documented
 * writing to `stream` while using the response.
 * Pinned by: "directWriter"; test/server/watch.test.ts and
 * test/server/watch-fanout.test.ts (every watch over gRPC).
 */
export function directWriter(req: NodeRequest, res: NodeResponse): DirectWriter {
  // Asked before every frame: once the headers are out, the answer is kept
  // here rather than read again through the compat response's getters.
  let sent = false;
  return {
    target: "stream" in req ? req.stream : (res as http.ServerResponse),
    sendHeaders: () => {
      if (sent) return;
      sent = true;
      if (res.headersSent) return;
      if (res instanceof http.ServerResponse) res.flushHeaders();
      else res.writeHead(200);
    },
  };
}

/**
 * A response may be sent before its request body was read: a request over
 * readMaxBytes is refused as soon as its size is known. On HTTP/1.1 the
 * client may then stop sending that body half-way and reuse the connection,
 * so the server would read the next request as the rest of the old body
 * and never answer it. Such a response closes the connection instead
 * (`Connection: close`, decided when its headers go out).
 *
 * Relies on (Node 24): a `ServerResponse` sends its head through
 * `this.writeHead`, also when the headers are implicit (`write`/`end`
 * without `writeHead`: `_implicitHeader` calls it), so wrapping the
 * instance's `writeHead` sees every response's head while it can still
 * change. A `Connection: close` header set there makes Node close the
 * connection after the response (documented behaviour of the header; this
 * replaced setting the undocumented `shouldKeepAlive`). Breaks: after such
 * a refusal a kept-alive HTTP/1.1 connection hangs its next request.
 * Upstream: an event or hook when a response's head is about to be sent.
 * Pinned by: "closeIfBodyUnread"; test/server/http.test.ts "request size
 * limit" and "keep-alive".
 */
export function closeIfBodyUnread(req: http.IncomingMessage, res: http.ServerResponse): void {
  // A request without a body (a GET probe) has nothing left to read, though
  // Node marks it complete only once its end has been consumed.
  const length = req.headers["content-length"];
  const hasBody =
    req.headers["transfer-encoding"] !== undefined || (length !== undefined && length !== "0");
  if (!hasBody) return;
  const writeHead = res.writeHead;
  res.writeHead = function (this: http.ServerResponse, ...args: unknown[]) {
    if (!req.complete) this.setHeader("Connection", "close");
    return (writeHead as (...a: unknown[]) => http.ServerResponse).apply(this, args);
  } as typeof res.writeHead;
}

// ---------------------------------------------------------------------------
// connect-node: the adapter written out

/**
 * The authority connect-node builds a request's URL with: HTTP/2's
 * `:authority` (else `host`, as `Http2ServerRequest.authority` reads them),
 * HTTP/1's `Host`; and a way to replace it before connect-node reads it.
 *
 * Relies on (connect-node 2.2): `universalRequestFromNodeRequest` reads
 * `req.authority` on HTTP/2 and `req.headers.host` on HTTP/1, passes it to
 * `new URL`, which throws on a malformed one (synchronously, in the request
 * listener), and fails without one; and (Node 24) `Http2ServerRequest.
 * authority` reads the live `req.headers`. Breaks: a malformed Host throws
 * out of the listener (before the front caught that, `Host: [` ended the
 * process), or a replaced authority is not the one used. Upstream: an
 * adapter that answers a bad authority itself, or takes the URL's base as
 * an option.
 * Pinned by: "connectNodeAuthority"; test/hostile/front-fuzz.test.ts "the
 * request that ended the process is answered INVALID_ARGUMENT".
 */
export const connectNodeAuthority = {
  /** The authority the client sent, as connect-node will read it. */
  of(req: NodeRequest): string | undefined {
    return "authority" in req ? req.authority : req.headers.host;
  },
  /** Makes connect-node read `authority` instead. */
  set(req: NodeRequest, authority: string): void {
    // HTTP/2 prefers :authority (an empty one included), HTTP/1 has only Host.
    if ("authority" in req) req.headers[":authority"] = authority;
    else req.headers.host = authority;
  },
};

/**
 * connect-node's request conversion, as its own adapter calls it: the
 * universal request whose `signal` aborts when the response closes (or the
 * HTTP/2 stream is reset, with the reset's code).
 *
 * Relies on (connect-node 2.2): `universalRequestFromNodeRequest` and
 * {@link writeUniversalResponse} are exported "to implement adapters",
 * with the warning that they may change. They are used because
 * `connectNodeAdapter` has no hook for what rpc-handler.ts adds: logging a
 * failed write through the server's logger instead of `console.error`
 * (which any client could trigger at will), gRPC-Web text mode, the
 * authority check, the reply budget's response and the compression scope.
 * Breaks: every RPC through connect-node. Upstream: `onError` and a
 * request/response transform option on `connectNodeAdapter`.
 * Pinned by: "universalRequestOf / writeUniversalResponse"; "abortWithReason"
 * (calls over every protocol through them).
 */
export function universalRequestOf(
  req: NodeRequest,
  res: NodeResponse,
  values: ContextValues,
): UniversalServerRequest {
  return universalRequestFromNodeRequest(req, res, undefined, values);
}

/**
 * Writes a universal response to the Node response (see
 * {@link universalRequestOf}). The headers go out with the first body
 * chunk; a write that fails is reported to the body's iterator with
 * `throw`, which is how connect learns that the peer is gone (so a
 * transform of the body must pass `throw` and `return` through).
 */
export function writeUniversalResponse(
  uRes: UniversalServerResponse,
  res: NodeResponse,
): Promise<void> {
  return universalResponseToNodeResponse(uRes, res);
}

// ---------------------------------------------------------------------------
// connect: deadlines

/** The longest delay a Node timer holds: 2^31 − 1 ms, about 24.8 days. */
export const maxTimerMs = 2 ** 31 - 1;

/**
 * Clamps a `grpc-timeout` or `connect-timeout-ms` longer than
 * {@link maxTimerMs} to that (`596H`, `2147483647`): the deadline the
 * client asked for is beyond any call's life, and the protocols' own
 * parsers still judge malformed values.
 *
 * Relies on (connect 2.2, Node 24): connect arms a call's deadline with
 * `setTimeout(timeoutMs)` as parsed (up to 99999999H, or 10 digits of
 * ms), and Node fires a timer longer than 2^31 − 1 ms after 1 ms (that
 * part is documented), so a client asking for 11,000 years would get
 * DEADLINE_EXCEEDED at once. The values are read with connect's own
 * parsers, so what is clamped is exactly what connect would arm. The
 * public `maxTimeoutMs` router option refuses such a deadline
 * (INVALID_ARGUMENT) rather than serving the call, so it is not used.
 * Breaks: such calls fail at once. Upstream: clamp the deadline timer.
 * Pinned by: "clampDeadline"; test/hostile/front-fuzz.test.ts (a deadline
 * of 11,000 years is served).
 */
export function clampDeadline(headers: Record<string, string | string[] | undefined>): void {
  const grpc = headers["grpc-timeout"];
  if (
    typeof grpc === "string" &&
    (parseGrpcTimeoutHeader(grpc, Infinity).timeoutMs ?? 0) > maxTimerMs
  ) {
    headers["grpc-timeout"] = `${Math.floor(maxTimerMs / 3_600_000)}H`;
  }
  const connect = headers["connect-timeout-ms"];
  if (
    typeof connect === "string" &&
    (parseConnectTimeoutHeader(connect, Infinity).timeoutMs ?? 0) > maxTimerMs
  ) {
    headers["connect-timeout-ms"] = String(maxTimerMs);
  }
}

/**
 * A call's deadline from its `grpc-timeout` (gRPC, gRPC-Web) or
 * `connect-timeout-ms` (Connect) header, parsed as connect parses it
 * (@private exports of `protocol-grpc` and `protocol-connect`): the
 * milliseconds, or the error connect answers a malformed value with.
 * Pinned by: "protocol pieces".
 */
export function parseDeadline(
  protocol: "grpc" | "connect",
  value: string | null,
): { timeoutMs?: number; error?: ConnectError | undefined } {
  return protocol === "connect"
    ? parseConnectTimeoutHeader(value, Number.MAX_SAFE_INTEGER)
    : parseGrpcTimeoutHeader(value, Number.MAX_SAFE_INTEGER);
}

// ---------------------------------------------------------------------------
// connect: the handler context and its errors

/**
 * The reason a handler context's signal carries once its call has ended
 * without an error: what the handler's own cleanup sees in `signal.reason`.
 */
export const callEnded: ConnectError = Object.freeze(
  new ConnectError("the call has ended", Code.Canceled),
);

/**
 * Gives `context.abort()` a reason when it is called without one.
 *
 * When a call ends, connect aborts its handler context's signal, without a
 * reason when the call succeeded; `AbortController.abort()` then builds a
 * `DOMException` with a stack trace, on every call. In a CPU profile of
 * SetVariable load that cost more than the handler's own work, so the
 * handler context is given {@link callEnded} instead. A call that fails
 * still aborts with its own error.
 *
 * Relies on (connect 2.2): the context passed to the `requestGate` is the
 * very object (connect's internal `HandlerContextController`) whose `abort`
 * the handler factories call when the call ends; the public
 * `HandlerContext` type leaves `abort` out. Breaks (silently): the
 * DOMException cost comes back; handlers see another reason. Upstream: a
 * reason on connect's own abort, or an option to give one.
 * Pinned by: "abortWithReason".
 */
export function abortWithReason(context: HandlerContext): void {
  const controller = context as HandlerContext & { abort?: (reason?: unknown) => void };
  const abort = controller.abort;
  if (typeof abort !== "function") return;
  controller.abort = (reason?: unknown) => abort.call(controller, reason ?? callEnded);
}

/** A correction of the error a call is about to be answered with. */
export interface ErrorCorrection {
  readonly message: string;
  readonly code: Code;
}

/**
 * Lets `correct` replace the code and message of the error a call is
 * aborted with, before that error is written to the client. Must be called
 * from a `requestGate`.
 *
 * Relies on (connect 2.2): every handler (Connect, gRPC and gRPC-Web, unary
 * and streaming) calls `context.abort(error)` with the error and only then
 * writes the status from that same error object, so an abort listener can
 * change it in place; and `ConnectError`'s `code`, `rawMessage` and
 * `message` are `readonly` in its type only. Breaks: undecodable requests
 * are answered INTERNAL (with connect's texts) instead of INVALID_ARGUMENT,
 * and size limits with connect's texts. Upstream: an error-mapping hook
 * that runs for errors raised before the interceptors (decoding, limits).
 * Pinned by: "correctBeforeWritten"; request-errors.test.ts (every
 * protocol, unary and streaming).
 */
export function correctBeforeWritten(
  context: HandlerContext,
  correct: (reason: unknown) => ErrorCorrection | undefined,
): void {
  const { signal } = context;
  signal.addEventListener(
    "abort",
    () => {
      const reason: unknown = signal.reason;
      const correction = correct(reason);
      if (correction === undefined || !(reason instanceof ConnectError)) return;
      const writable: { -readonly [K in keyof ConnectError]: ConnectError[K] } = reason;
      const replacement = new ConnectError(correction.message, correction.code);
      writable.code = replacement.code;
      writable.rawMessage = replacement.rawMessage;
      writable.message = replacement.message;
    },
    { once: true },
  );
}

/** What {@link connectRequestFailure} recognizes. */
export type ConnectRequestFailure =
  /** The request is not a valid protobuf message; `detail` is protobuf-es's reason. */
  | { readonly kind: "parse"; readonly detail: string }
  /** A message flagged as compressed in a request that names no compression. */
  | { readonly kind: "compressed-without-encoding" }
  /** A compressed message that zlib could not decompress. */
  | { readonly kind: "decompress"; readonly error: Error }
  /** A message over readMaxBytes (request) or writeMaxBytes (reply). */
  | {
      readonly kind: "size";
      readonly which: "request" | "reply";
      readonly size: number | undefined;
      readonly limit: number;
    };

// protocol/serialization.js wraps protobuf-es's error in a new ConnectError
// with this prefix and without a cause. Its counterpart "serialize binary: "
// is for replies.
const parseBinaryPrefix = "parse binary: ";
// protocol/envelope.js envelopeDecompress.
const compressedWithoutEncoding = "received compressed envelope, but do not know how to decompress";
// protocol/limit-io.js: a request over readMaxBytes, a reply over writeMaxBytes.
const sizeLimit =
  /^message size (?:(\d+) )?is larger than configured (readMaxBytes|writeMaxBytes) (\d+)$/;

/**
 * Which of connect's failures to read or size a message `e` is, if any.
 *
 * Relies on (connect 2.2, connect-node 2.2): connect reports these with no
 * code or cause of their own, so their texts are the only handle: INTERNAL
 * "parse binary: …" (protocol/serialization.js), INTERNAL "received
 * compressed envelope, but do not know how to decompress"
 * (protocol/envelope.js), RESOURCE_EXHAUSTED "message size [N ]is larger
 * than configured readMaxBytes|writeMaxBytes L" (protocol/limit-io.js); and
 * connect-node reports some zlib failures (a gzip stream cut short) as
 * INTERNAL with the zlib error (`code` "Z_…") as the cause. Breaks: those
 * requests are answered with connect's texts and codes again. Upstream:
 * distinct codes, or causes, for these errors.
 * Pinned by: "connectRequestFailure"; request-errors.test.ts.
 */
export function connectRequestFailure(e: unknown): ConnectRequestFailure | undefined {
  if (!(e instanceof ConnectError)) return undefined;
  if (e.code === Code.ResourceExhausted) {
    const m = sizeLimit.exec(e.rawMessage);
    if (m === null) return undefined;
    const [, size, which, limit] = m;
    return {
      kind: "size",
      which: which === "writeMaxBytes" ? "reply" : "request",
      size: size === undefined ? undefined : Number(size),
      limit: Number(limit),
    };
  }
  if (e.code !== Code.Internal) return undefined;
  if (e.rawMessage.startsWith(parseBinaryPrefix)) {
    return { kind: "parse", detail: e.rawMessage.slice(parseBinaryPrefix.length) };
  }
  if (e.rawMessage === compressedWithoutEncoding) return { kind: "compressed-without-encoding" };
  const zlib = zlibError(e.cause);
  return zlib === undefined ? undefined : { kind: "decompress", error: zlib };
}

function zlibError(cause: unknown): Error | undefined {
  if (!(cause instanceof Error) || !("code" in cause)) return undefined;
  return typeof cause.code === "string" && cause.code.startsWith("Z_") ? cause : undefined;
}

// ---------------------------------------------------------------------------
// connect: protocol pieces for replies written without connect
//
// Relies on (connect 2.2): `setTrailerStatus`, `trailerSerialize`,
// `endStreamToJson`, `errorToJsonBytes`, `codeToHttpStatus`, `trailerFlag`,
// `endStreamFlag` and both `parseTimeout`s are exports of connect's
// `protocol-*` subpaths marked "@private … does not follow semantic
// versioning". They are used so that a refusal or a directly served watch
// says exactly what connect's own handlers say (status details, message
// escaping, JSON shape). Breaks: a change of signature fails to compile; a
// change of output changes what those replies look like next to connect's.
// Upstream: public helpers to answer an error in a request's protocol.
// Pinned by: "protocol pieces" (the exact bytes), and the suites that read
// refusals and watches with connect's clients (test/server/watch.test.ts,
// test/hostile/front-fuzz.test.ts).

/**
 * One envelope of a gRPC, gRPC-Web or Connect stream: `flags`, the length
 * of `data` (32-bit big-endian) and `data`. The wire format itself is
 * public (the protocols' specifications); this is the one place that
 * writes it.
 */
export function frameEnvelope(flags: number, data: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(5 + data.length);
  frame[0] = flags;
  frame.writeUInt32BE(data.length, 1);
  frame.set(data, 5);
  return frame;
}

/** `grpc-status`, `grpc-message` (and details) for `error`, or status 0 for none. */
export function grpcStatus(error: ConnectError | undefined): Headers {
  return setTrailerStatus(new Headers(), error);
}

/** gRPC-Web's trailer frame carrying `status` (see {@link grpcStatus}). */
export function grpcWebTrailerFrame(status: Headers): Buffer {
  return frameEnvelope(trailerFlag, trailerSerialize(status));
}

/** The end-stream frame that ends every Connect stream: `error`, if any, as JSON. */
export function connectEndStreamFrame(error: ConnectError | undefined): Buffer {
  const json = JSON.stringify(endStreamToJson(new Headers(), error, undefined));
  return frameEnvelope(endStreamFlag, Buffer.from(json));
}

/** A Connect unary error body: `{"code": …, "message": …}` as UTF-8 JSON. */
export function connectErrorBody(error: ConnectError): Uint8Array {
  return errorToJsonBytes(error, undefined);
}

/** The HTTP status a Connect unary reply with `code` carries. */
export function connectHttpStatus(code: Code): number {
  return codeToHttpStatus(code);
}

// ---------------------------------------------------------------------------
// workerSessionManager

/**
 * connect-node's `Http2SessionManager` for the bridge's calls to workers,
 * with every HTTP/2 session it opens kept from raising a late error as an
 * uncaught exception, which would end the bridge.
 *
 * Why: when a worker sends GOAWAY on an idle connection (a Python worker
 * stopping does), the manager destroys the session with an error that Node
 * raises after the socket closed; if the manager left the session's state
 * before that (a new call saw the destroyed session and reconnected), it has
 * removed its error listeners and the error is uncaught: connect-es issue
 * 1768, fixed by its open pull request 1769 with the same guard as here. The
 * manager already guards `abort()` this way.
 *
 * Relies on: the manager's private `setState(state)`, called with every new
 * state, and the `conn` (the `ClientHttp2Session`) of its "ready" state.
 * Breaks if: connect-node renames either; the guard then silently stops
 * (the session is used as before). Goes when connect-node ships 1769.
 * Pinned by: edge-compat.test.ts "workerSessionManager" (the hook sees the
 * ready state's session and leaves the guard on it). The race itself (a
 * GOAWAY's deferred error after the state changed) is timing-dependent and
 * not reproduced here; upstream's pull request has a test for it.
 */
export function workerSessionManager(
  url: string,
  options: ConstructorParameters<typeof Http2SessionManager>[1],
): Http2SessionManager {
  const manager = new Http2SessionManager(url, options);
  const internal = manager as unknown as { setState?: (state: unknown) => void };
  const setState = internal.setState;
  if (typeof setState === "function") {
    internal.setState = function (this: unknown, state: unknown) {
      const conn = (state as { t?: unknown; conn?: unknown } | null)?.conn;
      if ((state as { t?: unknown }).t === "ready" && conn instanceof EventEmitter) {
        // Errors still reach the manager's own listener while it holds
        // the session; this one only keeps a late one from being uncaught.
        conn.on("error", ignoreLateError);
      }
      setState.call(this, state);
    };
  }
  return manager;
}

/** A session's error after the manager let go of it: nothing waits for it. */
function ignoreLateError(): void {}
