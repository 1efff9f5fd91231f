/**
 * An HTTP/2 connection to a worker for connect-node's gRPC transport,
 * opened on first use and opened again after it ends. Unlike connect-node's
 * Http2SessionManager, it keeps an error listener on every session for the
 * session's whole life: a worker can send GOAWAY, reset or close at any
 * moment, and the manager can leave a session's deferred error without a
 * listener (connect-es issue 1768), which Node raises as an uncaught
 * exception. Anything that goes wrong here fails the call that was using the
 * connection, never the process.
 *
 * Health checks use it; forwarded calls use connect-node's manager with
 * the same guard added (`workerSessionManager` in edge-compat.ts), which
 * they need for its PING check of connections that went dead while idle.
 * A check needs no PING (it is one), but counts GOAWAYs (see `goaways`),
 * which the manager does not expose.
 */
import http2 from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";
import { type ServerTimers, systemTimers } from "../common/timers.js";

/** What `createGrpcTransport({ sessionManager })` takes. */
export interface WorkerConnection {
  readonly authority: string;
  request(
    method: string,
    path: string,
    headers: http2.OutgoingHttpHeaders,
    options: Omit<http2.ClientSessionRequestOptions, "signal">,
  ): Promise<http2.ClientHttp2Stream>;
  notifyResponseByteRead(stream: http2.ClientHttp2Stream): void;
  /**
   * GOAWAY frames received so far: a call that failed after one may have
   * been refused unprocessed by a worker closing its connection (and may be
   * sent again on a new one).
   */
  readonly goaways: number;
  /** Closes the connection now, failing what runs on it. */
  close(): void;
}

/** Options of {@link createWorkerConnection}. */
export interface WorkerConnectionOptions {
  /** How long connecting may take before the attempt is given up. */
  readonly connectTimeoutMs: number;
  /** A connection without a frame in either direction for this long is closed. */
  readonly idleMs: number;
  /** Runs the connect deadline (default: Node's timers). */
  readonly timers?: ServerTimers;
}

/** Creates the connection to the worker at `url` (`http://host:port`); nothing is opened yet. */
export function createWorkerConnection(
  url: string,
  options: WorkerConnectionOptions,
): WorkerConnection {
  const authority = new URL(url).origin;
  const timers = options.timers ?? systemTimers;
  let current: { session: http2.ClientHttp2Session; ready: Promise<void> } | undefined;
  let goaways = 0;

  const usable = (session: http2.ClientHttp2Session) => !session.closed && !session.destroyed;

  const open = () => {
    const session = http2.connect(authority);
    // Errors reach the streams (and the wait below); this listener only
    // keeps a late one from being uncaught.
    session.on("error", () => undefined);
    // After GOAWAY no new stream may start here: the next call opens a new
    // connection, and calls running on this one finish.
    const retire = () => {
      if (current?.session === session) current = undefined;
    };
    session.on("goaway", () => {
      goaways++;
      retire();
    });
    session.on("close", retire);
    // The session's own idle timeout (Node's, on its clock, not the
    // injected timers): only the session sees its frames come and go.
    session.setTimeout(options.idleMs, () => session.close());
    // An idle check connection never keeps the process alive.
    session.unref();
    const ready = new Promise<void>((resolve, reject) => {
      const fail = (why: string) => {
        timers.clearTimeout(timer);
        retire();
        session.destroy();
        reject(new ConnectError(`cannot connect to the worker: ${why}`, Code.Unavailable));
      };
      const timer = timers.setTimeout(
        () => fail(`no connection within ${options.connectTimeoutMs} ms`),
        options.connectTimeoutMs,
      );
      timer.unref();
      session.once("connect", () => {
        timers.clearTimeout(timer);
        resolve();
      });
      session.once("error", (error: Error) => fail(error.message));
      session.once("close", () => fail("the connection closed"));
    });
    // A failed attempt is reported to the call that awaits it.
    ready.catch(() => undefined);
    current = { session, ready };
    return current;
  };

  return {
    authority,
    get goaways() {
      return goaways;
    },
    async request(method, path, headers, requestOptions) {
      const { session, ready } =
        current !== undefined && usable(current.session) ? current : open();
      await ready;
      return session.request({ ...headers, ":method": method, ":path": path }, requestOptions);
    },
    notifyResponseByteRead() {
      // No keep-alive pings to put off: checks come often enough.
    },
    close() {
      current?.session.destroy();
      current = undefined;
    },
  };
}
