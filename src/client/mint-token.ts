import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { CallOptions, Client } from "@connectrpc/connect";
import type { BridgeService } from "../gen/snakepit/bridge/bridge_pb.js";
import { type AccessRoleName, roleName, wireRole } from "./access-error.js";

/** A token {@link SessionContext.mintToken} made. */
export interface MintedToken {
  /** Send it as `authorization: Bearer <token>`, or pass it as `token` to createSessionContext. */
  readonly token: string;
  readonly role: AccessRoleName;
  /** Epoch milliseconds. */
  readonly expiresAt: number;
}

/**
 * Mints a token for `sessionId` (MintToken): of `role`, for `ttlSeconds`
 * (0 or omitted: the bridge's default). The caller's own token must be
 * the session's owner's.
 */
export async function mintToken(
  client: Client<typeof BridgeService>,
  sessionId: string,
  options: { readonly role: AccessRoleName; readonly ttlSeconds?: number },
  call: CallOptions,
): Promise<MintedToken> {
  const res = await client.mintToken(
    { sessionId, role: wireRole(options.role), ttlSeconds: options.ttlSeconds ?? 0 },
    call,
  );
  return {
    token: res.token,
    role: roleName(res.role) ?? options.role,
    expiresAt: res.expiresAt === undefined ? 0 : timestampMs(res.expiresAt),
  };
}
