/**
 * The one access check every RPC passes: an interceptor in the listeners'
 * chain, so Connect, gRPC, gRPC-Web (binary and text) and the directly
 * served WatchVariables streams are checked alike. It reads the rule of the
 * method (rpc-roles.ts), the caller (caller.ts) and the bearer token, and
 * either refuses the call before its handler runs, with UNAUTHENTICATED or
 * PERMISSION_DENIED and an `AccessDenied` detail naming the role needed,
 * or records the {@link Grant} for the handler.
 *
 * Modes: `tokens`, where every public call needs a token and the session
 * id alone opens nothing; `session-id`, where a caller without a token has
 * every right in a session it names (the bridge's original model), and a
 * caller with a token is held to the token's role.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { AccessDeniedSchema } from "../../gen/snakepit/bridge/bridge_pb.js";
import { type Grant, grantKey } from "./access-grant.js";
import type { AccessTokens } from "./access-tokens.js";
import { callerKey, isJws, type TokenThrottle } from "./caller.js";
import type { IdentityVerifier } from "./identity.js";
import { covers, type Role, toWireRole } from "./roles.js";
import { type AccessRule, type RuleContext, requiredRole, ruleOf } from "./rpc-roles.js";

/** Who may do what without a token. */
export type AccessMode = "tokens" | "session-id";

/** Every access mode. */
export const accessModes: readonly AccessMode[] = ["tokens", "session-id"];

/** Options of {@link createAccessCheck}. */
export interface AccessCheckOptions {
  readonly mode: AccessMode;
  readonly tokens: AccessTokens;
  /** Verifies external identity JWTs, when configured. */
  readonly identity: IdentityVerifier | undefined;
  /** Where wrong tokens are counted per client (shared with the worker token's check). */
  readonly throttle: TokenThrottle;
  /** The role a session's tool needs. */
  readonly toolRole: RuleContext["toolRole"];
}

/** The verified credential of a call, if it sent one. */
type Credential =
  | { readonly kind: "token"; readonly grant: Extract<Grant, { kind: "token" }> }
  | { readonly kind: "identity"; readonly subject: string };

/** Returns the access check interceptor. */
export function createAccessCheck(options: AccessCheckOptions): Interceptor {
  const { mode, tokens, identity, throttle } = options;
  const context: RuleContext = { toolRole: options.toolRole };

  /** A bearer token in JWS form (an access or identity token), verified. */
  const verify = async (bearer: string, client: string, refuse: Refuse): Promise<Credential> => {
    try {
      if (tokens.isOurs(bearer) || identity === undefined) {
        const claims = await tokens.verify(bearer);
        return { kind: "token", grant: { kind: "token", ...claims } };
      }
      return { kind: "identity", subject: await identity.verify(bearer) };
    } catch (e) {
      throttle.failed(client);
      const error = ConnectError.from(e, Code.Unauthenticated);
      throw refuse(error.code, error.rawMessage, undefined, undefined, e);
    }
  };

  // One refusal per method, made on first use rather than per call.
  const refusals = new Map<string, Refuse>();
  const refusalOf = (method: string): Refuse => {
    let refuse = refusals.get(method);
    if (refuse === undefined) {
      refuse = refusal(method);
      refusals.set(method, refuse);
    }
    return refuse;
  };

  return (next) => async (req) => {
    const method = req.method.name;
    const rule = ruleOf(req.service.typeName, method);
    const refuse = refusalOf(method);
    if (rule === undefined) {
      // A method the table does not know is refused, never let through.
      throw refuse(Code.PermissionDenied, `${method} has no access rule on this bridge`);
    }
    if (rule.kind === "public") return next(req);
    const caller = req.contextValues.get(callerKey);
    if (caller.kind === "worker") {
      req.contextValues.set(grantKey, { kind: "worker" });
      return next(req);
    }
    // Worker-only calls: the handler refuses everyone else (and audits it).
    if (rule.kind === "worker") return next(req);
    const waiting = caller.tokenThrottle;
    if (waiting !== undefined) {
      throw refuse(
        Code.ResourceExhausted,
        `${method}: too many wrong tokens from this client (${waiting.maxFailures} within ${Math.round(waiting.windowMs / 1000)} s), so its tokens are not checked for now; wait ${Math.ceil(waiting.waitMs / 1000)} s`,
      );
    }
    // No await without a token: most calls in session-id mode have none.
    const bearer = bearerOf(req.header);
    const credential =
      bearer !== undefined && isJws(bearer)
        ? await verify(bearer, caller.client, refuse)
        : undefined;
    if (credential === undefined && caller.badToken && mode === "tokens") {
      throw refuse(
        Code.Unauthenticated,
        `${method}: the bearer token is neither an access token (a JWT) nor this bridge's worker token`,
      );
    }

    // The request's message: a server-streaming call's one message is
    // read here, and handed on unread to the handler.
    let message: unknown;
    let forward = req;
    if (rule.kind === "session" || rule.kind === "open") {
      if (req.stream) {
        const peeked = await peek(req.message);
        message = peeked.first;
        forward = { ...req, message: peeked.rest } as typeof req;
      } else {
        message = req.message;
      }
    }
    const grant = decide(mode, rule, method, credential, message, context, refuse);
    req.contextValues.set(grantKey, grant);
    return next(forward);
  };
}

/** Makes a refusal: code, message, the roles needed and held, the cause. */
export type Refuse = (
  code: Code,
  message: string,
  required?: Role,
  granted?: Role,
  cause?: unknown,
) => ConnectError;

/** A refusal of `method` with its AccessDenied detail. */
export function refusal(method: string): Refuse {
  return (code, message, required, granted, cause) => {
    const value: MessageInitShape<typeof AccessDeniedSchema> = {
      requiredRole: toWireRole(required),
      grantedRole: toWireRole(granted),
      method,
    };
    return new ConnectError(message, code, undefined, [{ desc: AccessDeniedSchema, value }], cause);
  };
}

/** The grant of a call by its rule and credential, or the refusal. */
function decide(
  mode: AccessMode,
  rule: Exclude<AccessRule, { kind: "public" | "worker" }>,
  method: string,
  credential: Credential | undefined,
  message: unknown,
  context: RuleContext,
  refuse: Refuse,
): Grant {
  const required =
    rule.kind === "session" && message !== undefined
      ? requiredRole(rule, message, context)
      : undefined;
  if (credential === undefined) {
    if (mode === "session-id") return { kind: "session-id" };
    if (rule.kind === "open") return { kind: "anonymous" };
    throw refuse(
      Code.Unauthenticated,
      `${method} needs an access token${required === undefined ? "" : ` of role ${required} or higher`}: send authorization: Bearer <token> (InitializeSession answers one to a session's creator; its owner mints more with MintToken)`,
      required,
    );
  }
  if (credential.kind === "identity") {
    if (rule.kind === "open" || rule.kind === "any") {
      return { kind: "identity", subject: credential.subject };
    }
    throw refuse(
      Code.PermissionDenied,
      `${method}: an identity token opens sessions (InitializeSession) only; call ${method} with the access token InitializeSession answered`,
      required,
    );
  }
  const grant = credential.grant;
  if (rule.kind === "any" || message === undefined) return grant;
  const named = (message as { sessionId?: unknown }).sessionId;
  if (typeof named !== "string" || !sameSession(named, grant.sessionId)) {
    // Nothing about the named session is looked at, so nothing of it leaks.
    throw refuse(
      Code.PermissionDenied,
      `${method}: the access token is for another session than the one this request names`,
      required,
      grant.role,
    );
  }
  if (required !== undefined && !covers(grant.role, required)) {
    throw refuse(
      Code.PermissionDenied,
      `${method} needs the ${required} role in this session; the access token grants ${grant.role}`,
      required,
      grant.role,
    );
  }
  return grant;
}

/** The token of an `authorization: Bearer …` header. */
function bearerOf(header: Headers): string | undefined {
  const auth = header.get("authorization");
  if (auth === null || !/^bearer /i.test(auth)) return undefined;
  return auth.slice(7).trim();
}

/** Compares two session ids in constant time (as digests: not even their lengths leak). */
function sameSession(a: string, b: string): boolean {
  const digest = (s: string) => createHash("sha256").update(s, "utf8").digest();
  return timingSafeEqual(digest(a), digest(b));
}

/** The first message of a request stream, and the stream as it was before. */
async function peek<T>(
  messages: AsyncIterable<T>,
): Promise<{ first: T | undefined; rest: AsyncIterable<T> }> {
  const iterator = messages[Symbol.asyncIterator]();
  const head = await iterator.next();
  if (head.done === true) return { first: undefined, rest: emptyStream<T>() };
  async function* rest(): AsyncGenerator<T> {
    yield head.value as T;
    for (;;) {
      const next = await iterator.next();
      if (next.done === true) return;
      yield next.value;
    }
  }
  return { first: head.value, rest: rest() };
}

async function* emptyStream<T>(): AsyncGenerator<T> {
  // Nothing to yield: the handler reports the missing message.
}
