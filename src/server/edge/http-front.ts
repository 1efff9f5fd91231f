/**
 * One TCP port for every client of the bridge: gRPC over HTTP/2 cleartext
 * (Python grpcio, Envoy upstreams) and HTTP/1.1 (browsers via Connect or
 * gRPC-Web, Vite's dev proxy, curl), plus `/healthz`, `/metrics`, CORS and
 * graceful shutdown.
 *
 * Node's `http2.createServer({ allowHTTP1 })` only falls back to HTTP/1 after
 * TLS ALPN, so for cleartext this module accepts connections itself, looks at
 * the first bytes and hands the socket to an HTTP/2 or an HTTP/1 server: a
 * connection starting with the HTTP/2 client preface ("prior knowledge",
 * RFC 9113 §3.3) is HTTP/2, anything else is HTTP/1.
 *
 * It is longer than the other modules (about 600 lines) because the
 * protocol sniffing, the per-connection limits and timeouts, and the
 * graceful shutdown all act on the same sockets and servers, and each needs
 * the others' state.
 */
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  type ContextValues,
  cors,
  type Interceptor,
} from "@connectrpc/connect";
import { type ServerTimers, systemTimers, type TimerHandle } from "../common/timers.js";
import { createLogSampler } from "../observability/log-sampler.js";
import type { Logger } from "../observability/logger.js";
import type { MetricsRegistry } from "../observability/metrics.js";
import {
  armHttp1Timeouts,
  clampDeadline,
  closeIfBodyUnread,
  handOffToHttp1,
  handOffToHttp2,
  type NodeRequest,
  type NodeResponse,
  resetOnWriteStall,
} from "./edge-compat.js";
import {
  type ConnectionLimits,
  defaultConnectionLimits,
  defaultCorsAllowHeaders,
} from "./http-front-defaults.js";
import { requestErrorGate, requestErrorInterceptor } from "./request-errors.js";
import { refuseRequest } from "./request-refusal.js";
import { createRpcHandler } from "./rpc-handler.js";

// A front's defaults live below the option table, which builds on them.
export {
  type ConnectionLimits,
  defaultConnectionLimits,
  defaultCorsAllowHeaders,
} from "./http-front-defaults.js";

/** What {@link createHttpFront} serves and how; fixed at construction. */
export interface HttpFrontOptions {
  host: string;
  /** 0 picks a free port; {@link HttpFront.listen} reports the one chosen. */
  port: number;
  /**
   * Registers the RPC services, e.g. `(router) => router.service(BridgeService, impl)`.
   * Without it the front serves only its HTTP endpoints (an admin listener).
   */
  routes?: (router: ConnectRouter) => void;
  /**
   * Serves some RPC requests itself before connect-node sees them (the
   * WatchVariables fan-out path); returns false for the rest.
   */
  directRoutes?: (req: NodeRequest, res: NodeResponse) => boolean;
  /** Applied to every RPC in order, the first outermost. */
  interceptors?: Interceptor[];
  /** Per-request context values for the handlers (e.g. who the caller is). */
  contextValues?: (req: NodeRequest) => ContextValues;
  /** Exact origins browsers may call from; `"*"` in the list allows any origin. */
  corsOrigins: readonly string[];
  /** Request headers cross-origin calls may send (default {@link defaultCorsAllowHeaders}). */
  corsAllowHeaders?: readonly string[];
  /** Largest request message read; larger ones fail with RESOURCE_EXHAUSTED. */
  maxRequestBytes: number;
  /** Largest reply message written; a larger one fails with RESOURCE_EXHAUSTED. */
  maxReplyBytes?: number;
  /** Smallest reply compressed for a client that accepts compression (default: connect's 1 KiB). */
  compressMinBytes?: number;
  /** Readiness for `GET /healthz`; every field but `ok` is included in the response. */
  health?: () => { ok: boolean; [k: string]: unknown };
  /** Rendered by `GET /metrics`. */
  metrics?: MetricsRegistry;
  /** More JSON documents served on GET, by path (e.g. `/workers`). */
  json?: Readonly<Record<string, () => unknown>>;
  /** Connection limits and timeouts; see {@link ConnectionLimits}. */
  limits?: Partial<ConnectionLimits>;
  /**
   * The client a connection's peer address belongs to, for the per-client
   * connection limit; undefined leaves it uncounted (a trusted proxy).
   * Default: each peer address is a client.
   */
  clientOfPeer?: (address: string) => string | undefined;
  logger: Logger;
  /**
   * Schedules the front's own deadlines: classification, per-stream
   * request and stall timeouts, HTTP/2 idle, the shutdown grace period
   * (default: Node's timers). Node's socket and HTTP/1 server timeouts are
   * Node's own and stay on its clock.
   */
  timers?: ServerTimers;
}

/** A listening (or ready to listen) front; see {@link createHttpFront}. */
export interface HttpFront {
  /** Bind the port. Rejects with the `listen` error (e.g. `EADDRINUSE`). */
  listen(): Promise<{ host: string; port: number }>;
  /**
   * Shut down gracefully: stop accepting connections, fail `/healthz`, abort
   * {@link shutdownSignal} so watch streams end, let in-flight calls finish
   * for up to `graceMs` (default 10 000), then close whatever is left.
   * Idempotent: later calls return the first call's promise.
   */
  close(options?: { graceMs?: number }): Promise<void>;
  /**
   * Aborted (with a `ConnectError` of code UNAVAILABLE) when `close()` begins.
   * Long-lived streams listen to it to end cleanly. (connect-node's own
   * `shutdownSignal` option would instead abort every call's `ctx.signal`,
   * unary calls that should be allowed to finish included.)
   */
  readonly shutdownSignal: AbortSignal;
  /** Connections open now. */
  readonly connectionCount: number;
}

const h2Preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

// Browsers cache a preflight at most this long (Chromium caps at 2 hours).
const preflightMaxAgeSeconds = 7200;

interface Connection {
  readonly socket: net.Socket;
  kind: "sniffing" | "http1" | "http2";
  /** Requests (HTTP/1) or streams (HTTP/2) whose response has not closed yet. */
  active: number;
  session?: http2.ServerHttp2Session;
  /** Closes an HTTP/2 connection that has had no stream for idleTimeoutMs. */
  idle?: TimerHandle;
}

/**
 * Create the front. Nothing is bound until {@link HttpFront.listen}.
 *
 * @example
 * ```ts
 * const front = createHttpFront({
 *   host: "127.0.0.1", port: 50051, corsOrigins: ["http://localhost:5173"],
 *   maxRequestBytes: 4 << 20, routes: (r) => r.service(BridgeService, impl),
 *   interceptors: [createMetricsInterceptor(metrics)],
 *   health: () => ({ ok: true, sessions: store.size }), metrics, logger,
 * });
 * const { port } = await front.listen();
 * process.once("SIGTERM", () => void front.close({ graceMs: 10_000 }));
 * ```
 */
export function createHttpFront(options: HttpFrontOptions): HttpFront {
  const { logger, metrics } = options;
  const limits: ConnectionLimits = { ...defaultConnectionLimits, ...options.limits };
  const timers = options.timers ?? systemTimers;
  const shutdown = new AbortController();
  const connections = new Map<net.Socket, Connection>();
  let listening: Promise<unknown> | undefined;
  let closing: Promise<void> | undefined;

  const routes = options.routes;
  const rpc =
    routes === undefined
      ? serveNonRpc
      : createRpcHandler({
          routes,
          logger,
          interceptors: [requestErrorInterceptor, ...(options.interceptors ?? [])],
          // Undecodable requests: INVALID_ARGUMENT (see request-errors.ts).
          requestGate: requestErrorGate,
          ...(options.contextValues === undefined ? {} : { contextValues: options.contextValues }),
          readMaxBytes: options.maxRequestBytes,
          ...(options.maxReplyBytes === undefined ? {} : { writeMaxBytes: options.maxReplyBytes }),
          ...(options.compressMinBytes === undefined
            ? {}
            : { compressMinBytes: options.compressMinBytes }),
          grpc: true,
          grpcWeb: true,
          connect: true,
          fallback: (req: NodeRequest, res: NodeResponse) => serveNonRpc(req, res),
        });

  const clientOfPeer = options.clientOfPeer ?? ((address: string) => address);
  /** Open connections per client; clients with none hold no entry. */
  const perClient = new Map<string, number>();
  const refusedPerClient = createLogSampler(logger, {
    level: "warn",
    msg: "connection refused: the client's connection limit is reached",
    timers,
  });
  const failedRequests = createLogSampler(logger, {
    level: "error",
    msg: "a request failed before it was served",
    timers,
  });

  const corsPolicy = createCorsPolicy(
    options.corsOrigins,
    options.corsAllowHeaders ?? defaultCorsAllowHeaders,
  );

  const serve = (req: NodeRequest, res: NodeResponse) => {
    if (req instanceof http.IncomingMessage) {
      trackHttp1(req, res as http.ServerResponse);
      closeIfBodyUnread(req, res as http.ServerResponse);
    } else {
      guardHttp2Stream(req as http2.Http2ServerRequest);
    }
    if (corsPolicy(req, res)) return;
    clampDeadline(req.headers);
    if (options.directRoutes?.(req, res)) return;
    rpc(req, res);
  };
  // Whatever a request makes the code above throw stays that request's
  // failure: an exception escaping a 'request' listener would end the
  // process, every listener and every in-memory session with it.
  const onRequest = (req: NodeRequest, res: NodeResponse) => {
    try {
      serve(req, res);
    } catch (error) {
      failedRequests.report({ error, method: req.method, path: (req.url ?? "").slice(0, 200) });
      refuseRequest(
        req,
        res,
        error instanceof ConnectError && error.code !== Code.Internal
          ? error
          : new ConnectError("internal error", Code.Internal),
      );
    }
  };

  const http1Server = http.createServer(
    {
      // Node checks the headers and request timeouts only this often (30 s
      // by default), so a slow request would otherwise hold its connection
      // up to that much longer than the timeouts say.
      connectionsCheckingInterval: Math.max(
        25,
        Math.min(1000, Math.floor(Math.min(limits.headersTimeoutMs, limits.requestTimeoutMs) / 4)),
      ),
    },
    onRequest,
  );
  // Slow-loris guards: headers and the whole request must arrive in time;
  // an idle keep-alive connection is closed.
  http1Server.headersTimeout = limits.headersTimeoutMs;
  http1Server.requestTimeout = Math.max(limits.requestTimeoutMs, limits.headersTimeoutMs);
  http1Server.keepAliveTimeout = limits.idleTimeoutMs;
  // Socket inactivity: with a listener for 'timeout', Node leaves the
  // decision to it (see onHttp1Timeout).
  http1Server.timeout = limits.writeStallTimeoutMs;
  http1Server.on("timeout", (socket: net.Socket) => onHttp1Timeout(socket));
  const http2Server = http2.createServer({
    settings: { maxConcurrentStreams: limits.maxStreamsPerConnection },
  });
  http2Server.on("request", onRequest);

  http2Server.on("sessionError", (error) => {
    logger.debug("http2 session error", { error });
  });

  /**
   * An HTTP/1 socket was quiet for a while. Idle between requests: close it.
   * A response waiting on a peer that stopped reading: destroy it, which
   * frees the reply. A streaming response that simply has nothing to say
   * (a quiet watch) stays open.
   */
  function onHttp1Timeout(socket: net.Socket): void {
    const conn = connections.get(socket);
    if (conn === undefined || conn.active === 0 || socket.writableLength > 0) {
      socket.destroy();
    }
  }

  /**
   * Per-stream guards on HTTP/2: every RPC sends its one request message
   * right away, so a stream still receiving after requestTimeoutMs is
   * reset; a response the peer stops reading is reset after
   * writeStallTimeoutMs (quiet streams are left alone).
   */
  function guardHttp2Stream(req: http2.Http2ServerRequest): void {
    const stream = req.stream;
    const timer = timers.setTimeout(() => {
      if (!req.complete && !stream.destroyed) stream.close(http2.constants.NGHTTP2_CANCEL);
    }, limits.requestTimeoutMs);
    timer.unref();
    // 'on', not 'once': a stream closes once, and once's wrapper would be
    // one more object per stream.
    stream.on("close", () => timers.clearTimeout(timer));
    resetOnWriteStall(stream, limits.writeStallTimeoutMs, timers);
  }

  function watchHttp2Session(conn: Connection, session: http2.ServerHttp2Session): void {
    // One timer per connection, restarted (not re-created) whenever the last
    // stream closes; it closes the connection only if it is still idle.
    const idle = timers.setTimeout(() => {
      if (conn.active === 0) session.close();
    }, limits.idleTimeoutMs);
    idle.unref();
    conn.idle = idle;
    session.on("stream", (stream: http2.ServerHttp2Stream) => {
      conn.active++;
      stream.on("close", () => {
        conn.active--;
        if (conn.active === 0 && !session.closed) idle.refresh();
      });
    });
    session.once("close", () => timers.clearTimeout(idle));
  }

  function trackHttp1(req: http.IncomingMessage, res: http.ServerResponse): void {
    const conn = connections.get(req.socket);
    if (conn === undefined) return;
    conn.active++;
    // Node clears the socket timeout when a kept-alive connection starts its
    // next request; every request gets the stall guard again. The socket's
    // own timeout, on Node's clock: only the socket sees its bytes move.
    req.socket.setTimeout(limits.writeStallTimeoutMs);
    // After close() begins, every response ends its keep-alive connection.
    if (closing !== undefined) res.setHeader("Connection", "close");
    res.once("close", () => {
      conn.active--;
      if (closing !== undefined && conn.active === 0) conn.socket.end();
    });
  }

  function serveNonRpc(req: NodeRequest, res: NodeResponse): void {
    const path = (req.url ?? "").split("?", 1)[0];
    const json =
      path !== undefined && options.json !== undefined && Object.hasOwn(options.json, path)
        ? options.json[path]
        : undefined;
    if (
      !(path === "/healthz" && options.health !== undefined) &&
      !(path === "/metrics" && metrics !== undefined) &&
      json === undefined
    ) {
      send(res, 404, "text/plain; charset=utf-8", "not found\n");
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.setHeader("Allow", "GET, HEAD");
      send(res, 405, "text/plain; charset=utf-8", "method not allowed\n");
      return;
    }
    const head = req.method === "HEAD";
    if (json !== undefined) {
      send(res, 200, "application/json", `${JSON.stringify(json())}\n`, head);
      return;
    }
    if (path === "/healthz") {
      const [status, body] = healthReport();
      send(res, status, "application/json", `${JSON.stringify(body)}\n`, head);
      return;
    }
    const registry = metrics as MetricsRegistry;
    registry.render().then(
      (text) => send(res, 200, registry.contentType, text, head),
      (error: unknown) => {
        logger.error("metrics collection failed", { error });
        send(res, 500, "text/plain; charset=utf-8", "metrics collection failed\n", head);
      },
    );
  }

  function healthReport(): [number, Record<string, unknown>] {
    if (closing !== undefined) return [503, { status: "shutting_down" }];
    let report: { ok: boolean; [k: string]: unknown };
    try {
      report = (options.health as () => { ok: boolean; [k: string]: unknown })();
    } catch (error) {
      logger.warn("health check failed", { error });
      return [503, { status: "error" }];
    }
    const { ok, ...fields } = report;
    const body: Record<string, unknown> = { status: "", ...fields };
    body.status = ok ? "ok" : "unavailable";
    return [ok ? 200 : 503, body];
  }

  function onConnection(socket: net.Socket): void {
    const client = clientOfPeer(socket.remoteAddress ?? "");
    if (client !== undefined) {
      const open = perClient.get(client) ?? 0;
      if (open >= limits.maxConnectionsPerClient) {
        refusedPerClient.report({
          client,
          maxConnectionsPerClient: limits.maxConnectionsPerClient,
        });
        socket.destroy();
        return;
      }
      perClient.set(client, open + 1);
      socket.once("close", () => {
        const left = (perClient.get(client) ?? 1) - 1;
        if (left > 0) perClient.set(client, left);
        else perClient.delete(client);
      });
    }
    const conn: Connection = { socket, kind: "sniffing", active: 0 };
    connections.set(socket, conn);
    socket.on("close", () => connections.delete(socket));
    // Finds peers that vanished without a FIN (their streams would stay open).
    socket.setKeepAlive(true, 60_000);
    // Stays for the socket's lifetime: a reset during classification (or in a
    // gap between the servers' own listeners) must not become an uncaught error.
    socket.on("error", (error) => logger.debug("connection error", { error }));

    let received: Buffer = Buffer.alloc(0);
    // A connection that has not sent enough bytes to classify in time is
    // dropped, so idle or half-open sockets cannot pile up before either
    // server (and its own timeouts) takes over.
    const timer = timers.setTimeout(() => socket.destroy(), limits.headersTimeoutMs);
    timer.unref();
    socket.once("close", () => timers.clearTimeout(timer));
    const onEnd = () => socket.destroy();
    const onData = (chunk: Buffer) => {
      received = received.length === 0 ? chunk : Buffer.concat([received, chunk]);
      const n = Math.min(received.length, h2Preface.length);
      const isH2 = received.subarray(0, n).equals(h2Preface.subarray(0, n));
      if (isH2 && received.length < h2Preface.length) return; // a prefix of it: wait for more
      timers.clearTimeout(timer);
      socket.off("data", onData);
      socket.off("end", onEnd);
      socket.pause();
      handOff(conn, received, isH2);
    };
    socket.on("data", onData);
    socket.on("end", onEnd);
  }

  // Both servers take over the socket's native handle and read the bytes
  // already read first (see edge-compat.ts).
  function handOff(conn: Connection, received: Buffer, isH2: boolean): void {
    const { socket } = conn;
    if (isH2) {
      conn.kind = "http2";
      const session = handOffToHttp2(http2Server, socket, received);
      if (session === undefined) return;
      conn.session = session;
      watchHttp2Session(conn, session);
      // A connection classified after close() began gets GOAWAY right away.
      if (closing !== undefined) session.close();
    } else {
      conn.kind = "http1";
      handOffToHttp1(http1Server, socket, received);
    }
  }

  const netServer = net.createServer(
    // As http.Server does: HTTP/1 handles half-closed sockets itself.
    { allowHalfOpen: true, noDelay: true },
    onConnection,
  );
  // Beyond this, new connections are closed at accept.
  netServer.maxConnections = limits.maxConnections;
  let lastDropLog = 0;
  netServer.on("drop", () => {
    // A flood would otherwise write a line per refused connection.
    if (timers.now() - lastDropLog < 10_000) return;
    lastDropLog = timers.now();
    logger.warn("connections refused: connection limit reached", {
      maxConnections: limits.maxConnections,
    });
  });

  function drain(conn: Connection): void {
    switch (conn.kind) {
      case "http2":
        // GOAWAY: streams in flight finish, new ones are refused.
        conn.session?.close();
        break;
      case "http1":
        if (conn.active === 0) conn.socket.end();
        break;
      case "sniffing":
        // Classified later, it gets the closing treatment in handOff/trackHttp1.
        break;
    }
  }

  async function closeGracefully(graceMs: number): Promise<void> {
    shutdown.abort(new ConnectError("server is shutting down", Code.Unavailable));
    // A listen() still binding finishes first, so closing cannot leave the port bound.
    await listening?.catch(() => undefined);
    const stopped = new Promise<void>((resolve) => {
      if (!netServer.listening) {
        resolve();
        return;
      }
      // Called once the last accepted connection has closed.
      netServer.close(() => resolve());
    });
    for (const conn of connections.values()) drain(conn);
    const force = timers.setTimeout(() => {
      if (connections.size > 0) {
        logger.warn("shutdown grace period over; closing remaining connections", {
          connections: connections.size,
          graceMs,
        });
      }
      for (const conn of connections.values()) {
        conn.session?.destroy();
        conn.socket.destroy();
      }
    }, graceMs);
    force.unref();
    await stopped;
    timers.clearTimeout(force);
    http1Server.close();
    http2Server.close();
  }

  return {
    shutdownSignal: shutdown.signal,
    get connectionCount() {
      return connections.size;
    },

    listen() {
      if (closing !== undefined) return Promise.reject(new Error("the front is closed"));
      if (listening !== undefined) return Promise.reject(new Error("listen() was already called"));
      const bound = new Promise<{ host: string; port: number }>((resolve, reject) => {
        const onError = (error: Error) => reject(error);
        netServer.once("error", onError);
        netServer.listen({ host: options.host, port: options.port }, () => {
          netServer.off("error", onError);
          netServer.on("error", (error) => logger.error("server socket error", { error }));
          // The HTTP/1 server never listens itself (this front owns the
          // port): its headers and request timeouts are started here.
          armHttp1Timeouts(http1Server);
          const address = netServer.address() as net.AddressInfo;
          resolve({ host: options.host, port: address.port });
        });
      });
      listening = bound;
      return bound;
    },

    close(closeOptions = {}) {
      closing ??= closeGracefully(closeOptions.graceMs ?? 10_000);
      return closing;
    },
  };
}

function send(
  res: NodeResponse,
  status: number,
  contentType: string,
  body: string,
  headOnly = false,
): void {
  res.setHeader("Content-Type", contentType);
  res.setHeader("Cache-Control", "no-store");
  res.setHeader("Content-Length", Buffer.byteLength(body));
  res.statusCode = status;
  if (headOnly) res.end();
  else res.end(body);
}

/**
 * Returns a function that adds CORS headers to `res` and answers preflights;
 * it returns true when it has answered the request.
 *
 * Only exact origins from the allowlist are echoed, never reflected blindly,
 * because session ids travel in requests and any page could otherwise read
 * responses made with a leaked one.
 */
function createCorsPolicy(
  corsOrigins: readonly string[],
  corsAllowHeaders: readonly string[],
): (req: NodeRequest, res: NodeResponse) => boolean {
  const any = corsOrigins.includes("*");
  const allowed = new Set(corsOrigins);
  const allowMethods = cors.allowedMethods.join(", ");
  const allowHeaders = corsAllowHeaders.join(", ");
  const exposeHeaders = cors.exposedHeaders.join(", ");
  return (req, res) => {
    // The answer depends on Origin whenever the list is exact, so caches must
    // key on it even for requests without one.
    if (!any && allowed.size > 0) res.setHeader("Vary", "Origin");
    const origin = req.headers.origin;
    const ok = origin !== undefined && (any || allowed.has(origin));
    const preflight =
      req.method === "OPTIONS" && req.headers["access-control-request-method"] !== undefined;
    if (preflight) {
      if (!ok) {
        send(res, 403, "text/plain; charset=utf-8", "origin not allowed\n");
        return true;
      }
      res.setHeader("Access-Control-Allow-Origin", any ? "*" : origin);
      res.setHeader("Access-Control-Allow-Methods", allowMethods);
      res.setHeader("Access-Control-Allow-Headers", allowHeaders);
      res.setHeader("Access-Control-Max-Age", String(preflightMaxAgeSeconds));
      res.statusCode = 204;
      res.end();
      return true;
    }
    if (ok) {
      res.setHeader("Access-Control-Allow-Origin", any ? "*" : origin);
      res.setHeader("Access-Control-Expose-Headers", exposeHeaders);
    }
    return false;
  };
}
