import { randomBytes } from "node:crypto";

export { isVariableId, variableId } from "../../values/variable-id.js";

/**
 * Mints a session id: 144 bits from the CSPRNG, base64url (24 characters).
 * A session id is a bearer secret: whoever knows it can use the session.
 */
export function mintSessionId(): string {
  return randomBytes(18).toString("base64url");
}

/** The longest session id (a client's own or a minted one). */
export const MAX_SESSION_ID_LENGTH = 256;
const CLIENT_SESSION_ID = /^[A-Za-z0-9_-]{16,256}$/;

/**
 * Whether a client may create a session under this id: 16 to 256
 * characters of `[A-Za-z0-9_-]` (base64url, as minted ids are). Short or
 * guessable ids would let anyone squat or join them; 16 characters leave
 * room for 96 bits of randomness.
 */
export function isClientSessionId(id: string): boolean {
  return CLIENT_SESSION_ID.test(id);
}
