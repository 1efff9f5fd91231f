import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  type BridgeService,
  ToolSpecSchema,
  type Variable,
  VariableHistoryEntrySchema,
  VariableSchema,
} from "../../gen/snakepit/bridge/bridge_pb.js";
import { grantOf } from "../access/access-grant.js";
import { clientOf, isWorker, requireWorker } from "../access/caller.js";
import { toWireRole } from "../access/roles.js";
import type { SessionAccess } from "../access/session-access.js";
import { checkMetadata } from "../limits/limits.js";
import { createReplyBudget } from "../limits/reply-budget.js";
import { type KeyedWrite, once, recordAt, writeKeyOf } from "../session/idempotency.js";
import { cleanupSession, openSession } from "../session/session-ops.js";
import {
  checkBatch as checkBatchOf,
  checkReply as checkReplyOf,
  getMany,
  listMatching,
  registerMany,
  setMany,
} from "../session/variable-batch.js";
import { historyOf } from "../session/variable-history.js";
import {
  readVariableMessage,
  registerInputOf,
  timestamp,
  toVariableMessage,
} from "../session/variable-message.js";
import type { SessionTransaction, VariableRecord } from "../store/session-store.js";
import { traceCall } from "../tools/correlation-id.js";
import { originOf, type ToolExecutor } from "../tools/tool-executor.js";
import type { RegisteredTool } from "../tools/tool-registry.js";
import { resultForCaller } from "../tools/tool-value-form.js";
import { toToolSpec } from "../tools/tool-wire.js";
import type { WorkerTools } from "../tools/worker-tools.js";
import { openWatch } from "../watch/watch-endpoint.js";
import type { WorkerPool } from "../workers/worker-pool.js";
import type { BridgeCore } from "./bridge-core.js";
import { INLINE_BYTES, measured, PAGE_BYTES, pageBudget, pageOf } from "./reply-pages.js";

/** What the service needs besides the core. */
export interface BridgeServiceParts {
  readonly executor: ToolExecutor;
  readonly workerTools: WorkerTools;
  /** Who may open sessions and mint tokens (the rest is the access check's). */
  readonly access: SessionAccess;
  /** The Python worker pool, when the bridge runs one. */
  readonly pool?: Pick<WorkerPool, "claimRegistration" | "answersHeartbeat">;
}

/**
 * The BridgeService handlers, over a core: each turns its request into a
 * call of the session, variable or tool semantics (session-ops,
 * variable-ops, variable-batch, the tool registry and executor) and the
 * result into its reply. Nothing here decides what a call means.
 */
export function createBridgeService(
  core: BridgeCore,
  parts: BridgeServiceParts,
): ServiceImpl<typeof BridgeService> {
  const { ops, tools, settings } = core;
  const { executor, workerTools, access, pool } = parts;
  const now = core.now;
  const checkBatch = (count: number, what: string) => checkBatchOf(settings.limits, count, what);
  const checkReply = (records: Iterable<Pick<VariableRecord, "bytes" | "name">>, what: string) =>
    checkReplyOf(settings.limits, records, what);
  // Twice the largest reply: one reply of any allowed size always fits,
  // and a client that stops reading cannot pile up more.
  const { reserve } = createReplyBudget(2 * settings.limits.maxReplyBytes, "2 × --max-reply-bytes");
  const pageBytes = pageBudget(settings.limits, PAGE_BYTES);
  const inlineBytes = pageBudget(settings.limits, INLINE_BYTES);
  const firstPage = { pageSize: 0, pageToken: "" };
  const variableSizes = () =>
    measured(VariableSchema, (r: VariableRecord) => readVariableMessage(r));
  const toolSizes = () => measured(ToolSpecSchema, toToolSpec);
  const toolName = (t: RegisteredTool) => t.name;
  const transactIn =
    (sessionId: string) =>
    <R>(fn: (tx: SessionTransaction) => R) =>
      core.transact(sessionId, fn);

  const service: ServiceImpl<typeof BridgeService> = {
    ping(req) {
      return { message: req.message === "" ? "pong" : req.message, serverTime: timestamp(now()) };
    },

    async initializeSession(req, ctx) {
      const metadata: Record<string, string> = { ...req.metadata };
      if (req.config !== undefined) {
        metadata.enable_caching = String(req.config.enableCaching);
        metadata.cache_ttl_seconds = String(req.config.cacheTtlSeconds);
        metadata.enable_telemetry = String(req.config.enableTelemetry);
      }
      const worker = isWorker(ctx);
      const grant = grantOf(ctx);
      const opening = access.open(grant, metadata);
      const { session, created, variables } = await openSession(
        core,
        {
          sessionId: req.sessionId,
          metadata: opening.metadata,
          ttlSeconds: req.ttlSeconds,
          allowedTools: req.allowedTools,
          initialVariables: req.initialVariables.map(registerInputOf),
        },
        {
          worker,
          client: worker ? "" : clientOf(ctx),
          checkCreate: opening.checkCreate,
          checkReopen: opening.checkReopen,
        },
      );
      const token = await access.tokenAfterOpen(grant, session, created);
      // Both listings are bounded first pages (map entries also carry the
      // name as key): a 26-byte reopen must not cost a whole session.
      const vars = variableSizes();
      const variablePage = pageOf(
        variables,
        (r) => r.name,
        (r) => vars.size(r) + r.name.length,
        firstPage,
        inlineBytes,
        true,
      );
      const specs = toolSizes();
      const toolPage = pageOf(
        tools.visible(session.id, session.allowedTools),
        toolName,
        (t) => specs.size(t) + t.name.length,
        firstPage,
        inlineBytes,
        true,
      );
      reserve(ctx, variablePage.bytes + toolPage.bytes, "InitializeSession");
      // success stays true for an existing session: snakepit clients treat
      // InitializeSession as idempotent; `created` says which case it was.
      return {
        success: true,
        sessionId: session.id,
        created,
        expiresAt: timestamp(session.expiresAt),
        availableTools: Object.fromEntries(toolPage.items.map((t) => [t.name, specs.message(t)])),
        initialVariables: Object.fromEntries(
          variablePage.items.map((r) => [r.name, vars.message(r)]),
        ),
        initialVariablesNextPageToken: variablePage.nextPageToken,
        availableToolsNextPageToken: toolPage.nextPageToken,
        ...(token === undefined
          ? {}
          : { accessToken: token.token, accessTokenExpiresAt: timestamp(token.expiresAt) }),
      };
    },

    async mintToken(req, ctx) {
      const session = await core.read(req.sessionId, (view) => view.session);
      const minted = await access.mint(grantOf(ctx), session, req.role, req.ttlSeconds);
      return {
        token: minted.token,
        expiresAt: timestamp(minted.expiresAt),
        role: toWireRole(minted.role),
      };
    },

    async cleanupSession(req) {
      const resourcesCleaned = await cleanupSession(core, req.sessionId, req.force);
      return { success: true, resourcesCleaned };
    },

    async getSession(req) {
      const result = await core.read(req.sessionId, (view) => ({
        session: view.session,
        variableCount: view.variableCount,
      }));
      return {
        sessionId: result.session.id,
        metadata: { ...result.session.metadata },
        createdAt: timestamp(result.session.createdAt),
        variableCount: result.variableCount,
        toolCount: tools.visible(req.sessionId, result.session.allowedTools).length,
        expiresAt: timestamp(result.session.expiresAt),
        allowedTools: [...result.session.allowedTools],
      };
    },

    async heartbeat(req, ctx) {
      // A pool worker's heartbeat: answered without refreshing the session,
      // which only its clients keep alive.
      if (pool?.answersHeartbeat(req.sessionId) === true && isWorker(ctx)) {
        return { serverTime: timestamp(now()), sessionValid: true };
      }
      const alive = await core.find(req.sessionId, () => true);
      return { serverTime: timestamp(now()), sessionValid: alive !== undefined };
    },

    async getVariable(req, ctx) {
      const record = await core.read(req.sessionId, (view) =>
        ops.find(view, req.variableIdentifier),
      );
      reserve(ctx, record.bytes + 2 * record.name.length + 64, "GetVariable");
      return { variable: readVariableMessage(record), fromCache: false };
    },

    async setVariable(req) {
      const expectedVersion =
        req.expectedVersion !== 0 ? req.expectedVersion : req.expectVersionZero ? 0 : undefined;
      const writeKey = writeKeyOf("SetVariable", req);
      const { version, record } = await once(
        transactIn(req.sessionId),
        now,
        writeKey,
        versionWrite,
        (tx) => {
          const written = ops.applyWrite(
            tx,
            ops.prepareWrite(tx, {
              identifier: req.variableIdentifier,
              value: req.value,
              binary: req.binaryValue,
              metadata: req.metadata,
              expectedVersion,
            }),
          );
          return { id: written.id, version: written.version, record: written };
        },
      );
      return {
        success: true,
        newVersion: version,
        ...(record === undefined ? {} : { variable: toVariableMessage(record) }),
      };
    },

    async getVariables(req, ctx) {
      checkBatch(req.variableIdentifiers.length, "GetVariables");
      return core.read(req.sessionId, (view) => {
        const { found, missing } = getMany(settings.limits, view, req.variableIdentifiers);
        reserve(ctx, replyEstimate(found.map(([, r]) => r)), "GetVariables");
        const variables: Record<string, Variable> = {};
        for (const [identifier, record] of found) {
          variables[identifier] = readVariableMessage(record, req.includeMetadata);
        }
        return { variables, missingVariables: missing };
      });
    },

    async setVariables(req) {
      checkMetadata(req.metadata, settings.limits, "batch");
      const keys = [...new Set([...Object.keys(req.updates), ...Object.keys(req.binaryUpdates)])];
      checkBatch(keys.length, "SetVariables");
      const writeKey = writeKeyOf("SetVariables", req);
      const result = await setMany(
        core,
        req.sessionId,
        {
          writes: keys.map((key) => ({
            identifier: key,
            value: req.updates[key],
            binary: req.binaryUpdates[key] ?? new Uint8Array(0),
          })),
          metadata: req.metadata,
          atomic: req.atomic,
        },
        writeKey,
      );
      const variables: Record<string, Variable> = {};
      for (const [key, record] of result.written) variables[key] = toVariableMessage(record);
      const { success, errors, errorCodes, newVersions } = result;
      return { success, errors, errorCodes, newVersions, variables };
    },

    async registerVariable(req) {
      const writeKey = writeKeyOf("RegisterVariable", req);
      const { id, record } = await once(
        transactIn(req.sessionId),
        now,
        writeKey,
        versionWrite,
        (tx) => {
          const registered = ops.register(tx, registerInputOf(req));
          return { id: registered.id, version: registered.version, record: registered };
        },
      );
      return {
        success: true,
        variableId: id,
        ...(record === undefined ? {} : { variable: toVariableMessage(record) }),
      };
    },

    async registerVariables(req) {
      checkBatch(req.variables.length, "RegisterVariables");
      const { records, created } = await core.transact(req.sessionId, (tx) =>
        registerMany(ops, tx, req.variables.map(registerInputOf), req.ifAbsent),
      );
      return { variables: records.map((r) => toVariableMessage(r)), created };
    },

    async listVariables(req, ctx) {
      const records = await core.read(req.sessionId, (view) => listMatching(view, req.pattern));
      // One page, whatever the caller knows of pages: a peer that does not
      // read next_page_token gets the first page instead of a reply it
      // cannot receive.
      const vars = variableSizes();
      const page = pageOf(records, (r) => r.name, vars.size, req, pageBytes);
      reserve(ctx, page.bytes, "ListVariables");
      return { variables: page.items.map(vars.message), nextPageToken: page.nextPageToken };
    },

    async deleteVariable(req) {
      await once(
        transactIn(req.sessionId),
        now,
        writeKeyOf("DeleteVariable", req),
        deleteWrite,
        (tx) => {
          ops.remove(tx, req.variableIdentifier, "client");
        },
      );
      return { success: true };
    },

    // An ExecuteToolRequest is a ToolCall as it stands; ExecuteElixirTool's
    // request has no binary parameters.
    // Results in the form the caller reads (tool-value-form.ts).
    // Each call carries a correlation id to the worker and the logs (correlation-id.ts).
    executeTool: async (req, ctx) =>
      resultForCaller(
        await executor.execute(traceCall(req, ctx), ctx.signal, ctx.requestHeader, originOf(ctx)),
        ctx,
      ),
    executeStreamingTool: (req, ctx) =>
      executor.stream(traceCall(req, ctx), ctx.signal, ctx.requestHeader, originOf(ctx)),
    executeElixirTool: async (req, ctx) =>
      resultForCaller(
        await executor.execute(
          traceCall({ ...req, binaryParameters: {} }, ctx),
          ctx.signal,
          ctx.requestHeader,
          originOf(ctx),
        ),
        ctx,
      ),

    async getExposedElixirTools(req, ctx) {
      const allowed = await core.read(req.sessionId, (view) => view.session.allowedTools);
      const specs = toolSizes();
      const page = pageOf(
        tools.visible(req.sessionId, allowed),
        toolName,
        specs.size,
        req,
        pageBytes,
      );
      reserve(ctx, page.bytes, "GetExposedElixirTools");
      return { tools: page.items.map(specs.message), nextPageToken: page.nextPageToken };
    },

    async registerTools(req, ctx) {
      // A pool worker registers its tools for each session it serves, with
      // no address: the pool knows the worker and already lists them.
      const claimed = isWorker(ctx) ? pool?.claimRegistration(req) : undefined;
      if (claimed !== undefined) return { success: true, toolIds: claimed, errorMessage: "" };
      const toolIds = await workerTools.register(
        req,
        () => {
          requireWorker(ctx, "RegisterTools");
          // Tools are held by the process too: none are added above its budget.
          core.memory?.check();
        },
        clientOf(ctx),
      );
      return { success: true, toolIds, errorMessage: "" };
    },

    // The host calls it on a worker (telemetry-reader.ts); nothing to serve here.
    // biome-ignore lint/correctness/useYield: it refuses before any event.
    async *streamTelemetry() {
      throw new ConnectError(
        "StreamTelemetry is served by snakepit workers to their host, not by the bridge (the bridge reads it from its workers)",
        Code.Unimplemented,
      );
    },

    async *watchVariables(req, ctx) {
      // gRPC, gRPC-Web and Connect binary calls are served by
      // watch-endpoint.ts; this path serves the rest, with the same checks.
      yield* await openWatch(
        core,
        req,
        ctx.signal,
        undefined,
        isWorker(ctx) ? undefined : clientOf(ctx),
      );
    },

    async addDependency(req) {
      await core.transact(req.sessionId, (tx) =>
        ops.addDependency(tx, req.fromVariable, req.toVariable, req.dependencyType),
      );
      return { success: true };
    },

    async startOptimization(req) {
      const record = await core.transact(req.sessionId, (tx) =>
        ops.lock(tx, req.variableIdentifier, req.optimizerId, req.optimizerConfig),
      );
      return { success: true, optimizationId: record.optimization?.optimizationId ?? "" };
    },

    async stopOptimization(req) {
      const record = await core.transact(req.sessionId, (tx) =>
        ops.unlock(tx, req.variableIdentifier, req.optimizerId, req.force),
      );
      return { success: true, finalValue: toVariableMessage(record).value };
    },

    async getVariableHistory(req, ctx) {
      if (req.limit < 0) {
        throw new ConnectError(
          `limit must be 0 (all) or positive, got ${req.limit}`,
          Code.InvalidArgument,
        );
      }
      return core.read(req.sessionId, (view) => {
        const record = ops.find(view, req.variableIdentifier);
        const newestFirst = historyOf(view, record).reverse();
        const selected = req.limit > 0 ? newestFirst.slice(0, req.limit) : newestFirst;
        const sized = selected.map((e) => ({ bytes: e.bytes, name: record.name }));
        checkReply(sized, `${selected.length} versions; pass a limit`);
        reserve(ctx, replyEstimate(sized), "GetVariableHistory");
        return {
          entries: selected.map((entry) => {
            const message = toVariableMessage({ ...record, value: entry.value });
            return create(VariableHistoryEntrySchema, {
              version: entry.version,
              value: message.value,
              timestamp: timestamp(entry.timestamp),
              changedBy: entry.changedBy,
              metadata: { ...entry.metadata },
              binaryValue: message.binaryValue,
            });
          }),
        };
      });
    },

    async rollbackVariable(req) {
      const { record } = await once(
        transactIn(req.sessionId),
        now,
        writeKeyOf("RollbackVariable", req),
        versionWrite,
        (tx) => {
          const written = ops.rollback(tx, req.variableIdentifier, req.targetVersion, "rollback");
          return { id: written.id, version: written.version, record: written };
        },
      );
      if (record === undefined) {
        // The remembered version is gone from the history (its cap): answer
        // with the variable as it stands, as a repeated SetVariable does.
        const current = await core.read(req.sessionId, (view) =>
          ops.find(view, req.variableIdentifier),
        );
        return { success: true, variable: toVariableMessage(current) };
      }
      return { success: true, variable: toVariableMessage(record) };
    },
  };

  return service;
}

/**
 * A reply's size from the stored sizes, as the reply limit estimates it
 * (variable-batch.ts): close enough to count replies in flight without
 * encoding them first.
 */
function replyEstimate(records: Iterable<Pick<VariableRecord, "bytes" | "name">>): number {
  let bytes = 0;
  for (const r of records) bytes += r.bytes + 2 * r.name.length + 64;
  return bytes;
}

/** A write of one variable: the version it made, and the record when it is retained. */
interface VersionResult {
  readonly id: string;
  readonly version: number;
  readonly record: VariableRecord | undefined;
}

/**
 * How SetVariable, RegisterVariable and RollbackVariable are remembered under an idempotency
 * key: the variable's id and the version the write made, from which a
 * repeated key is answered with the variable as that write left it.
 */
const versionWrite: KeyedWrite<VersionResult> = {
  summary: (result) => [result.id, result.version],
  replay(view, summary) {
    const [id, version] = summary as [string, number];
    return { id, version, record: recordAt(view, id, version) };
  },
};

/** DeleteVariable answers a repeated key with success: its reply carries nothing. */
const deleteWrite: KeyedWrite<void> = {
  summary: () => null,
  replay: () => undefined,
};
