import { create } from "@bufbuild/protobuf";
import type { Any } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";
import { type ToolChunk, ToolChunkSchema } from "../../gen/snakepit/bridge/bridge_pb.js";
import type { JsonValue } from "../../values/index.js";
import type { ToolOutcome } from "./audit-trail.js";

/**
 * What the executor and its two runners (local and remote) share: the call
 * as it arrives, the outcome of running it, and the final chunk of a stream.
 */

/** A tool call as it arrives, from ExecuteTool or ExecuteElixirTool. */
export interface ToolCall {
  readonly sessionId: string;
  readonly toolName: string;
  readonly parameters: Readonly<Record<string, Any>>;
  readonly metadata: Readonly<Record<string, string>>;
  readonly binaryParameters: Readonly<Record<string, Uint8Array>>;
}

/** How a unary run ended: in-band, as the reply says it. */
export interface RunOutcome {
  readonly outcome: ToolOutcome;
  readonly result?: Any | undefined;
  /** A worker's opaque binary result (snakepit v0.13 `binary_result`), relayed as is. */
  readonly binaryResult?: Uint8Array | undefined;
  /** Why it failed ("" when it did not). */
  readonly error: string;
  readonly metadata?: Record<string, string>;
}

/** Told how a streaming run ended, before its last chunk goes out. */
export type ToolFinish = (outcome: ToolOutcome, error?: string) => void;

/**
 * Runs the tools of the bridge's Python worker pool (`workers/worker-pool.ts`).
 * Tool failures are in-band like a remote tool's; a call the pool cannot
 * serve (no worker ready, its worker died under it or lost the session's
 * state) throws a ConnectError.
 */
export interface PoolToolRunner {
  execute(call: ToolCall, signal: AbortSignal): Promise<RunOutcome>;
  /** Relays the worker's chunks; calls `finish` once, before the last one. */
  stream(call: ToolCall, signal: AbortSignal, finish: ToolFinish): AsyncGenerator<ToolChunk>;
}

const encoder = new TextEncoder();

/** A chunk of a streaming tool's output, as JSON. */
export function dataChunk(n: number, value: JsonValue): ToolChunk {
  return create(ToolChunkSchema, {
    chunkId: String(n),
    data: encoder.encode(JSON.stringify(value)),
  });
}

/** The last chunk of a stream: the tool's return value (if any) and how it went. */
export function finalChunk(
  n: number,
  value: JsonValue | null,
  metadata: Record<string, string>,
): ToolChunk {
  return create(ToolChunkSchema, {
    chunkId: String(n),
    data: value === null ? new Uint8Array(0) : encoder.encode(JSON.stringify(value)),
    isFinal: true,
    metadata,
  });
}

/** The text of a failure, for the caller. */
export function messageOf(e: unknown): string {
  if (e instanceof ConnectError) return e.rawMessage;
  if (e instanceof Error) return e.message;
  return String(e);
}
