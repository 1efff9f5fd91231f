/**
 * Variable ids have the form `var:<n>:<name>`, `<n>` unique within the
 * session and never reused. Names cannot contain ':', so an identifier
 * containing ':' is always an id and any other identifier is always a name:
 * one identifier can never mean two variables. Client and server share
 * this rule.
 */
export function variableId(seq: number, name: string): string {
  return `var:${seq}:${name}`;
}

/** Whether an identifier is a variable id (as opposed to a name). */
export function isVariableId(identifier: string): boolean {
  return identifier.includes(":");
}
