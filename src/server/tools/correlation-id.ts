/**
 * The correlation id of a tool call, as snakepit v0.13 carries it: the
 * `x-snakepit-correlation-id` header and `metadata["correlation_id"]` of the
 * request. The bridge takes the caller's (or mints one), forwards it to the
 * worker in both places (the worker's Python logs and telemetry events carry
 * it), names it in its own log lines of the call, and tells the caller in
 * the response header.
 */
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { quote } from "../common/message-text.js";
import type { ToolCall } from "./tool-run.js";

/** The header snakepit v0.13's host and workers send the correlation id in. */
export const correlationHeader = "x-snakepit-correlation-id";

/** The request metadata key v0.13's host puts the correlation id under. */
export const correlationMetadataKey = "correlation_id";

// It goes into headers, log lines and metric-free event fields: short,
// printable, no separators. A uuid (hex or dashed) fits.
const VALID_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** A fresh correlation id: 32 hex digits, the form of v0.13's `uuid4().hex`. */
export function mintCorrelationId(): string {
  return crypto.randomUUID().replaceAll("-", "");
}

/**
 * The correlation id of a call: its metadata's `correlation_id`, else the
 * `x-snakepit-correlation-id` header (v0.13's host reads them in that
 * order), else a minted one.
 *
 * @throws ConnectError with `Code.InvalidArgument` for an id that is not 1
 *   to 128 characters of A-Z, a-z, 0-9, '.', '_', ':', '-'.
 */
export function correlationIdOf(
  headers: Headers | undefined,
  metadata: Readonly<Record<string, string>>,
): string {
  const given = metadata[correlationMetadataKey] ?? headers?.get(correlationHeader) ?? undefined;
  if (given === undefined || given === "") return mintCorrelationId();
  if (!VALID_ID.test(given)) {
    throw new ConnectError(
      `correlation id ${quote(given, 40)} (${correlationHeader} or metadata.${correlationMetadataKey}) must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_', ':', '-'`,
      Code.InvalidArgument,
    );
  }
  return given;
}

/** `call` with its correlation id in its metadata, where tools and workers read it. */
export function withCorrelationId<C extends ToolCall>(call: C, id: string): C {
  if (call.metadata[correlationMetadataKey] === id) return call;
  return { ...call, metadata: { ...call.metadata, [correlationMetadataKey]: id } };
}

/**
 * `call` with its correlation id (see {@link correlationIdOf}) in its
 * metadata, and the id in the response header `ctx` will send.
 */
export function traceCall<C extends ToolCall>(
  call: C,
  ctx: Pick<HandlerContext, "requestHeader" | "responseHeader">,
): C {
  const id = correlationIdOf(ctx.requestHeader, call.metadata);
  ctx.responseHeader.set(correlationHeader, id);
  return withCorrelationId(call, id);
}

/** The correlation id a call carries (set by {@link withCorrelationId}), if any. */
export function correlationIdIn(call: Pick<ToolCall, "metadata">): string | undefined {
  return call.metadata[correlationMetadataKey];
}
