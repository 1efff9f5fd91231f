import { randomBytes } from "node:crypto";

/**
 * Mints a session id: 144 bits from the CSPRNG, base64url (24 characters).
 * A session id is a bearer secret: whoever knows it can use the session.
 */
export function mintSessionId(): string {
  return randomBytes(18).toString("base64url");
}

/**
 * Variable ids have the form `var:<n>:<name>`, `<n>` unique within the
 * session and never reused. Names cannot contain ':', so an identifier
 * containing ':' is always an id and any other identifier is always a name:
 * one identifier can never mean two variables.
 */
export function variableId(seq: number, name: string): string {
  return `var:${seq}:${name}`;
}

/** Whether an identifier is a variable id (as opposed to a name). */
export function isVariableId(identifier: string): boolean {
  return identifier.includes(":");
}
