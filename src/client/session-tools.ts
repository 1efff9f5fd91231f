import { type Client, Code, ConnectError } from "@connectrpc/connect";
import type { BridgeService, ToolChunk } from "../gen/snakepit/bridge/bridge_pb.js";
import { decodeJsonAny, encodeJsonAny, type JsonValue } from "../values/index.js";
import { collectPages } from "./paged-listing.js";

/** A tool the session may call. */
export interface ToolInfo {
  readonly name: string;
  readonly description: string;
  readonly parameters: readonly {
    readonly name: string;
    readonly type: string;
    readonly description: string;
    readonly required: boolean;
    readonly default: JsonValue | undefined;
  }[];
  readonly streaming: boolean;
  readonly metadata: Readonly<Record<string, string>>;
}

/** Arguments of a tool call: JSON values by parameter name. */
export type ToolArgs = Readonly<Record<string, JsonValue>>;

/** Everything a successful tool call returned. */
export interface ToolCallResult {
  /** The result, decoded into a plain JavaScript value. */
  readonly value: JsonValue;
  /**
   * The tool's opaque binary result (snakepit v0.13 `binary_result`: large
   * or non-JSON data beside `value`), or `undefined` when it sent none.
   */
  readonly binary: Uint8Array | undefined;
  /** The response's metadata (a worker's own, e.g. its format of `binary`). */
  readonly metadata: Readonly<Record<string, string>>;
  /** How long the call ran on the server, in milliseconds. */
  readonly executionTimeMs: number;
}

const decoder = new TextDecoder();

/** Lists the tools a session may call. */
export async function listTools(
  client: Client<typeof BridgeService>,
  sessionId: string,
): Promise<ToolInfo[]> {
  // Every page: the bridge bounds each one in bytes.
  const tools = await collectPages(async (pageToken) => {
    const res = await client.getExposedElixirTools({ sessionId, pageToken });
    return { items: res.tools, nextPageToken: res.nextPageToken };
  });
  return tools.map((t) => ({
    name: t.name,
    description: t.description,
    parameters: t.parameters.map((p) => ({
      name: p.name,
      type: p.type,
      description: p.description,
      required: p.required,
      default: p.defaultValue === undefined ? undefined : decodeJsonAny(p.defaultValue),
    })),
    streaming: t.supportsStreaming,
    metadata: t.metadata,
  }));
}

/**
 * Calls a tool and returns all it returned: the decoded value, the binary
 * result and the metadata. Results come in every form tools write (see
 * {@link decodeJsonAny}): JSON under the StringValue type URL, snakepit
 * v0.13's `snakepit.map` / `snakepit.list` / `snakepit.<type>`, and
 * `google.protobuf.Value` / `Struct` / `ListValue`. A tool failure
 * (reported in-band by the server) becomes a ConnectError: NOT_FOUND for an
 * unknown tool, INVALID_ARGUMENT for bad arguments, UNKNOWN when the tool
 * itself failed; a result that cannot be decoded is INVALID_ARGUMENT.
 */
export async function callToolResult(
  client: Client<typeof BridgeService>,
  sessionId: string,
  name: string,
  args: ToolArgs,
  signal?: AbortSignal,
): Promise<ToolCallResult> {
  const response = await client.executeTool(
    { sessionId, toolName: name, parameters: encodeArgs(args) },
    signal === undefined ? {} : { signal },
  );
  if (!response.success) {
    throw new ConnectError(
      `tool '${name}' failed: ${response.errorMessage}`,
      codeForKind(response.metadata.error_kind),
    );
  }
  return {
    value: decodeJsonAny(response.result),
    binary: response.binaryResult.length === 0 ? undefined : response.binaryResult,
    metadata: response.metadata,
    executionTimeMs: Number(response.executionTimeMs),
  };
}

/** Calls a tool and returns its decoded result (see {@link callToolResult}). */
export async function callTool(
  client: Client<typeof BridgeService>,
  sessionId: string,
  name: string,
  args: ToolArgs,
  signal?: AbortSignal,
): Promise<JsonValue> {
  return (await callToolResult(client, sessionId, name, args, signal)).value;
}

/**
 * Runs a streaming tool: yields each chunk's JSON value, then the final
 * chunk's value if it carries one. A failure ends the iteration with a
 * ConnectError.
 */
export async function* streamTool(
  client: Client<typeof BridgeService>,
  sessionId: string,
  name: string,
  args: ToolArgs,
  signal?: AbortSignal,
): AsyncGenerator<JsonValue, void, undefined> {
  const chunks = client.executeStreamingTool(
    { sessionId, toolName: name, parameters: encodeArgs(args), stream: true },
    signal === undefined ? {} : { signal },
  );
  for await (const chunk of chunks) {
    if (chunk.isFinal && chunk.metadata.error !== undefined) {
      throw new ConnectError(`tool '${name}' failed: ${chunk.metadata.error}`, Code.Unknown);
    }
    if (chunk.data.length > 0) yield parseChunk(chunk);
    if (chunk.isFinal) return;
  }
}

function encodeArgs(args: ToolArgs) {
  return Object.fromEntries(Object.entries(args).map(([k, v]) => [k, encodeJsonAny(v)]));
}

function parseChunk(chunk: ToolChunk): JsonValue {
  const text = decoder.decode(chunk.data);
  try {
    return JSON.parse(text) as JsonValue;
  } catch {
    // Workers may stream plain text rather than JSON; hand it over as is.
    return text;
  }
}

function codeForKind(kind: string | undefined): Code {
  switch (kind) {
    case "not_found":
      return Code.NotFound;
    case "invalid_arguments":
      return Code.InvalidArgument;
    default:
      return Code.Unknown;
  }
}
