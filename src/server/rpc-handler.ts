/**
 * The Node request handler for the bridge's RPCs: connect-node's adapter,
 * written out so that a call that fails after its handler ran (the peer
 * reset the stream, the server cut a reply nobody read) is logged through
 * the server's logger. connect-node's own adapter prints each one to stderr
 * with a stack trace, which any client could trigger at will. It also
 * serves gRPC-Web's text mode, which connect-node refuses (grpc-web-text.ts).
 *
 * When a call ends, connect aborts its handler context's signal, without a
 * reason when the call succeeded; `AbortController.abort()` then builds a
 * `DOMException` with a stack trace, on every call. In a CPU profile of
 * SetVariable load that cost more than the handler's own work, so the
 * handler context is given a reason made once ({@link callEnded}) for a
 * call that ended without one. A call that fails still aborts with its
 * own error.
 */

import {
  Code,
  ConnectError,
  type ConnectRouter,
  type ConnectRouterOptions,
  type ContextValues,
  createConnectRouter,
  createContextValues,
  type HandlerContext,
} from "@connectrpc/connect";
import type { connectNodeAdapter } from "@connectrpc/connect-node";
import {
  universalRequestFromNodeRequest,
  universalResponseToNodeResponse,
} from "@connectrpc/connect-node";
import { callerKey } from "./caller.js";
import { fromGrpcWebText, toGrpcWebText } from "./grpc-web-text.js";
import type { Logger } from "./logger.js";
import { nodeResponseKey } from "./reply-budget.js";
import {
  acceptsCompression,
  compressionScope,
  createReplyCompressions,
} from "./reply-compression.js";
import { checkAuthority, ownAuthority } from "./request-head.js";
import { refuseRequest } from "./request-refusal.js";

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

/**
 * The reason a handler context's signal carries once its call has ended
 * without an error: what the handler's own cleanup sees in `signal.reason`.
 */
export const callEnded: ConnectError = Object.freeze(
  new ConnectError("the call has ended", Code.Canceled),
);

/**
 * Gives `context.abort()` a reason when it is called without one (see the
 * module comment). connect 2.2 passes its request gate the very context
 * object its handler factories abort when the call ends (its internal
 * `HandlerContextController`, whose `abort` the public type leaves out);
 * `rpc-handler.test.ts` checks that this still holds.
 */
function abortWithReason(context: HandlerContext): void {
  const controller = context as HandlerContext & { abort?: (reason?: unknown) => void };
  const abort = controller.abort;
  if (typeof abort !== "function") return;
  controller.abort = (reason?: unknown) => abort.call(controller, reason ?? callEnded);
}

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
    // connect-node builds the request URL from the client's Host (or
    // :authority) with `new URL`, which throws on a malformed one: checked
    // first, and a missing one (legal in HTTP/1.0) is the listener's own.
    const given = "authority" in req ? req.authority : req.headers.host;
    const authority = checkAuthority(given, ownAuthority(req.socket));
    if (!authority.ok) {
      options.logger.debug("request refused", {
        rpc: handler.method.name,
        error: authority.error.rawMessage,
      });
      refuseRequest(req, res, authority.error);
      return;
    }
    if (authority.authority !== given) {
      // Where connect-node reads it: HTTP/2 prefers :authority (an empty
      // one included), HTTP/1 has only Host.
      if ("authority" in req) req.headers[":authority"] = authority.authority;
      else req.headers.host = authority.authority;
    }
    const values = options.contextValues?.(req) ?? createContextValues();
    // Reply budgets hold until the response has closed (reply-budget.ts).
    values.set(nodeResponseKey, res);
    const uReq = universalRequestFromNodeRequest(req, res, undefined, values);
    // gRPC-Web's text mode is the binary mode in base64: decoded here, so
    // that every handler serves it.
    const binary = fromGrpcWebText(uReq);
    const call = () =>
      handler(binary ?? uReq).then((uRes) =>
        universalResponseToNodeResponse(binary ? toGrpcWebText(uRes) : uRes, res),
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
