/**
 * Which form of tool values (see {@link JsonAnyForm}) each peer gets.
 *
 * snakepit's Python workers read a tool value's bytes as JSON text
 * (`json.loads(any.value)`), for the results of their ExecuteTool and
 * ExecuteElixirTool calls and for the parameters of calls forwarded to them;
 * they speak gRPC. So:
 * - results go to gRPC callers in that raw form, and to Connect and gRPC-Web
 *   callers (browsers, Workers, buf curl's default protocol) as well-formed
 *   `google.protobuf.StringValue` messages that generic tools decode;
 * - parameters forwarded to a worker are always in the raw form;
 * - everything else the bridge writes (parameter defaults in tool specs,
 *   which the workers do not read) is well-formed.
 * Values are read in either form from every peer.
 */
import type { HandlerContext } from "@connectrpc/connect";
import { convertJsonAny, type JsonAnyForm } from "../../values/json-any.js";
import type { ToolResult } from "./tool-executor.js";

/** The form of the tool results a call over `protocolName` receives. */
export function resultFormFor(protocolName: string): JsonAnyForm {
  return protocolName === "grpc" ? "raw-json" : "string-value";
}

/** `result` with its value in the form the calling peer reads. */
export function resultForCaller(
  result: ToolResult,
  ctx: Pick<HandlerContext, "protocolName">,
): ToolResult {
  if (result.result === undefined) return result;
  return { ...result, result: convertJsonAny(result.result, resultFormFor(ctx.protocolName)) };
}
