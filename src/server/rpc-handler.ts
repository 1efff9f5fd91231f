/**
 * The Node request handler for the bridge's RPCs: connect-node's adapter,
 * written out so that a call that fails after its handler ran (the peer
 * reset the stream, the server cut a reply nobody read) is logged through
 * the server's logger. connect-node's own adapter prints each one to stderr
 * with a stack trace, which any client could trigger at will. It also
 * serves gRPC-Web's text mode, which connect-node refuses (grpc-web-text.ts).
 */

import type { ConnectRouter, ContextValues } from "@connectrpc/connect";
import {
  Code,
  ConnectError,
  type ConnectRouterOptions,
  createConnectRouter,
} from "@connectrpc/connect";
import type { connectNodeAdapter } from "@connectrpc/connect-node";
import {
  compressionBrotli,
  compressionGzip,
  universalRequestFromNodeRequest,
  universalResponseToNodeResponse,
} from "@connectrpc/connect-node";
import { fromGrpcWebText, toGrpcWebText } from "./grpc-web-text.js";
import type { Logger } from "./logger.js";

type NodeHandler = ReturnType<typeof connectNodeAdapter>;
type NodeRequest = Parameters<NodeHandler>[0];
type NodeResponse = Parameters<NodeHandler>[1];

/** Options of {@link createRpcHandler}: connect's router options and a few of the adapter's. */
export interface RpcHandlerOptions extends ConnectRouterOptions {
  readonly routes: (router: ConnectRouter) => void;
  /** Answers requests for any other path. */
  readonly fallback: (req: NodeRequest, res: NodeResponse) => void;
  readonly contextValues?: (req: NodeRequest) => ContextValues;
  readonly logger: Logger;
}

/** Creates the handler; see the module comment. */
export function createRpcHandler(options: RpcHandlerOptions): NodeHandler {
  const router = createConnectRouter({
    acceptCompression: [compressionGzip, compressionBrotli],
    ...options,
  });
  options.routes(router);
  const paths = new Map(router.handlers.map((h) => [h.requestPath, h]));
  return (req, res) => {
    const handler = paths.get((req.url ?? "").split("?", 1)[0] ?? "");
    if (handler === undefined) {
      options.fallback(req, res);
      return;
    }
    const uReq = universalRequestFromNodeRequest(req, res, undefined, options.contextValues?.(req));
    // gRPC-Web's text mode is the binary mode in base64: decoded here, so
    // that every handler serves it.
    const binary = fromGrpcWebText(uReq);
    handler(binary ?? uReq)
      .then((uRes) => universalResponseToNodeResponse(binary ? toGrpcWebText(uRes) : uRes, res))
      .catch((reason: unknown) => {
        const error = ConnectError.from(reason);
        if (error.code === Code.Aborted) return;
        // The response could not be written: the peer went away or its
        // stream was reset. Routine on a public port, and nothing to answer.
        const gone = res.destroyed || (res.socket?.destroyed ?? true);
        options.logger[gone ? "debug" : "error"]("rpc failed after its handler ran", {
          rpc: handler.method.name,
          error: error.rawMessage,
        });
      });
  };
}
