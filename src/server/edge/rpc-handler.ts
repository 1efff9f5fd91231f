/**
 * The Node request handler for the bridge's RPCs: connect-node's adapter,
 * written out so that a call that fails after its handler ran (the peer
 * reset the stream, the server cut a reply nobody read) is logged through
 * the server's logger. connect-node's own adapter prints each one to stderr
 * with a stack trace, which any client could trigger at will. It also
 * serves gRPC-Web's text mode, which connect-node refuses (grpc-web-text.ts),
 * checks the request's authority first (request-head.ts), and gives every
 * handler context a reason for its end ({@link callEnded}). What it relies
 * on in connect and connect-node is in edge-compat.ts.
 */

import {
  Code,
  ConnectError,
  type ConnectRouter,
  type ConnectRouterOptions,
  type ContextValues,
  createConnectRouter,
  createContextValues,
} from "@connectrpc/connect";
import { callerKey } from "../access/caller.js";
import { nodeResponseKey } from "../limits/reply-budget.js";
import type { Logger } from "../observability/logger.js";
import {
  abortWithReason,
  connectNodeAuthority,
  type NodeHandler,
  type NodeRequest,
  type NodeResponse,
  universalRequestOf,
  writeUniversalResponse,
} from "./edge-compat.js";
import { fromGrpcWebText, toGrpcWebText } from "./grpc-web-text.js";
import {
  acceptsCompression,
  compressionScope,
  createReplyCompressions,
} from "./reply-compression.js";
import { checkAuthority, ownAuthority } from "./request-head.js";
import { refuseRequest } from "./request-refusal.js";

/** Options of {@link createRpcHandler}: connect's router options and a few of the adapter's. */
export interface RpcHandlerOptions extends ConnectRouterOptions {
  readonly routes: (router: ConnectRouter) => void;
  /** Answers requests for any other path. */
  readonly fallback: (req: NodeRequest, res: NodeResponse) => void;
  readonly contextValues?: (req: NodeRequest) => ContextValues;
  readonly logger: Logger;
}

/**
 * The reason a handler context's signal carries once its call has ended
 * without an error (see {@link abortWithReason}).
 */
export { callEnded } from "./edge-compat.js";

/** Creates the handler; see the module comment. */
export function createRpcHandler(options: RpcHandlerOptions): NodeHandler {
  const gate = options.requestGate;
  const router = createConnectRouter({
    acceptCompression: createReplyCompressions(),
    ...options,
    requestGate: (context) => {
      abortWithReason(context);
      return gate?.(context);
    },
  });
  options.routes(router);
  const paths = new Map(router.handlers.map((h) => [h.requestPath, h]));
  return (req, res) => {
    const handler = paths.get((req.url ?? "").split("?", 1)[0] ?? "");
    if (handler === undefined) {
      options.fallback(req, res);
      return;
    }
    if (handler.method.methodKind === "bidi_streaming" && req.httpVersionMajor < 2) {
      // connect-node would answer a bare HTTP 505, which clients report as UNKNOWN.
      refuseRequest(
        req,
        res,
        new ConnectError(
          `${handler.method.name} is a bidirectional stream, which needs HTTP/2 (gRPC); HTTP/1.1 cannot carry it`,
          Code.Unimplemented,
        ),
      );
      return;
    }
    // connect-node builds the request URL from the client's Host (or
    // :authority) with `new URL`, which throws on a malformed one: checked
    // first, and a missing one (legal in HTTP/1.0) is the listener's own.
    const given = connectNodeAuthority.of(req);
    const authority = checkAuthority(given, () => ownAuthority(req.socket));
    if (!authority.ok) {
      options.logger.debug("request refused", {
        rpc: handler.method.name,
        error: authority.error.rawMessage,
      });
      refuseRequest(req, res, authority.error);
      return;
    }
    if (authority.authority !== given) connectNodeAuthority.set(req, authority.authority);
    const values = options.contextValues?.(req) ?? createContextValues();
    // Reply budgets hold until the response has closed (reply-budget.ts).
    values.set(nodeResponseKey, res);
    const uReq = universalRequestOf(req, res, values);
    // gRPC-Web's text mode is the binary mode in base64: decoded here, so
    // that every handler serves it.
    const binary = fromGrpcWebText(uReq);
    const call = () =>
      handler(binary ?? uReq).then((uRes) =>
        writeUniversalResponse(binary ? toGrpcWebText(uRes) : uRes, res),
      );
    // Compressing a reply is bounded per client and stops when the caller
    // is gone (reply-compression.ts), which needs to know the call.
    const served = acceptsCompression(req.headers)
      ? compressionScope.run({ client: values.get(callerKey).client, signal: uReq.signal }, call)
      : call();
    served.catch((reason: unknown) => {
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
