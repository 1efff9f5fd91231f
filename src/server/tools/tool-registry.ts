import { Code, ConnectError } from "@connectrpc/connect";
import type { JsonValue } from "../../values/index.js";
import { quote } from "../limits.js";
import type {
  ToolArguments,
  ToolDefinition,
  ToolParameter,
  ToolParameterType,
} from "./tool-definition.js";

const TOOL_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const PARAMETER_TYPES: readonly ToolParameterType[] = [
  "string",
  "integer",
  "float",
  "number",
  "boolean",
  "object",
  "array",
  "any",
];

/** Where a registered tool runs. */
export type ToolTarget =
  | { readonly kind: "local"; readonly definition: ToolDefinition }
  | { readonly kind: "remote"; readonly address: string; readonly workerId: string };

/** A tool as the registry holds it. */
export interface RegisteredTool {
  readonly id: string;
  readonly name: string;
  readonly description: string;
  readonly parameters: readonly ToolParameter[];
  readonly metadata: Readonly<Record<string, string>>;
  readonly requiredVariables: readonly string[];
  readonly streaming: boolean;
  /** The session it belongs to, or undefined for a global tool. */
  readonly sessionId: string | undefined;
  /** Epoch ms after which a session-scoped tool is gone. */
  readonly expiresAt: number | undefined;
  readonly target: ToolTarget;
}

/** Global and session-scoped tools. */
export interface ToolRegistry {
  /** Registers (or replaces) a tool; returns its id. */
  register(tool: Omit<RegisteredTool, "id">): string;
  /** The tool a session sees under a name: its own first, then global. */
  lookup(sessionId: string, name: string): RegisteredTool | undefined;
  /** Every tool a session sees, session-scoped ones shadowing global ones. */
  list(sessionId: string): RegisteredTool[];
  /** Removes a session's tools; returns how many. */
  dropSession(sessionId: string): number;
  /** Removes a global tool. */
  unregister(name: string): boolean;
}

/** Creates an empty registry. */
export function createToolRegistry(now: () => number = Date.now): ToolRegistry {
  const global = new Map<string, RegisteredTool>();
  const scoped = new Map<string, Map<string, RegisteredTool>>();

  const alive = (tool: RegisteredTool | undefined): tool is RegisteredTool =>
    tool !== undefined && (tool.expiresAt === undefined || tool.expiresAt > now());

  return {
    register(tool) {
      checkToolName(tool.name);
      for (const p of tool.parameters) checkParameter(tool.name, p);
      const id =
        tool.sessionId === undefined ? `tool:global:${tool.name}` : `tool:session:${tool.name}`;
      const registered: RegisteredTool = { ...tool, id };
      if (tool.sessionId === undefined) {
        global.set(tool.name, registered);
      } else {
        let tools = scoped.get(tool.sessionId);
        if (tools === undefined) {
          tools = new Map();
          scoped.set(tool.sessionId, tools);
        }
        tools.set(tool.name, registered);
      }
      return id;
    },

    lookup(sessionId, name) {
      const tools = scoped.get(sessionId);
      const own = tools?.get(name);
      if (alive(own)) return own;
      if (own !== undefined) tools?.delete(name);
      return global.get(name);
    },

    list(sessionId) {
      const seen = new Map<string, RegisteredTool>(global);
      const tools = scoped.get(sessionId);
      if (tools !== undefined) {
        for (const [name, tool] of tools) {
          if (alive(tool)) seen.set(name, tool);
          else tools.delete(name);
        }
      }
      return [...seen.values()];
    },

    dropSession(sessionId) {
      const count = scoped.get(sessionId)?.size ?? 0;
      scoped.delete(sessionId);
      return count;
    },

    unregister(name) {
      return global.delete(name);
    },
  };
}

/** Tool names: `^[A-Za-z0-9][A-Za-z0-9_.-]*$`, at most 64 characters. */
export function checkToolName(name: string): void {
  if (name.length === 0 || name.length > 64 || !TOOL_NAME.test(name)) {
    throw new ConnectError(
      `tool name ${quote(name)} is invalid: use 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit`,
      Code.InvalidArgument,
    );
  }
}

function checkParameter(tool: string, p: ToolParameter): void {
  if (!PARAMETER_TYPES.includes(p.type)) {
    throw new ConnectError(
      `tool '${tool}': parameter '${p.name}' has unknown type '${p.type}': expected one of ${PARAMETER_TYPES.join(", ")}`,
      Code.InvalidArgument,
    );
  }
  if (p.default !== undefined && !hasType(p.default, p.type)) {
    throw new ConnectError(
      `tool '${tool}': the default of parameter '${p.name}' is not of type ${p.type}`,
      Code.InvalidArgument,
    );
  }
}

/** Maps a wire type name (ParameterSpec.type) to ours; unknown → "any". */
export function parameterTypeFromWire(type: string): ToolParameterType {
  const t = type.toLowerCase();
  if ((PARAMETER_TYPES as readonly string[]).includes(t)) return t as ToolParameterType;
  if (t === "str") return "string";
  if (t === "int") return "integer";
  if (t === "bool") return "boolean";
  if (t === "dict" || t === "map") return "object";
  if (t === "list") return "array";
  return "any";
}

/**
 * Checks arguments against the declared parameters: required ones present,
 * types right, no unknown names; fills in defaults.
 */
export function bindArguments(
  tool: Pick<RegisteredTool, "name" | "parameters">,
  args: Readonly<Record<string, JsonValue>>,
): ToolArguments {
  const bound: Record<string, JsonValue> = {};
  const known = new Set(tool.parameters.map((p) => p.name));
  for (const name of Object.keys(args)) {
    if (!known.has(name)) {
      const expected = tool.parameters.map((p) => p.name).join(", ") || "no parameters";
      throw new Error(`unknown parameter '${name}' for tool '${tool.name}': expected ${expected}`);
    }
  }
  for (const p of tool.parameters) {
    const value = args[p.name];
    if (value === undefined || value === null) {
      if (p.default !== undefined) bound[p.name] = p.default;
      else if (p.required === true) {
        throw new Error(`missing required parameter '${p.name}' for tool '${tool.name}'`);
      }
      continue;
    }
    if (!hasType(value, p.type)) {
      throw new Error(
        `parameter '${p.name}' of tool '${tool.name}' must be of type ${p.type}, got ${describe(value)}`,
      );
    }
    bound[p.name] = value;
  }
  return bound;
}

function hasType(value: JsonValue, type: ToolParameterType): boolean {
  switch (type) {
    case "string":
      return typeof value === "string";
    case "integer":
      return typeof value === "number" && Number.isInteger(value);
    case "float":
    case "number":
      return typeof value === "number";
    case "boolean":
      return typeof value === "boolean";
    case "array":
      return Array.isArray(value);
    case "object":
      return typeof value === "object" && value !== null && !Array.isArray(value);
    case "any":
      return true;
  }
}

function describe(value: JsonValue): string {
  if (Array.isArray(value)) return "an array";
  if (value === null) return "null";
  return typeof value === "object" ? "an object" : `${typeof value} ${JSON.stringify(value)}`;
}
