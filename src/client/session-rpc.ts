import type { CallOptions, Client } from "@connectrpc/connect";
import type { BridgeService } from "../gen/snakepit/bridge/bridge_pb.js";

/**
 * How every part of a SessionContext reaches the bridge: one client, one
 * session, the same call options (timeouts, headers) on every call.
 */
export interface SessionRpc {
  readonly client: Client<typeof BridgeService>;
  readonly sessionId: string;
  readonly call: CallOptions;
}
