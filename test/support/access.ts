/**
 * What the access suites share: a request for every BridgeService method
 * naming one session, a way to call any method by its descriptor (unary or
 * streaming, ended after its first message), the AccessDenied detail of a
 * refusal, and tokens made by hand (expired, altered, signed elsewhere).
 */
import { randomBytes } from "node:crypto";
import { create, type DescMethod, type MessageInitShape } from "@bufbuild/protobuf";
import {
  type CallOptions,
  Code,
  ConnectError,
  createClient,
  type Transport,
} from "@connectrpc/connect";
import { decodeProtectedHeader, SignJWT } from "jose";
import {
  AccessDeniedSchema,
  type AccessRole,
  BridgeService,
  AccessRole as Role,
} from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { encodeJsonAny, encodeValue } from "../../src/values/index.js";

/** A token key as `openssl rand -base64 32` makes one. */
export const newKey = (): string => randomBytes(32).toString("base64");

/** Call options sending `token` as the bearer (and, optionally, the client's address). */
export function bearer(token: string | undefined, client?: string): CallOptions {
  const headers: Record<string, string> = {};
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  if (client !== undefined) headers["x-forwarded-for"] = client;
  return { headers, timeoutMs: 10_000 };
}

type LocalName = keyof typeof BridgeService.method;

const int = (n: number) => encodeValue("integer", n).any;

/**
 * A request of `method` naming `sessionId`, one a session made by
 * {@link seedSession} can serve. `variant` picks between the forms whose
 * required role differs (a tool that only reads or one that writes; a
 * write as the lock holder or not).
 */
export function requestFor(
  method: DescMethod,
  sessionId: string,
  variant = 0,
): MessageInitShape<DescMethod["input"]> {
  const unique = randomBytes(4).toString("hex");
  const byMethod: Record<LocalName, Record<string, unknown>> = {
    ping: { message: "hi" },
    initializeSession: { sessionId },
    cleanupSession: { sessionId, force: true },
    getSession: { sessionId },
    heartbeat: { sessionId },
    getVariable: { sessionId, variableIdentifier: "x" },
    setVariable: {
      sessionId,
      variableIdentifier: "x",
      value: int(5),
      metadata: variant % 2 === 1 ? { optimizer_id: "tuner-1" } : {},
    },
    getVariables: { sessionId, variableIdentifiers: ["x"] },
    setVariables: {
      sessionId,
      updates: { x: int(6) },
      metadata: variant % 2 === 1 ? { optimizer_id: "tuner-1" } : {},
    },
    registerVariable: { sessionId, name: `v_${unique}`, type: "integer", initialValue: int(1) },
    registerVariables: {
      sessionId,
      variables: [{ name: `w_${unique}`, type: "integer", initialValue: int(1) }],
      ifAbsent: true,
    },
    listVariables: { sessionId },
    deleteVariable: { sessionId, variableIdentifier: "y" },
    executeTool: toolCall(sessionId, variant),
    executeStreamingTool: { sessionId, toolName: "export_variables" },
    executeElixirTool: toolCall(sessionId, variant),
    registerTools: {
      sessionId,
      tools: [{ name: `t_${unique}`, metadata: { worker_address: "127.0.0.1:1" } }],
    },
    getExposedElixirTools: { sessionId },
    watchVariables: { sessionId, syncMarker: true },
    addDependency: { sessionId, fromVariable: "x", toVariable: "y" },
    startOptimization: { sessionId, variableIdentifier: "x", optimizerId: "tuner-1" },
    stopOptimization: { sessionId, variableIdentifier: "x", optimizerId: "tuner-1", force: true },
    getVariableHistory: { sessionId, variableIdentifier: "x" },
    rollbackVariable: { sessionId, variableIdentifier: "x", targetVersion: 0 },
    mintToken: { sessionId, role: Role.VIEWER, ttlSeconds: 60 },
    // One control message, as a host sends it first.
    streamTelemetry: { control: { case: "toggle", value: { enabled: true } } },
  };
  const init = byMethod[method.localName as LocalName];
  if (init === undefined) throw new Error(`no request for ${method.name}: add one here`);
  return create(method.input, init as never);
}

function toolCall(sessionId: string, variant: number) {
  return variant % 2 === 1
    ? { sessionId, toolName: "conversation_history", parameters: { last: encodeJsonAny(1) } }
    : { sessionId, toolName: "increment_variable", parameters: { name: encodeJsonAny("x") } };
}

/** The variables {@link requestFor}'s requests expect: `x` and `y`, integers. */
export const seedVariables = [
  { name: "x", type: "integer", initialValue: int(0) },
  { name: "y", type: "integer", initialValue: int(0) },
];

/**
 * Calls `method` with `message`; a streaming call ends after its first
 * message. Resolves to undefined when it succeeded, else the error.
 */
export async function invoke(
  transport: Transport,
  method: DescMethod,
  message: unknown,
  options: CallOptions,
): Promise<ConnectError | undefined> {
  const client = createClient(BridgeService, transport) as unknown as Record<
    string,
    (req: unknown, opts: CallOptions) => unknown
  >;
  const call = client[method.localName];
  if (call === undefined) throw new Error(`no client method ${method.localName}`);
  try {
    if (method.methodKind === "unary") {
      await call(message, options);
    } else if (method.methodKind === "bidi_streaming") {
      const input = (async function* () {
        yield message;
      })();
      for await (const _ of call(input, options) as AsyncIterable<unknown>) break;
    } else {
      for await (const _ of call(message, options) as AsyncIterable<unknown>) break;
    }
    return undefined;
  } catch (e) {
    return ConnectError.from(e);
  }
}

/** The AccessDenied detail of a refusal, if it has one. */
export function accessDetail(
  error: ConnectError,
): { requiredRole: AccessRole; grantedRole: AccessRole; method: string } | undefined {
  return error.findDetails(AccessDeniedSchema)[0];
}

/** The code of an outcome, "OK" for success: for readable assertions. */
export const codeName = (error: ConnectError | undefined): string =>
  error === undefined ? "OK" : Code[error.code];

/**
 * Tokens no bridge should accept, made from a `real` token of the bridge
 * and its `key`: each is refused for one reason.
 */
export async function forgedTokens(real: string, key: string): Promise<Record<string, string>> {
  const { kid } = decodeProtectedHeader(real);
  const [head, body, signature] = real.split(".") as [string, string, string];
  const claims = JSON.parse(Buffer.from(body, "base64url").toString("utf8")) as Record<
    string,
    unknown
  >;
  const sign = (payload: Record<string, unknown>, secret: string, keyId = kid) =>
    new SignJWT(payload)
      .setProtectedHeader({ alg: "HS256", typ: "ub+jwt", kid: keyId as string })
      .sign(new TextEncoder().encode(secret));
  const now = Math.floor(Date.now() / 1000);
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64url");
  return {
    // Signed with the bridge's own key, but over.
    expired: await sign({ ...claims, iat: now - 7200, exp: now - 3600 }, key),
    // The claims changed (owner, a day longer), the signature kept.
    tampered: `${head}.${b64({ ...claims, role: "owner", exp: Number(claims.exp) + 86_400 })}.${signature}`,
    // A well-formed token under the bridge's key id, signed with another key.
    "other key": await sign({ ...claims, role: "owner" }, newKey()),
    // Signed with a key the bridge does not hold at all.
    "unknown key id": await sign({ ...claims, role: "owner" }, newKey(), "not-a-key-id"),
    // No signature at all ("alg": "none").
    "alg none": `${b64({ alg: "none", typ: "ub+jwt", kid })}.${b64({ ...claims, role: "owner" })}.`,
    // The shape of a JWT, no content.
    malformed: "aaaa.bbbb.cccc",
    // Neither a JWT nor the worker token.
    garbage: "not-a-token-at-all",
  };
}
