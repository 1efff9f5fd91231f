/**
 * What every RPC needs, in one table: the role a caller must hold in the
 * session the request names, or another kind of rule for the few calls
 * that name no session or make one. The access check (access-check.ts)
 * reads nothing else, and a test holds the table against the methods of
 * the generated service descriptors, so a new RPC without an entry fails
 * it.
 */
import { BridgeService } from "../../gen/snakepit/bridge/bridge_pb.js";
import type { Role } from "./roles.js";
import { higher } from "./roles.js";

/** What the table's role functions may ask about the call. */
export interface RuleContext {
  /** The role a tool of the session needs (its `access_role` metadata; default editor). */
  toolRole(sessionId: string, toolName: string): Role;
}

/** How one RPC is checked. */
export type AccessRule =
  /**
   * Names a session in `session_id`; the caller needs `role` (a function
   * when the request decides, e.g. the tool it calls) in that session.
   */
  | {
      readonly kind: "session";
      readonly role: Role | ((message: unknown, context: RuleContext) => Role);
    }
  /** InitializeSession: creates a session, or reopens one for a caller entitled to it. */
  | { readonly kind: "open" }
  /** Names no session: any valid credential (in tokens mode) will do. */
  | { readonly kind: "any" }
  /**
   * Workers only: refused to everyone else by the handler's requireWorker,
   * which also logs and audits the attempt.
   */
  | { readonly kind: "worker" }
  /** Health checks: for probes, never any credential. */
  | { readonly kind: "public" };

type BridgeMethod = keyof (typeof BridgeService)["method"];

const viewer: AccessRule = { kind: "session", role: "viewer" };
const editor: AccessRule = { kind: "session", role: "editor" };
const tuner: AccessRule = { kind: "session", role: "tuner" };
const owner: AccessRule = { kind: "session", role: "owner" };

/**
 * A write that carries the lock holder's optimizer id writes as the holder
 * (through the optimization lock): that is the tuner's right.
 */
const writeRole = (message: unknown): Role => {
  const metadata = (message as { metadata?: Record<string, string> }).metadata;
  return metadata?.optimizer_id !== undefined && metadata.optimizer_id !== "" ? "tuner" : "editor";
};

/** A tool call needs the tool's role, and at least viewer. */
const toolRole = (message: unknown, context: RuleContext): Role => {
  const { sessionId, toolName } = message as { sessionId: string; toolName: string };
  return higher("viewer", context.toolRole(sessionId, toolName));
};

/**
 * The rule of every BridgeService method, keyed by the generated
 * descriptor's local name (the TypeScript type makes a missing one a
 * compile error too). A batch needs the highest role any of its parts
 * needs: SetVariables writes (editor), as the lock holder when its
 * metadata names one (tuner).
 */
export const bridgeRules: Readonly<Record<BridgeMethod, AccessRule>> = {
  ping: { kind: "any" },
  initializeSession: { kind: "open" },
  cleanupSession: owner,
  getSession: viewer,
  heartbeat: viewer,
  getVariable: viewer,
  setVariable: { kind: "session", role: writeRole },
  getVariables: viewer,
  setVariables: { kind: "session", role: writeRole },
  registerVariable: editor,
  registerVariables: editor,
  listVariables: viewer,
  deleteVariable: editor,
  executeTool: { kind: "session", role: toolRole },
  executeStreamingTool: { kind: "session", role: toolRole },
  executeElixirTool: { kind: "session", role: toolRole },
  registerTools: { kind: "worker" },
  getExposedElixirTools: viewer,
  watchVariables: viewer,
  addDependency: editor,
  startOptimization: tuner,
  stopOptimization: tuner,
  getVariableHistory: viewer,
  rollbackVariable: editor,
  mintToken: owner,
  // A host's call on a worker, which the bridge answers UNIMPLEMENTED to
  // anyone whose credential would pass: it names no session.
  streamTelemetry: { kind: "any" },
};

/** The rules of the other services the listeners serve, by service type name and method name. */
export const otherRules: Readonly<Record<string, Readonly<Record<string, AccessRule>>>> = {
  "grpc.health.v1.Health": { Check: { kind: "public" }, Watch: { kind: "public" } },
};

const byName = new Map<string, AccessRule>();

/**
 * The rule of a method by its service's type name and its proto name
 * (e.g. "GetVariable"); undefined for a method the table does not know,
 * which the check refuses.
 */
export function ruleOf(serviceTypeName: string, methodName: string): AccessRule | undefined {
  if (serviceTypeName === "snakepit.bridge.BridgeService") return byName.get(methodName);
  return otherRules[serviceTypeName]?.[methodName];
}

for (const method of BridgeService.methods) {
  const rule = (bridgeRules as Readonly<Record<string, AccessRule>>)[method.localName];
  if (rule !== undefined) byName.set(method.name, rule);
}

/** The role a session rule needs for `message`. */
export function requiredRole(
  rule: Extract<AccessRule, { kind: "session" }>,
  message: unknown,
  context: RuleContext,
): Role {
  return typeof rule.role === "string" ? rule.role : rule.role(message, context);
}

/**
 * The tool metadata key naming the role a tool's calls need ("viewer" for
 * tools that only read); a tool without it needs editor.
 */
export const toolRoleMetadataKey = "access_role";
