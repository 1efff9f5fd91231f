/**
 * The unified-bridge client: a SessionContext with a TTL cache kept coherent
 * by a watch stream, for browsers, Cloudflare Workers and Node. Runtime
 * neutral: Web-standard APIs only; the transport is passed in.
 *
 * @example
 * ```ts
 * import { createConnectTransport } from "@connectrpc/connect-web";
 * import { createSessionContext } from "unified-session-bridge";
 *
 * const ctx = await createSessionContext({
 *   transport: createConnectTransport({
 *     baseUrl: "https://bridge.example.com",
 *     useBinaryFormat: true, // values travel in protobuf Any: binary only
 *   }),
 * });
 * await ctx.register("temperature", "float", 0.7, { constraints: { min: 0, max: 2 } });
 * await ctx.set("temperature", 0.9);
 * ```
 * @packageDocumentation
 */

export type { AccessRole } from "../gen/snakepit/bridge/bridge_pb.js";
export type {
  JsonValue,
  Tensor,
  ValueOf,
  VariableType,
  VariableValue,
} from "../values/index.js";
export type { AccessRoleName } from "./access-error.js";
export { AccessError, accessRoles } from "./access-error.js";
export type { TokenClaims } from "./access-token.js";
export { tokenClaims } from "./access-token.js";
export { defaultAffinityHeader } from "./affinity-header.js";
export type { MintedToken } from "./mint-token.js";
export type { OptimizationLock } from "./optimization-lock.js";
export type {
  OutboxLimits,
  OutboxMessage,
  OutboxOptions,
  OutboxRecord,
  OutboxStore,
} from "./outbox.js";
export { memoryOutbox } from "./outbox.js";
export type { OutboxWrite } from "./outbox-writes.js";
export type { PendingWrite } from "./pending-writes.js";
export type { PersistenceAdapter } from "./persistence.js";
export type {
  BoundVariables,
  ReadOptions,
  VariableDeclaration,
  VariableHandle,
  VariableSchema,
  WriteOptions,
} from "./schema.js";
export type { SessionContext, SessionContextOptions } from "./session-context.js";
export { createSessionContext } from "./session-context.js";
export type { SessionContextEvents } from "./session-events.js";
export type { ToolArgs, ToolCallResult, ToolInfo } from "./session-tools.js";
export type { TimerProvider } from "./timers.js";
export type { HistoryEntry, ReadMethods } from "./variable-reads.js";
export type { Peeked, PeekOptions, VariableSnapshot } from "./variable-snapshot.js";
export type {
  BatchBuilder,
  BatchOptions,
  BatchResult,
  RegisterOptions,
  VariableWrites,
} from "./variable-writes.js";
export type { WatchOptions } from "./watch-coherence.js";
export { workerFetch } from "./worker-fetch.js";
export type { FailedWrite } from "./write-outcome.js";
export { OutcomeUnknownError, writeOutcome } from "./write-outcome.js";
