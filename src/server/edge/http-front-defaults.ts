/**
 * What an HTTP front (`http-front.ts`) applies unless told otherwise: its
 * connection limits and the request headers it lets browsers send
 * cross-origin. The option table (`config-options.ts`) offers each as a
 * setting, with these as defaults; this module imports nothing, so the
 * front and the table both build on it.
 */

/** What one peer can hold on a front, and for how long. */
export interface ConnectionLimits {
  /** Open connections; more are refused at accept. */
  readonly maxConnections: number;
  /** Open connections of one client (see `HttpFrontOptions.clientOfPeer`); more are refused at accept. */
  readonly maxConnectionsPerClient: number;
  /** HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS. */
  readonly maxStreamsPerConnection: number;
  /** A connection with no request in flight for this long is closed. */
  readonly idleTimeoutMs: number;
  /** Time to classify a new connection, and to receive an HTTP/1 request's headers. */
  readonly headersTimeoutMs: number;
  /** Time to receive a whole request. */
  readonly requestTimeoutMs: number;
  /** A response with bytes the peer has not taken for this long is reset. */
  readonly writeStallTimeoutMs: number;
}

/** The connection limits of a front not told otherwise (and of `serve`'s listeners). */
export const defaultConnectionLimits: ConnectionLimits = Object.freeze({
  maxConnections: 4096,
  maxConnectionsPerClient: 256,
  maxStreamsPerConnection: 256,
  idleTimeoutMs: 120_000,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  writeStallTimeoutMs: 30_000,
});

/**
 * The request headers a cross-origin caller may send unless told otherwise
 * (`--cors-allow-headers`): those Connect and gRPC-Web clients send
 * (connect-es's `cors.allowedHeaders`), the worker token (authorization), a
 * request id for tracing, the session id header a client sends for
 * session-affine routing, and snakepit's correlation id of tool calls.
 */
export const defaultCorsAllowHeaders: readonly string[] = Object.freeze([
  "authorization",
  "content-type",
  "connect-protocol-version",
  "connect-timeout-ms",
  "connect-content-encoding",
  "connect-accept-encoding",
  "content-encoding",
  "accept-encoding",
  "grpc-timeout",
  "grpc-message-type",
  "x-grpc-web",
  "x-user-agent",
  "x-request-id",
  "x-session-id",
  "x-snakepit-correlation-id",
]);
