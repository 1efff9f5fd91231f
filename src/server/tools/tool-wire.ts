import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type ParameterSpec,
  ParameterSpecSchema,
  type RegisterToolsRequest,
  type ToolSpec,
  ToolSpecSchema,
} from "../../gen/snakepit/bridge/bridge_pb.js";
import { encodeJsonAny } from "../../values/index.js";
import { quote } from "../common/message-text.js";
import type { SharedTool } from "./shared-tools.js";
import { PARAMETER_TYPES } from "./tool-arguments.js";
import type { ToolParameterType } from "./tool-definition.js";
import { checkToolName, type RegisteredTool, type ToolInput } from "./tool-registry.js";
import type { WorkerAddress, WorkerAddressPolicy } from "./worker-address.js";

/**
 * Tools between their wire form and the registry's: ToolSpec for callers,
 * RegisterToolsRequest from workers, SharedTool between replicas.
 */

/** Tool metadata that says where a tool runs: kept by the bridge, never shown to callers. */
const INTERNAL_TOOL_METADATA = new Set(["worker_address", "worker_id"]);

/** A registered tool as callers see it (InitializeSession, GetExposedElixirTools). */
export function toToolSpec(tool: RegisteredTool): ToolSpec {
  return create(ToolSpecSchema, {
    name: tool.name,
    description: tool.description,
    parameters: tool.parameters.map(
      (p): ParameterSpec =>
        create(ParameterSpecSchema, {
          name: p.name,
          type: p.type,
          description: p.description ?? "",
          required: p.required ?? false,
          ...(p.default === undefined ? {} : { defaultValue: encodeJsonAny(p.default) }),
        }),
    ),
    metadata: Object.fromEntries(
      Object.entries(tool.metadata).filter(([k]) => !INTERNAL_TOOL_METADATA.has(k)),
    ),
    supportsStreaming: tool.streaming,
    requiredVariables: [...tool.requiredVariables],
  });
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
 * The tools of a worker's RegisterTools request, each checked for what the
 * wire form must say: the worker's id, a tool name, a worker address the
 * policy allows, a whole number of seconds to live. The registry's own checks
 * (ownership, sizes, counts) come after.
 */
export function remoteToolsFromWire(
  req: RegisterToolsRequest,
  workerAddresses: WorkerAddressPolicy,
  now: number,
  registeredBy: string,
): { workerId: string; tools: ToolInput[] } {
  const workerId = req.workerId.trim();
  if (workerId === "") {
    throw new ConnectError(
      "worker_id is required: it names the worker that owns the tools (only it may replace them)",
      Code.InvalidArgument,
    );
  }
  const tools: ToolInput[] = [];
  for (const t of req.tools) {
    checkToolName(t.name);
    const raw = t.metadata.worker_address ?? "";
    if (raw === "") {
      throw new ConnectError(
        `tool '${t.name}': metadata.worker_address is required (the worker's gRPC host:port, where calls are forwarded)`,
        Code.InvalidArgument,
      );
    }
    const address = workerAddresses.check(raw);
    const ttlText = t.metadata.expires_in_seconds ?? "0";
    const ttl = /^\d{1,9}$/.test(ttlText) ? Number(ttlText) : Number.NaN;
    if (Number.isNaN(ttl)) {
      throw new ConnectError(
        `tool '${t.name}': metadata.expires_in_seconds must be a whole number of seconds, got ${quote(ttlText, 20)}`,
        Code.InvalidArgument,
      );
    }
    const metadata: Record<string, string> = {};
    for (const [k, v] of Object.entries(t.metadata)) {
      if (!INTERNAL_TOOL_METADATA.has(k)) metadata[k] = v;
    }
    tools.push({
      name: t.name,
      description: t.description,
      parameters: t.parameters.map((p) => ({
        name: p.name,
        type: parameterTypeFromWire(p.type),
        description: p.description,
        required: p.required,
      })),
      metadata,
      requiredVariables: [],
      streaming: t.supportsStreaming,
      sessionId: req.sessionId === "" ? undefined : req.sessionId,
      expiresAt: ttl > 0 ? now + ttl * 1000 : undefined,
      target: { kind: "remote", address, workerId, registeredBy },
    });
  }
  return { workerId, tools };
}

/** A remote tool as replicas exchange it. */
export function toSharedTool(tool: ToolInput): SharedTool {
  const target = tool.target as Extract<ToolInput["target"], { kind: "remote" }>;
  return {
    name: tool.name,
    description: tool.description,
    parameters: tool.parameters,
    metadata: tool.metadata,
    streaming: tool.streaming,
    ...(tool.sessionId === undefined ? {} : { sessionId: tool.sessionId }),
    ...(tool.expiresAt === undefined ? {} : { expiresAt: tool.expiresAt }),
    address: target.address.display,
    workerId: target.workerId,
    ...(target.registeredBy === undefined ? {} : { registeredBy: target.registeredBy }),
  };
}

/** A remote tool another replica registered, at the address this replica checked. */
export function fromSharedTool(tool: SharedTool, address: WorkerAddress): ToolInput {
  return {
    name: tool.name,
    description: tool.description,
    parameters: tool.parameters,
    metadata: tool.metadata,
    requiredVariables: [],
    streaming: tool.streaming,
    sessionId: tool.sessionId,
    expiresAt: tool.expiresAt,
    target: {
      kind: "remote",
      address,
      workerId: tool.workerId,
      ...(tool.registeredBy === undefined ? {} : { registeredBy: tool.registeredBy }),
    },
  };
}
