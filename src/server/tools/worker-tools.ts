import { Code, ConnectError } from "@connectrpc/connect";
import type { RegisterToolsRequest } from "../../gen/snakepit/bridge/bridge_pb.js";
import { clip } from "../common/message-text.js";
import { createKeyedLogSampler } from "../observability/log-sampler.js";
import { type Logger, redactSessionId } from "../observability/logger.js";
import type { BridgeCore } from "../rpc/bridge-core.js";
import type { SharedTool } from "./shared-tools.js";
import type { ToolInput } from "./tool-registry.js";
import { fromSharedTool, remoteToolsFromWire, toSharedTool } from "./tool-wire.js";
import type { WorkerAddress, WorkerAddressPolicy } from "./worker-address.js";

/**
 * The tools workers register: checked and held in this replica's registry,
 * and with a multi-node store also recorded once for all replicas (and
 * applied here from what the others record).
 */
export interface WorkerTools {
  /**
   * RegisterTools: `authorize` throws unless the caller is a worker;
   * `client` is the caller's address (`clientOf`), which a worker_id's
   * later registrations must share. Returns the tools' ids by name; a
   * refusal (any error) is logged and audited, then thrown.
   */
  register(
    req: RegisterToolsRequest,
    authorize: () => void,
    client: string,
  ): Promise<Record<string, string>>;
  /**
   * With a multi-node store: applies the remote tools other replicas
   * registered, now and from here on, each checked against this replica's
   * own address policy. Does nothing the second time, or without one.
   */
  follow(): Promise<void>;
  /** Stops following other replicas. */
  close(): void;
}

/** Creates the worker tool registration of a core. */
export function createWorkerTools(
  core: BridgeCore,
  options: {
    readonly workerAddresses: WorkerAddressPolicy;
    readonly logger: Logger;
    /**
     * Called after each registration (here or, with a multi-node store, on
     * another replica) with the worker addresses it named: a worker that
     * registers is there (see worker-liveness.ts).
     */
    readonly onRegistered?: (address: WorkerAddress) => void;
  },
): WorkerTools {
  const { tools, store, settings } = core;
  const { workerAddresses, logger } = options;
  const registeredAt = (registered: readonly ToolInput[]) => {
    const seen = new Set<string>();
    for (const tool of registered) {
      if (tool.target.kind !== "remote" || seen.has(tool.target.address.display)) continue;
      seen.add(tool.target.address.display);
      options.onRegistered?.(tool.target.address);
    }
  };

  const registerChecked = async (
    req: RegisterToolsRequest,
    authorize: () => void,
    client: string,
  ) => {
    authorize();
    // Session-scoped tools need a live session; they go away with it.
    if (req.sessionId !== "") await core.read(req.sessionId, () => undefined);
    const { workerId, tools: accepted } = remoteToolsFromWire(
      req,
      workerAddresses,
      core.now(),
      client,
    );
    const shared = store.sharedTools;
    if (shared === undefined) {
      const ids = tools.registerRemote(accepted, workerId);
      registeredAt(accepted);
      return ids;
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
    const ids = tools.applyRemote(accepted, workerId);
    registeredAt(accepted);
    return ids;
  };

  // Anyone reaching the public port can have registrations refused as fast
  // as it sends them: logged per code, the first of each window in full.
  const refusals = createKeyedLogSampler(logger, {
    level: "warn",
    msg: "tool registration refused",
    timers: core.timers,
  });

  /** Logs and audits a refused registration (a few of its tool names, never its address). */
  const refused = (req: RegisterToolsRequest, error: ConnectError, client: string) => {
    const outcome =
      error.code === Code.AlreadyExists
        ? "already_exists"
        : error.code === Code.ResourceExhausted
          ? "resource_exhausted"
          : error.code === Code.PermissionDenied || error.code === Code.Unauthenticated
            ? "denied"
            : "error";
    const names = req.tools.slice(0, 8).map((t) => clip(t.name, 64));
    refusals.report(
      { code: Code[error.code] },
      {
        event: "tool_register",
        session: req.sessionId === "" ? "(global)" : redactSessionId(req.sessionId),
        worker: clip(req.workerId, 64),
        client,
        tools: names,
        error: error.rawMessage,
      },
    );
    for (const name of names) {
      core.audit.record({
        action: "register",
        sessionId: req.sessionId,
        tool: name,
        startedAt: core.now(),
        durationMs: 0,
        outcome,
        error: error.rawMessage,
        target: "remote",
        streaming: false,
        worker: clip(req.workerId, 64),
      });
    }
  };

  const applyShared = (list: readonly SharedTool[]) => {
    const byWorker = new Map<string, ToolInput[]>();
    for (const t of list) {
      let address: WorkerAddress;
      try {
        address = workerAddresses.check(t.address);
      } catch (error) {
        logger.warn("a tool registered on another replica is not allowed here; skipped", {
          tool: t.name,
          worker: t.workerId,
          error: ConnectError.from(error).rawMessage,
        });
        continue;
      }
      const group = byWorker.get(t.workerId) ?? [];
      group.push(fromSharedTool(t, address));
      byWorker.set(t.workerId, group);
    }
    // The replica that took the registration audited it.
    for (const [workerId, group] of byWorker) {
      tools.applyRemote(group, workerId, { audit: false });
      registeredAt(group);
    }
  };

  let unsubscribe: (() => void) | undefined;
  return {
    async register(req, authorize, client) {
      try {
        return await registerChecked(req, authorize, client);
      } catch (e) {
        const error = ConnectError.from(e);
        refused(req, error, client);
        throw error;
      }
    },
    async follow() {
      const shared = store.sharedTools;
      if (shared === undefined || unsubscribe !== undefined) return;
      unsubscribe = shared.subscribe(applyShared);
      applyShared(await shared.list());
    },
    close() {
      unsubscribe?.();
      unsubscribe = undefined;
    },
  };
}
