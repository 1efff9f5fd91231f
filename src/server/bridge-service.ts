import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  type BridgeService,
  type ParameterSpec,
  ParameterSpecSchema,
  type RegisterToolsRequest,
  type ToolSpec,
  ToolSpecSchema,
  type Variable,
  VariableHistoryEntrySchema,
} from "../gen/snakepit/bridge/bridge_pb.js";
import { encodeJsonAny } from "../values/index.js";
import type { BridgeCore } from "./bridge-core.js";
import { isClientSessionId } from "./bridge-core.js";
import { clientOf, isWorker, requireWorker } from "./caller.js";
import { compileGlob } from "./glob.js";
import { mintSessionId } from "./ids.js";
import { checkMetadata, clip, formatBytes, quote } from "./limits.js";
import { type Logger, redactSessionId } from "./logger.js";
import type { SessionTransaction, VariableRecord } from "./store/session-store.js";
import type { SharedTool } from "./tools/shared-tools.js";
import type { ToolExecutor } from "./tools/tool-executor.js";
import {
  checkToolName,
  parameterTypeFromWire,
  type RegisteredTool,
  type ToolInput,
} from "./tools/tool-registry.js";
import { resultForCaller } from "./tools/tool-value-form.js";
import type { WorkerAddressPolicy } from "./tools/worker-address.js";
import { readVariableMessage, timestamp, toVariableMessage } from "./variable-message.js";
import { historyOf, type PreparedWrite } from "./variable-ops.js";
import { openWatch } from "./watch-endpoint.js";

/** What the service needs besides the core. */
export interface BridgeServiceParts {
  readonly executor: ToolExecutor;
  /** Decides where registered tools may send calls. */
  readonly workerAddresses: WorkerAddressPolicy;
  readonly logger: Logger;
}

/** Longest tool allowlist a session may have. */
const MAX_ALLOWED_TOOLS = 1024;

/** Tool metadata that says where a tool runs: kept by the bridge, never shown to callers. */
const INTERNAL_TOOL_METADATA = new Set(["worker_address", "worker_id"]);

/** The BridgeService handlers, over a core. */
export function createBridgeService(
  core: BridgeCore,
  parts: BridgeServiceParts,
): ServiceImpl<typeof BridgeService> {
  const { ops, store, hub, tools, settings } = core;
  const { executor, logger } = parts;
  const now = core.now;

  /**
   * Refuses a reply that would be over the reply limit before building it,
   * from the stored sizes (connect's own check on the encoded bytes stays
   * behind this one).
   */
  const checkReply = (records: Iterable<Pick<VariableRecord, "bytes" | "name">>, what: string) => {
    let bytes = 0;
    for (const r of records) bytes += r.bytes + 2 * r.name.length + 64;
    const max = settings.limits.maxReplyBytes;
    if (bytes > max) {
      throw new ConnectError(
        `the reply would be about ${formatBytes(bytes)} (${what}); the limit is ${formatBytes(max)} (--max-reply-bytes): ask for fewer at once`,
        Code.ResourceExhausted,
      );
    }
  };

  /**
   * A request naming more variables than a session can hold cannot be
   * valid; refusing it up front keeps one call from costing the server
   * work (an error per name) in proportion to the request's size.
   */
  const checkBatch = (count: number, what: string) => {
    const max = settings.limits.maxVariablesPerSession;
    if (count > max) {
      throw new ConnectError(
        `${what} names ${count} variables; a session holds at most ${max} (--max-variables-per-session)`,
        Code.InvalidArgument,
      );
    }
  };

  const toolsFor = (sessionId: string, allowed: readonly string[]): RegisteredTool[] =>
    tools
      .list(sessionId)
      .filter((t) => allowed.length === 0 || allowed.includes(t.name))
      .sort((a, b) => a.name.localeCompare(b.name));

  /** RegisterTools for a worker; any failure is a ConnectError. */
  const registerRemoteTools = async (
    req: RegisterToolsRequest,
    ctx: HandlerContext,
  ): Promise<{ success: boolean; toolIds: Record<string, string>; errorMessage: string }> => {
    requireWorker(ctx, "RegisterTools");
    // Session-scoped tools need a live session; they go away with it.
    if (req.sessionId !== "") await core.read(req.sessionId, () => undefined);
    const workerId = req.workerId.trim();
    if (workerId === "") {
      throw new ConnectError(
        "worker_id is required: it names the worker that owns the tools (only it may replace them)",
        Code.InvalidArgument,
      );
    }
    const accepted: ToolInput[] = [];
    for (const t of req.tools) {
      checkToolName(t.name);
      const raw = t.metadata.worker_address ?? "";
      if (raw === "") {
        throw new ConnectError(
          `tool '${t.name}': metadata.worker_address is required (the worker's gRPC host:port, where calls are forwarded)`,
          Code.InvalidArgument,
        );
      }
      const address = parts.workerAddresses.check(raw);
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
      accepted.push({
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
        expiresAt: ttl > 0 ? now() + ttl * 1000 : undefined,
        target: { kind: "remote", address, workerId },
      });
    }
    const shared = store.sharedTools;
    if (shared === undefined) {
      return { success: true, toolIds: tools.registerRemote(accepted, workerId), errorMessage: "" };
    }
    // Several replicas: checked here against what this replica knows, then
    // once for all replicas (atomically, in the store), then applied here;
    // the others apply it from the store's feed.
    tools.checkRemote(accepted, workerId);
    await shared.register(
      req.sessionId === "" ? undefined : req.sessionId,
      accepted.map(toSharedTool),
      workerId,
      settings.limits,
    );
    return { success: true, toolIds: tools.applyRemote(accepted, workerId), errorMessage: "" };
  };

  /** Logs and audits a refused registration (a few of its tool names, never its address). */
  const refusedRegistration = (req: RegisterToolsRequest, error: ConnectError) => {
    const outcome =
      error.code === Code.AlreadyExists
        ? "already_exists"
        : error.code === Code.ResourceExhausted
          ? "resource_exhausted"
          : error.code === Code.PermissionDenied || error.code === Code.Unauthenticated
            ? "denied"
            : "error";
    const names = req.tools.slice(0, 8).map((t) => clip(t.name, 64));
    logger.warn("tool registration refused", {
      event: "tool_register",
      session: req.sessionId === "" ? "(global)" : redactSessionId(req.sessionId),
      worker: clip(req.workerId, 64),
      tools: names,
      code: Code[error.code],
      error: error.rawMessage,
    });
    for (const name of names) {
      core.audit.record({
        action: "register",
        sessionId: req.sessionId,
        tool: name,
        startedAt: now(),
        durationMs: 0,
        outcome,
        error: error.rawMessage,
        target: "remote",
        streaming: false,
        worker: clip(req.workerId, 64),
      });
    }
  };

  const service: ServiceImpl<typeof BridgeService> = {
    ping(req) {
      return { message: req.message === "" ? "pong" : req.message, serverTime: timestamp(now()) };
    },

    async initializeSession(req, ctx) {
      const chosen = req.sessionId !== "";
      const sessionId = chosen ? req.sessionId : mintSessionId();
      if (chosen && !isClientSessionId(sessionId)) {
        throw new ConnectError(
          `session_id ${quote(sessionId, 40)} is not a valid session id: use 16 to 256 characters of A-Z, a-z, 0-9, '_' and '-' (or leave it empty and the server mints one)`,
          Code.InvalidArgument,
        );
      }
      const metadata: Record<string, string> = { ...req.metadata };
      if (req.config !== undefined) {
        metadata.enable_caching = String(req.config.enableCaching);
        metadata.cache_ttl_seconds = String(req.config.cacheTtlSeconds);
        metadata.enable_telemetry = String(req.config.enableTelemetry);
      }
      checkMetadata(metadata, settings.limits, "session");
      const maxTtl = settings.limits.maxSessionTtlSeconds;
      if (req.ttlSeconds < 0 || req.ttlSeconds > maxTtl) {
        throw new ConnectError(
          `ttl_seconds must be between 0 (server default) and ${maxTtl} (--max-session-ttl), got ${req.ttlSeconds}`,
          Code.InvalidArgument,
        );
      }
      if (req.allowedTools.length > MAX_ALLOWED_TOOLS) {
        throw new ConnectError(
          `allowed_tools names ${req.allowedTools.length} tools; the limit is ${MAX_ALLOWED_TOOLS}`,
          Code.InvalidArgument,
        );
      }
      for (const name of req.allowedTools) checkToolName(name);
      checkBatch(req.initialVariables.length, "initial_variables");
      const ttlMs = req.ttlSeconds > 0 ? req.ttlSeconds * 1000 : settings.sessionTtlMs;
      const init = { id: sessionId, metadata, ttlMs, allowedTools: [...req.allowedTools] };
      const setup = (tx: SessionTransaction) => {
        for (const v of req.initialVariables) {
          ops.register(tx, {
            name: v.name,
            type: v.type,
            value: v.initialValue,
            binary: v.initialBinaryValue,
            constraintsJson: v.constraintsJson,
            metadata: v.metadata,
          });
        }
      };
      let result: Awaited<ReturnType<typeof store.createSession>>;
      if (chosen && !settings.clientSessionIds && !isWorker(ctx)) {
        // Public callers may reopen a session by id, never create one
        // under an id of their choosing.
        const existing = await store.read(sessionId, (view) => view.session);
        if (existing === undefined) {
          throw new ConnectError(
            "this server mints session ids: leave session_id empty to create a session (an id you were given may have expired)",
            Code.NotFound,
          );
        }
        result = { session: existing.value, created: false };
      } else {
        // A public client's new sessions count against its quota until they
        // end (workers are not public clients; a call without a peer
        // address, the routes mounted in another server, has none to count).
        const client = isWorker(ctx) ? "" : clientOf(ctx);
        const quota =
          client === "" ? undefined : { client, max: settings.limits.maxSessionsPerClient };
        result = await store.createSession(
          quota === undefined ? init : { ...init, quota },
          settings.limits.maxSessions,
          setup,
        );
      }
      const { session, created } = result;
      if (!created) checkSameSettings(session, req.ttlSeconds, ttlMs, init.allowedTools);
      const variables = await core.read(sessionId, (view) => [...view.variables()]);
      checkReply(variables, `${variables.length} initial variables; read them with GetVariables`);
      // success stays true for an existing session: snakepit clients treat
      // InitializeSession as idempotent; `created` says which case it was.
      return {
        success: true,
        sessionId,
        created,
        expiresAt: timestamp(session.expiresAt),
        availableTools: Object.fromEntries(
          toolsFor(sessionId, session.allowedTools).map((t) => [t.name, toToolSpec(t)]),
        ),
        initialVariables: Object.fromEntries(variables.map((r) => [r.name, toVariableMessage(r)])),
      };
    },

    async cleanupSession(req) {
      const locked = await store.read(req.sessionId, (view) =>
        [...view.variables()].filter((r) => r.optimization !== undefined).map((r) => r.name),
      );
      if (locked === undefined) return { success: true, resourcesCleaned: 0 };
      if (locked.value.length > 0 && !req.force) {
        throw new ConnectError(
          `session has variables under an optimization lock (${locked.value.join(", ")}); stop the optimization or pass force`,
          Code.FailedPrecondition,
        );
      }
      const removedTools = tools.dropSession(req.sessionId);
      const endedWatchers = hub.endSession(req.sessionId, () => sessionEnded("cleaned up"));
      const removed = await store.deleteSession(req.sessionId, "cleanup");
      return {
        success: true,
        resourcesCleaned: (removed?.variables ?? 0) + removedTools + endedWatchers,
      };
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
        toolCount: toolsFor(req.sessionId, result.session.allowedTools).length,
        expiresAt: timestamp(result.session.expiresAt),
        allowedTools: [...result.session.allowedTools],
      };
    },

    async heartbeat(req) {
      const alive = req.sessionId === "" ? undefined : await store.read(req.sessionId, () => true);
      return { serverTime: timestamp(now()), sessionValid: alive !== undefined };
    },

    async getVariable(req) {
      const record = await core.read(req.sessionId, (view) =>
        ops.find(view, req.variableIdentifier),
      );
      return { variable: readVariableMessage(record), fromCache: false };
    },

    async setVariable(req) {
      const expectedVersion =
        req.expectedVersion !== 0 ? req.expectedVersion : req.expectVersionZero ? 0 : undefined;
      const record = await core.transact(req.sessionId, (tx) =>
        ops.applyWrite(
          tx,
          ops.prepareWrite(tx, {
            identifier: req.variableIdentifier,
            value: req.value,
            binary: req.binaryValue,
            metadata: req.metadata,
            expectedVersion,
          }),
        ),
      );
      return { success: true, newVersion: record.version, variable: toVariableMessage(record) };
    },

    async getVariables(req) {
      checkBatch(req.variableIdentifiers.length, "GetVariables");
      return core.read(req.sessionId, (view) => {
        const found: [string, VariableRecord][] = [];
        const missing: string[] = [];
        for (const identifier of req.variableIdentifiers) {
          const record = view.variable(identifier);
          if (record === undefined) missing.push(identifier);
          else found.push([identifier, record]);
        }
        checkReply(
          found.map(([, r]) => r),
          `${found.length} variables`,
        );
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
      let refused:
        | { errors: Record<string, string>; errorCodes: Record<string, number> }
        | undefined;
      const response = core.transact(req.sessionId, (tx) => {
        const errors: Record<string, string> = {};
        const errorCodes: Record<string, number> = {};
        const prepared = new Map<string, PreparedWrite>();
        const seen = new Map<string, string>();
        for (const key of keys) {
          try {
            const write = ops.prepareWrite(tx, {
              identifier: key,
              value: req.updates[key],
              binary: req.binaryUpdates[key] ?? new Uint8Array(0),
              metadata: req.metadata,
              expectedVersion: undefined,
            });
            const other = seen.get(write.current.id);
            if (other !== undefined) {
              throw new ConnectError(
                `variable '${write.current.name}' is updated twice in one batch (as '${other}' and '${key}')`,
                Code.InvalidArgument,
              );
            }
            seen.set(write.current.id, key);
            prepared.set(key, write);
          } catch (e) {
            const error = ConnectError.from(e);
            errors[key] = error.rawMessage;
            errorCodes[key] = error.code;
          }
        }
        if (req.atomic && Object.keys(errors).length > 0) {
          return { success: false, errors, errorCodes, newVersions: {}, variables: {} };
        }
        const newVersions: Record<string, number> = {};
        const variables: Record<string, Variable> = {};
        for (const [key, write] of prepared) {
          try {
            const record = ops.applyWrite(tx, write);
            newVersions[key] = record.version;
            variables[key] = toVariableMessage(record);
          } catch (e) {
            // Over the session budget. Atomic: throwing undoes the writes
            // applied so far, and the batch is refused in-band below.
            const error = ConnectError.from(e);
            errors[key] = error.rawMessage;
            errorCodes[key] = error.code;
            if (req.atomic) {
              refused = { errors, errorCodes };
              throw error;
            }
          }
        }
        return { success: true, errors, errorCodes, newVersions, variables };
      });
      return response.catch((e: unknown) => {
        if (refused === undefined) throw e;
        return { success: false, ...refused, newVersions: {}, variables: {} };
      });
    },

    async registerVariable(req) {
      const record = await core.transact(req.sessionId, (tx) =>
        ops.register(tx, {
          name: req.name,
          type: req.type,
          value: req.initialValue,
          binary: req.initialBinaryValue,
          constraintsJson: req.constraintsJson,
          metadata: req.metadata,
        }),
      );
      return { success: true, variableId: record.id, variable: toVariableMessage(record) };
    },

    async registerVariables(req) {
      checkBatch(req.variables.length, "RegisterVariables");
      return core.transact(req.sessionId, (tx) => {
        const variables: Variable[] = [];
        const created: string[] = [];
        for (const v of req.variables) {
          const existing = req.ifAbsent ? tx.variable(v.name) : undefined;
          if (existing !== undefined) {
            if (existing.type !== v.type) {
              throw new ConnectError(
                `variable '${v.name}' exists with type ${existing.type}, not ${v.type}`,
                Code.InvalidArgument,
              );
            }
            variables.push(toVariableMessage(existing));
            continue;
          }
          const record = ops.register(tx, {
            name: v.name,
            type: v.type,
            value: v.initialValue,
            binary: v.initialBinaryValue,
            constraintsJson: v.constraintsJson,
            metadata: v.metadata,
          });
          created.push(record.name);
          variables.push(toVariableMessage(record));
        }
        return { variables, created };
      });
    },

    async listVariables(req) {
      const matches = compileGlob(req.pattern);
      const records = await core.read(req.sessionId, (view) => {
        const out: VariableRecord[] = [];
        for (const record of view.variables()) if (matches(record.name)) out.push(record);
        return out;
      });
      checkReply(records, `${records.length} variables; narrow the pattern`);
      records.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      return { variables: records.map((r) => readVariableMessage(r)) };
    },

    async deleteVariable(req) {
      await core.transact(req.sessionId, (tx) => ops.remove(tx, req.variableIdentifier, "client"));
      return { success: true };
    },

    // An ExecuteToolRequest is a ToolCall as it stands; ExecuteElixirTool's
    // request has no binary parameters.
    // Results in the form the caller reads (tool-value-form.ts).
    executeTool: async (req, ctx) =>
      resultForCaller(await executor.execute(req, ctx.signal, ctx.requestHeader), ctx),
    executeStreamingTool: (req, ctx) => executor.stream(req, ctx.signal, ctx.requestHeader),
    executeElixirTool: async (req, ctx) =>
      resultForCaller(
        await executor.execute({ ...req, binaryParameters: {} }, ctx.signal, ctx.requestHeader),
        ctx,
      ),

    async getExposedElixirTools(req) {
      const allowed = await core.read(req.sessionId, (view) => view.session.allowedTools);
      return { tools: toolsFor(req.sessionId, allowed).map(toToolSpec) };
    },

    async registerTools(req, ctx) {
      try {
        return await registerRemoteTools(req, ctx);
      } catch (e) {
        const error = ConnectError.from(e);
        refusedRegistration(req, error);
        throw error;
      }
    },
    async *watchVariables(req, ctx) {
      // gRPC and gRPC-Web binary calls are served by watch-endpoint.ts;
      // this path serves the rest (Connect), with the same checks.
      yield* await openWatch(core, req, ctx.signal);
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

    async getVariableHistory(req) {
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
        checkReply(
          selected.map((e) => ({ bytes: e.bytes, name: record.name })),
          `${selected.length} versions; pass a limit`,
        );
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
      const record = await core.transact(req.sessionId, (tx) =>
        ops.rollback(tx, req.variableIdentifier, req.targetVersion, "rollback"),
      );
      return { success: true, variable: toVariableMessage(record) };
    },
  };

  return service;
}

/**
 * InitializeSession of an existing session: refused when it asks for a
 * lifetime or a tool allowlist other than the session has, so a caller
 * never silently gets settings someone else chose.
 */
function checkSameSettings(
  session: { ttlMs: number; allowedTools: readonly string[] },
  ttlSeconds: number,
  ttlMs: number,
  allowedTools: readonly string[],
): void {
  const sameTools =
    allowedTools.length === 0 ||
    (allowedTools.length === session.allowedTools.length &&
      allowedTools.every((t) => session.allowedTools.includes(t)));
  if ((ttlSeconds > 0 && ttlMs !== session.ttlMs) || !sameTools) {
    throw new ConnectError(
      "the session exists with other settings (ttl_seconds or allowed_tools); reopen it without them, or leave session_id empty for a new session",
      Code.AlreadyExists,
    );
  }
}

/** A remote tool as replicas exchange it. */
function toSharedTool(tool: ToolInput): SharedTool {
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
  };
}

/** The status a watch stream ends with when its session goes away. */
export function sessionEnded(how: string): ConnectError {
  return new ConnectError(`session ended: ${how}`, Code.NotFound);
}

function toToolSpec(tool: RegisteredTool): ToolSpec {
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
