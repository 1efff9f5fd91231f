import { randomBytes } from "node:crypto";

export { isVariableId, variableId } from "../values/variable-id.js";

/**
 * Mints a session id: 144 bits from the CSPRNG, base64url (24 characters).
 * A session id is a bearer secret: whoever knows it can use the session.
 */
export function mintSessionId(): string {
  return randomBytes(18).toString("base64url");
}
