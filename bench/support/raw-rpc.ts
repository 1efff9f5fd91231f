/**
 * A lean unary RPC client for load generation: pre-encoded request bytes,
 * response bodies drained and counted but not decoded, success checked from
 * the status alone (grpc-status 0, or HTTP 200 for Connect).
 *
 * Why not connect-node's client: on a 2-core machine the load generator
 * shares the CPU with the server, and a full client costs about as much per
 * call as the server does, so server-side differences (GetVariable vs echo)
 * would be diluted by a constant client cost. Tools like ghz or h2load do
 * the same. The full client is still what `redis` uses, where the question
 * is what an application sees.
 */
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";

/** Unary calls of one service over one protocol. */
export interface RawRpc {
  /** Calls `method` (e.g. "GetVariable") with an encoded request message. */
  unary(method: string, message: Uint8Array): Promise<void>;
  close(): void;
}

const service = "snakepit.bridge.BridgeService";

/** gRPC over one HTTP/2 cleartext connection (prior knowledge), like grpcio. */
export function createRawGrpc(baseUrl: string): RawRpc {
  const url = new URL(baseUrl);
  const session = http2.connect(baseUrl, {
    // As gRPC clients do: small frames must not wait for Nagle's algorithm.
    createConnection: () =>
      net.connect({ host: url.hostname, port: Number(url.port), noDelay: true }),
  });
  session.on("error", () => {
    // Calls in flight fail on their own stream's error event.
  });
  return {
    unary(method, message) {
      const frame = Buffer.allocUnsafe(5 + message.length);
      frame[0] = 0;
      frame.writeUInt32BE(message.length, 1);
      frame.set(message, 5);
      return new Promise((resolve, reject) => {
        const stream = session.request({
          ":method": "POST",
          ":path": `/${service}/${method}`,
          "content-type": "application/grpc+proto",
          te: "trailers",
        });
        let status: string | undefined;
        stream.on("response", (headers) => {
          // Trailers-only responses (errors) carry the status in the headers.
          if (headers["grpc-status"] !== undefined) status = String(headers["grpc-status"]);
        });
        stream.on("trailers", (trailers) => {
          status = String(trailers["grpc-status"]);
        });
        stream.on("data", () => {});
        stream.on("error", reject);
        stream.on("end", () => {
          if (status === "0") resolve();
          else reject(new Error(`${method}: grpc-status ${status}`));
        });
        stream.end(frame);
      });
    },
    close() {
      session.close();
    },
  };
}

/** Connect unary with binary messages over HTTP/1.1 keep-alive connections. */
export function createRawConnect(baseUrl: string, maxSockets: number): RawRpc {
  const url = new URL(baseUrl);
  const agent = new http.Agent({ keepAlive: true, maxSockets });
  return {
    unary(method, message) {
      return new Promise((resolve, reject) => {
        const req = http.request(
          {
            host: url.hostname,
            port: url.port,
            method: "POST",
            path: `/${service}/${method}`,
            agent,
            headers: {
              "content-type": "application/proto",
              "connect-protocol-version": "1",
              "content-length": message.length,
            },
          },
          (res) => {
            res.on("data", () => {});
            res.on("error", reject);
            res.on("end", () => {
              if (res.statusCode === 200) resolve();
              else reject(new Error(`${method}: HTTP ${res.statusCode}`));
            });
          },
        );
        req.on("error", reject);
        req.end(message);
      });
    },
    close() {
      agent.destroy();
    },
  };
}
