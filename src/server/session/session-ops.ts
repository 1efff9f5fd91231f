import { Code, ConnectError } from "@connectrpc/connect";
import { quote } from "../common/message-text.js";
import { byName } from "../common/order.js";
import { checkMetadata } from "../limits/limits.js";
import type { BridgeCore } from "../rpc/bridge-core.js";
import { sessionEnded, sessionIdsMinted } from "../store/errors.js";
import { isClientSessionId, mintSessionId } from "../store/ids.js";
import type { SessionRecord, SessionTransaction, VariableRecord } from "../store/session-store.js";
import { checkToolName } from "../tools/tool-registry.js";
import { checkBatch, checkPatternWork, lockedVariables, registerWork } from "./variable-batch.js";
import type { RegisterInput } from "./variable-ops.js";

/**
 * The session semantics of InitializeSession and CleanupSession: who may
 * create a session under which id, what an existing one may be reopened
 * with, and what ending one releases.
 */

/** Longest tool allowlist a session may have. */
const MAX_ALLOWED_TOOLS = 1024;

/** What InitializeSession asks for. */
export interface OpenRequest {
  /** Empty: the server mints an id. */
  readonly sessionId: string;
  readonly metadata: Readonly<Record<string, string>>;
  /** 0: the server's default. */
  readonly ttlSeconds: number;
  readonly allowedTools: readonly string[];
  readonly initialVariables: readonly RegisterInput[];
}

/** Who asks: a worker, or a public client (by its address; empty when unknown). */
export interface OpenCaller {
  readonly worker: boolean;
  readonly client: string;
  /**
   * Refuses (throws) when the caller may not create a session; called
   * before anything is created. Absent: it may.
   */
  readonly checkCreate?: () => void;
  /** Refuses (throws) when the caller may not reopen `session`. Absent: it may. */
  readonly checkReopen?: (session: SessionRecord) => void;
}

/**
 * Creates a session, or reopens an existing one with the same settings;
 * resolves to the session and every variable it holds after the call,
 * ordered by name (the reply inlines a bounded first page of them).
 */
export async function openSession(
  core: BridgeCore,
  req: OpenRequest,
  caller: OpenCaller,
): Promise<{ session: SessionRecord; created: boolean; variables: VariableRecord[] }> {
  const { settings } = core;
  const chosen = req.sessionId !== "";
  const sessionId = chosen ? req.sessionId : mintSessionId();
  if (chosen && !isClientSessionId(sessionId)) {
    throw new ConnectError(
      `session_id ${quote(sessionId, 40)} is not a valid session id: use 16 to 256 characters of A-Z, a-z, 0-9, '_' and '-' (or leave it empty and the server mints one)`,
      Code.InvalidArgument,
    );
  }
  checkMetadata(req.metadata, settings.limits, "session");
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
  checkBatch(settings.limits, req.initialVariables.length, "initial_variables");
  checkPatternWork(
    registerWork(req.initialVariables),
    `initial_variables of ${req.initialVariables.length} variables`,
  );
  const ttlMs = req.ttlSeconds > 0 ? req.ttlSeconds * 1000 : settings.sessionTtlMs;
  const init = {
    id: sessionId,
    metadata: { ...req.metadata },
    ttlMs,
    allowedTools: [...req.allowedTools],
  };
  const setup = (tx: SessionTransaction) => {
    for (const input of req.initialVariables) core.ops.register(tx, input);
  };
  let result: { session: SessionRecord; created: boolean };
  const { checkCreate, checkReopen } = caller;
  if (checkCreate !== undefined || checkReopen !== undefined) {
    // Who may create and who may reopen differ: which one this call is
    // decides, before anything is created.
    const existing = chosen ? await core.find(sessionId, (view) => view.session) : undefined;
    if (existing === undefined) checkCreate?.();
    else checkReopen?.(existing.value);
  }
  if (chosen && !settings.clientSessionIds && !caller.worker) {
    // Public callers may reopen a session by id, never create one
    // under an id of their choosing.
    const existing = await core.find(sessionId, (view) => view.session);
    if (existing === undefined) throw sessionIdsMinted();
    result = { session: existing.value, created: false };
  } else {
    // A public client's new sessions count against its quota until they
    // end (workers are not public clients; a call without a peer
    // address, the routes mounted in another server, has none to count).
    const client = caller.worker ? "" : caller.client;
    const quota =
      client === ""
        ? undefined
        : {
            client,
            max: settings.limits.maxSessionsPerClient,
            maxBytes: settings.limits.maxBytesPerClient,
          };
    // Above the memory budget only sessions that exist may be opened: a
    // reopen holds nothing new.
    if (core.memory?.over === true) {
      const existing = chosen ? await core.find(sessionId, (view) => view.session) : undefined;
      if (existing === undefined) core.memory.check();
    }
    result = await core.store.createSession(
      quota === undefined ? init : { ...init, quota },
      settings.limits.maxSessions,
      setup,
    );
  }
  const { session, created } = result;
  // (A session created by another call in between is checked as a reopen.)
  if (!created) checkReopen?.(session);
  if (!created) checkSameSettings(session, req.ttlSeconds, ttlMs, init.allowedTools);
  const variables = await core.read(sessionId, (view) => [...view.variables()].sort(byName));
  return { session, created, variables };
}

/**
 * Ends a session: refused while a variable is under an optimization lock,
 * unless forced. Resolves to what it released (variables, session-scoped
 * tools, watch streams); 0 for a session that is not there.
 */
export async function cleanupSession(
  core: BridgeCore,
  sessionId: string,
  force: boolean,
): Promise<number> {
  const locked = await core.find(sessionId, lockedVariables);
  if (locked === undefined) return 0;
  if (locked.value.length > 0 && !force) {
    throw new ConnectError(
      `session has variables under an optimization lock (${locked.value.join(", ")}); stop the optimization or pass force`,
      Code.FailedPrecondition,
    );
  }
  const removedTools = core.tools.dropSession(sessionId);
  const endedWatchers = core.hub.endSession(sessionId, () => sessionEnded("cleaned up"));
  const removed = await core.store.deleteSession(sessionId, "cleanup");
  return (removed?.variables ?? 0) + removedTools + endedWatchers;
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
