import type { JsonValue } from "../../values/index.js";
import type { ToolArguments, ToolParameter, ToolParameterType } from "./tool-definition.js";

/** The parameter types a tool may declare (ParameterSpec.type, as this bridge names them). */
export const PARAMETER_TYPES: readonly ToolParameterType[] = [
  "string",
  "integer",
  "float",
  "number",
  "boolean",
  "object",
  "array",
  "any",
];

/**
 * Checks arguments against the declared parameters: required ones present,
 * types right, no unknown names; fills in defaults.
 */
export function bindArguments(
  tool: { readonly name: string; readonly parameters: readonly ToolParameter[] },
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

export function hasType(value: JsonValue, type: ToolParameterType): boolean {
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
