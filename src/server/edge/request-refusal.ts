/**
 * Answers a request that the front refuses before any RPC handler runs (a
 * malformed `Host`, a request whose handling threw), in the request's own
 * protocol, so that every client reports the status it carries instead of
 * a transport failure: gRPC and gRPC-Web get a trailers-only reply with
 * `grpc-status`, Connect unary an HTTP error status with Connect's JSON
 * error body, Connect streaming an end-stream frame, anything else a plain
 * text 4xx/5xx.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import {
  connectEndStreamFrame,
  connectErrorBody,
  connectHttpStatus,
  grpcStatus,
  type NodeRequest,
  type NodeResponse,
} from "./edge-compat.js";
import { safeMessage } from "./error-hygiene.js";
import { grpcWebTextContentType, isGrpcWebText } from "./grpc-web-text.js";

/** The protocol a request speaks, as far as answering an error goes. */
export type ReplyProtocol = "grpc" | "grpc-web" | "connect-stream" | "connect-unary" | "http";

/** Which protocol `req` speaks, from its method and content type. */
export function replyProtocolOf(req: NodeRequest): ReplyProtocol {
  const header = req.headers["content-type"];
  const type = (typeof header === "string" ? header : "").split(";", 1)[0]?.trim().toLowerCase();
  if (type === undefined || type === "") {
    // Connect's GET requests carry the message in the query string.
    return req.method === "GET" && (req.url ?? "").includes("?") ? "connect-unary" : "http";
  }
  if (type.startsWith("application/grpc-web")) return "grpc-web";
  if (type === "application/grpc" || type.startsWith("application/grpc+")) return "grpc";
  if (type.startsWith("application/connect+")) return "connect-stream";
  if (type === "application/proto" || type === "application/json") return "connect-unary";
  return "http";
}

/**
 * Writes `error` as the whole reply to `req`, unless a reply has begun (then
 * the response is destroyed: nothing else can tell the client). Never
 * throws; the caller logs.
 */
export function refuseRequest(req: NodeRequest, res: NodeResponse, error: ConnectError): void {
  if (res.headersSent || res.writableEnded || res.destroyed) {
    if (!res.writableEnded) res.destroy();
    return;
  }
  const safe = new ConnectError(safeMessage(error.rawMessage), error.code);
  try {
    const contentType = req.headers["content-type"];
    writeRefusal(replyProtocolOf(req), contentType, res, safe);
  } catch {
    // The response object refused the headers or the body (e.g. its stream
    // was reset meanwhile): nothing can reach the client any more.
    res.destroy();
  }
  // The body, if any, is not read: let it drain so HTTP/1 can finish.
  if (!req.complete) req.resume();
}

function writeRefusal(
  protocol: ReplyProtocol,
  contentType: string | undefined,
  res: NodeResponse,
  error: ConnectError,
): void {
  res.setHeader("cache-control", "no-store");
  switch (protocol) {
    case "grpc":
    case "grpc-web": {
      // Trailers-only: the status travels in the headers.
      res.statusCode = 200;
      res.setHeader(
        "content-type",
        protocol === "grpc"
          ? "application/grpc+proto"
          : isGrpcWebText(contentType)
            ? grpcWebTextContentType
            : "application/grpc-web+proto",
      );
      for (const [k, v] of grpcStatus(error)) res.setHeader(k, v);
      res.end();
      return;
    }
    case "connect-stream": {
      res.statusCode = 200;
      res.setHeader("content-type", "application/connect+proto");
      res.end(connectEndStreamFrame(error));
      return;
    }
    case "connect-unary": {
      const body = connectErrorBody(error);
      res.statusCode = connectHttpStatus(error.code);
      res.setHeader("content-type", "application/json");
      res.setHeader("content-length", body.length);
      res.end(body);
      return;
    }
    case "http": {
      const body = `${error.rawMessage}\n`;
      res.statusCode = error.code === Code.Internal ? 500 : connectHttpStatus(error.code);
      res.setHeader("content-type", "text/plain; charset=utf-8");
      res.setHeader("content-length", Buffer.byteLength(body));
      res.end(body);
      return;
    }
  }
}
