import { Code, ConnectError } from "@connectrpc/connect";
import { AccessError, writeOutcome } from "../../src/client/index.ts";

/** An error as a person should read it: what happened and what to do. */
export interface Explained {
  readonly title: string;
  readonly detail: string;
  /** The server's own message, when it says something useful verbatim. */
  readonly server?: string;
  readonly code: Code | undefined;
}

/** Title of the "bridge unreachable" explanation (its notices are cleared on reconnection). */
export const UNREACHABLE = "The bridge server is not reachable";

/** True when the bridge could not be reached at all (down, proxy gave up, network). */
export function isUnreachable(error: unknown): boolean {
  const e = ConnectError.from(error);
  // connect-web reports a failed fetch (server down, connection refused)
  // with the fetch's TypeError as cause; the dev proxy answers 502 → UNAVAILABLE.
  return e.code === Code.Unavailable || (e.code === Code.Unknown && e.cause instanceof TypeError);
}

/**
 * Explains why an edit could not be kept in this browser's outbox (the
 * `stored` promise of `ctx.enqueue`): nothing was sent, so it is never
 * about the bridge's answer, even when the code says Unavailable (the
 * browser's storage refused).
 */
export function explainNotStored(error: unknown, name: string): Explained {
  const e = ConnectError.from(error);
  const server = e.rawMessage;
  switch (e.code) {
    case Code.InvalidArgument:
      return { title: "Not a valid value", detail: server, server, code: e.code };
    case Code.FailedPrecondition:
      return {
        title: "Cannot be edited offline",
        detail: `${server}. Edit '${name}' again once the bridge is back.`,
        server,
        code: e.code,
      };
    case Code.ResourceExhausted:
      return {
        title: "Too many edits waiting",
        detail: `${server}. The edit of '${name}' was not kept.`,
        server,
        code: e.code,
      };
    default:
      return {
        title: "This browser could not keep the edit",
        detail: `The edit of '${name}' was not saved or sent: ${server}`,
        server,
        code: e.code,
      };
  }
}

/** Explains any error from the bridge, the client library or a tool. */
export function explain(error: unknown, doing: string): Explained {
  if (error instanceof DOMException && error.name === "AbortError") {
    return { title: "Cancelled", detail: `${doing} was cancelled.`, code: Code.Canceled };
  }
  const e = ConnectError.from(error);
  const server = e.rawMessage;
  // Before the other cases: a change that may have been applied is neither
  // "someone else changed it first" nor a plain "not reachable, try again".
  if (writeOutcome(e) === "unknown") {
    return {
      title: "Not sure it was saved",
      detail: `The connection failed while ${doing}, after the change was sent: it may or may not have been applied. The page shows the stored value once the connection is back; check it before changing it again.`,
      code: e.code,
    };
  }
  if (error instanceof AccessError) {
    // The bridge said which role was missing: say it in the page's words.
    const needs =
      error.requiredRole === undefined ? "" : ` (it needs the ${error.requiredRole} role)`;
    return e.code === Code.Unauthenticated
      ? {
          title: "This link gives no access",
          detail: `${server}. Ask the session's owner for a new link${needs}, or open a new session.`,
          server,
          code: e.code,
        }
      : {
          title: "Not allowed with this link",
          detail: `${server}${needs}. Ask the session's owner for a link with more rights, or open a new session.`,
          server,
          code: e.code,
        };
  }
  if (isUnreachable(e)) {
    return {
      title: UNREACHABLE,
      detail: `Could not reach the bridge while ${doing}. Is \`npm start\` still running? The page reconnects by itself when the server is back.`,
      code: e.code,
    };
  }
  switch (e.code) {
    case Code.InvalidArgument:
      return { title: "Not a valid value", detail: server, server, code: e.code };
    case Code.FailedPrecondition:
      return {
        title: "Locked by the optimizer",
        detail: `${server}. Wait for the tuning run to finish, or stop it.`,
        server,
        code: e.code,
      };
    case Code.NotFound:
      return {
        title: "Not found on the server",
        detail: `${server}. If the session expired (30 minutes without activity), reload to start it again.`,
        server,
        code: e.code,
      };
    case Code.Aborted:
      return {
        title: "Someone else changed it first",
        detail: `${server}. The panel now shows their value; edit again if you still want yours.`,
        server,
        code: e.code,
      };
    case Code.ResourceExhausted:
      return { title: "A server limit was reached", detail: server, server, code: e.code };
    case Code.PermissionDenied:
      return { title: "Not allowed in this session", detail: server, server, code: e.code };
    case Code.DeadlineExceeded:
      return {
        title: "The server took too long",
        detail: `No answer in time while ${doing}. Try again.`,
        code: e.code,
      };
    case Code.Canceled:
      return { title: "Cancelled", detail: `${doing} was cancelled.`, code: e.code };
    default:
      return {
        title: "Something went wrong",
        detail: `While ${doing}: ${server || "unknown error"}`,
        server,
        code: e.code,
      };
  }
}
