import { Code, ConnectError } from "@connectrpc/connect";
import { utf8Length } from "../../values/utf8-length.js";
import { quote } from "../common/message-text.js";
import { byName } from "../common/order.js";
import { defaultLimits, type Limits } from "../limits/limits.js";
import type { AuditTrail, ToolOutcome } from "./audit-trail.js";
import { hasType, PARAMETER_TYPES } from "./tool-arguments.js";
import type { ToolDefinition, ToolParameter } from "./tool-definition.js";
import type { PoolToolRunner } from "./tool-run.js";
import type { WorkerAddress } from "./worker-address.js";

const TOOL_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** Where a registered tool runs. */
export type ToolTarget =
  | { readonly kind: "local"; readonly definition: ToolDefinition }
  /** A tool of the bridge's Python worker pool: registered as local, so reserved like one. */
  | { readonly kind: "pool"; readonly runner: PoolToolRunner }
  | {
      readonly kind: "remote";
      readonly address: WorkerAddress;
      readonly workerId: string;
      /**
       * The client address (`clientOf`) the registration came from; unknown
       * for registrations recorded before it was kept.
       */
      readonly registeredBy?: string;
    };

/** A tool as the registry holds it. */
export interface RegisteredTool {
  readonly id: string;
  readonly name: string;
  readonly description: string;
  readonly parameters: readonly ToolParameter[];
  readonly metadata: Readonly<Record<string, string>>;
  readonly requiredVariables: readonly string[];
  readonly streaming: boolean;
  /** The session it belongs to, or undefined for a global tool. */
  readonly sessionId: string | undefined;
  /** Epoch ms after which the tool is gone. */
  readonly expiresAt: number | undefined;
  readonly target: ToolTarget;
  /** "local" (built-in or embedder code) or "worker:<id>" (the registering worker). */
  readonly owner: string;
}

/** A tool to register, without what the registry assigns. */
export type ToolInput = Omit<RegisteredTool, "id" | "owner">;

/** Global and session-scoped tools, with owners. */
export interface ToolRegistry {
  /**
   * Registers (or replaces) a built-in or embedder tool; returns its id.
   * Local code is the operator's: it may replace any tool of its scope.
   */
  registerLocal(tool: ToolInput): string;
  /**
   * Registers a worker's remote tools, all or none; returns their ids by
   * name. Successful registrations (and later removals) are audited;
   * refusals are for the caller to audit. A name held by local code, or by another worker, in the same
   * scope (or globally, for a session-scoped registration) is refused with
   * ALREADY_EXISTS; the worker's own tools are replaced. While a worker_id
   * holds tools, a registration under it must come from the same client
   * address and send calls to an address its tools already use, or it is
   * refused with PERMISSION_DENIED: claiming another worker's id cannot
   * redirect its calls. Sizes and counts
   * beyond the limits are refused with INVALID_ARGUMENT or
   * RESOURCE_EXHAUSTED.
   */
  registerRemote(tools: readonly ToolInput[], workerId: string): Record<string, string>;
  /** The checks of {@link registerRemote}, without registering anything. */
  checkRemote(tools: readonly ToolInput[], workerId: string): void;
  /**
   * Registers a worker's remote tools without checks: for registrations
   * another node has checked already (through a shared directory).
   */
  applyRemote(
    tools: readonly ToolInput[],
    workerId: string,
    options?: { readonly audit?: boolean },
  ): Record<string, string>;
  /**
   * The tool a session sees under a name: its own first, then global. A
   * withdrawn tool is found too, so a call can say its worker is gone.
   */
  lookup(sessionId: string, name: string): RegisteredTool | undefined;
  /**
   * Every tool a session sees, session-scoped ones shadowing global ones;
   * the tools of withdrawn workers are left out.
   */
  list(sessionId: string): RegisteredTool[];
  /**
   * The tools a session may call: those of {@link list} its allowlist names
   * (all, for an empty allowlist), ordered by name in code point order.
   */
  visible(sessionId: string, allowed: readonly string[]): RegisteredTool[];
  /** Removes a session's tools; returns how many. */
  dropSession(sessionId: string): number;
  /** Removes a global local tool. */
  unregisterLocal(name: string): boolean;
  /** Remote tools held, global and session-scoped. */
  readonly remoteCount: number;
  /** The live remote tools held now, grouped by worker address (`display`). */
  remoteByAddress(): Map<string, RemoteGroup>;
  /**
   * Withdraws (or restores) the tools served at a worker address (`display`):
   * withdrawn ones stay registered, keep their names and count against the
   * limits, but are not listed; see {@link isWithdrawn}.
   */
  setWithdrawn(address: string, withdrawn: boolean): void;
  /** Whether a tool's worker is withdrawn (never for a local tool). */
  isWithdrawn(tool: RegisteredTool): boolean;
}

/** The remote tools served at one worker address. */
export interface RemoteGroup {
  readonly address: WorkerAddress;
  readonly tools: readonly RegisteredTool[];
}

/** Options of {@link createToolRegistry}. */
export interface ToolRegistryOptions {
  readonly now?: () => number;
  readonly limits?: Pick<Limits, "maxTools" | "maxToolsPerSession" | "maxToolBytes">;
  /** Registrations and removals are recorded here. */
  readonly audit?: AuditTrail;
}

/** Creates an empty registry. */
export function createToolRegistry(options: ToolRegistryOptions = {}): ToolRegistry {
  const now = options.now ?? Date.now;
  const limits = options.limits ?? defaultLimits;
  const global = new Map<string, RegisteredTool>();
  const scoped = new Map<string, Map<string, RegisteredTool>>();
  let remoteCount = 0;
  // Worker addresses (display) whose tools are withdrawn.
  const withdrawn = new Set<string>();

  const record = (
    action: "register" | "remove",
    tool: Pick<RegisteredTool, "name" | "sessionId" | "target">,
    outcome: ToolOutcome,
    error?: string,
  ) => {
    options.audit?.record({
      action,
      sessionId: tool.sessionId ?? "",
      tool: tool.name,
      startedAt: now(),
      durationMs: 0,
      outcome,
      ...(error === undefined ? {} : { error }),
      target:
        tool.target.kind === "remote" ? `remote:${tool.target.address.display}` : tool.target.kind,
      streaming: false,
      ...(tool.target.kind === "remote" ? { worker: tool.target.workerId } : {}),
    });
  };

  const alive = (tool: RegisteredTool | undefined): tool is RegisteredTool =>
    tool !== undefined && (tool.expiresAt === undefined || tool.expiresAt > now());

  /** Drops a tool from its map, keeping the remote count and the audit trail. */
  const drop = (map: Map<string, RegisteredTool>, tool: RegisteredTool, why: string) => {
    if (map.get(tool.name) !== tool) return;
    map.delete(tool.name);
    if (tool.target.kind === "remote") remoteCount--;
    record("remove", tool, "ok", why);
  };

  const mapFor = (sessionId: string | undefined, create: boolean) => {
    if (sessionId === undefined) return global;
    let tools = scoped.get(sessionId);
    if (tools === undefined && create) {
      tools = new Map();
      scoped.set(sessionId, tools);
    }
    return tools;
  };

  const put = (tool: ToolInput, owner: string, audited = true): string => {
    const id =
      tool.sessionId === undefined ? `tool:global:${tool.name}` : `tool:session:${tool.name}`;
    const map = mapFor(tool.sessionId, true) as Map<string, RegisteredTool>;
    const previous = map.get(tool.name);
    if (previous?.target.kind === "remote") remoteCount--;
    const registered: RegisteredTool = { ...tool, id, owner };
    map.set(tool.name, registered);
    if (registered.target.kind === "remote") remoteCount++;
    if (audited) record("register", registered, "ok");
    return id;
  };

  /** The live tool of a scope under a name, dropping an expired one. */
  const current = (sessionId: string | undefined, name: string): RegisteredTool | undefined => {
    const map = mapFor(sessionId, false);
    const tool = map?.get(name);
    if (tool === undefined || map === undefined) return undefined;
    if (alive(tool)) return tool;
    drop(map, tool, "expired");
    return undefined;
  };

  /**
   * The worker_id's claim, from the tools it holds now: the addresses they
   * are served at and the client addresses that registered them. A worker_id
   * is only a name any worker can send; what ties it to one worker is where
   * its calls go and where it registers from. Stock snakepit workers send no
   * credential of their own, so these are what a check can rest on.
   */
  const checkClaim = (workerId: string, tools: readonly ToolInput[]) => {
    const owner = `worker:${workerId}`;
    const addresses = new Set<string>();
    const peers = new Set<string>();
    const note = (tool: RegisteredTool) => {
      if (tool.owner !== owner || tool.target.kind !== "remote" || !alive(tool)) return;
      addresses.add(tool.target.address.display);
      if (tool.target.registeredBy !== undefined) peers.add(tool.target.registeredBy);
    };
    for (const tool of global.values()) note(tool);
    for (const map of scoped.values()) for (const tool of map.values()) note(tool);
    if (addresses.size === 0) return;
    for (const tool of tools) {
      if (tool.target.kind !== "remote") continue;
      const from = tool.target.registeredBy;
      if (peers.size > 0 && (from === undefined || !peers.has(from))) {
        throw new ConnectError(
          `worker_id '${workerId}' holds tools registered from another address; only that worker may register under it: use a worker_id of your own`,
          Code.PermissionDenied,
        );
      }
      if (!addresses.has(tool.target.address.display)) {
        throw new ConnectError(
          `worker_id '${workerId}' holds tools served at another worker_address; a worker replaces its tools at the address it serves them: use a worker_id of your own, or let the old tools expire first`,
          Code.PermissionDenied,
        );
      }
    }
  };

  const registry: ToolRegistry = {
    get remoteCount() {
      return remoteCount;
    },

    registerLocal(tool) {
      checkToolName(tool.name);
      for (const p of tool.parameters) checkParameter(tool.name, p);
      return put(tool, "local");
    },

    registerRemote(tools, workerId) {
      registry.checkRemote(tools, workerId);
      return registry.applyRemote(tools, workerId);
    },

    applyRemote(tools, workerId, applyOptions = {}) {
      const ids: Record<string, string> = {};
      for (const tool of tools) {
        ids[tool.name] = put(tool, `worker:${workerId}`, applyOptions.audit ?? true);
      }
      return ids;
    },

    checkRemote(tools, workerId) {
      const owner = `worker:${workerId}`;
      // Refusals (thrown) are audited by the caller, which sees every reason.
      checkClaim(workerId, tools);
      let added = 0;
      const perSession = new Map<string, number>();
      const names = new Set<string>();
      for (const tool of tools) {
        checkToolName(tool.name);
        for (const p of tool.parameters) checkParameter(tool.name, p);
        const key = `${tool.sessionId ?? ""}\u0000${tool.name}`;
        if (names.has(key)) {
          throw new ConnectError(
            `tool '${tool.name}' is registered twice in one request`,
            Code.InvalidArgument,
          );
        }
        names.add(key);
        const size = toolBytes(tool);
        if (size > limits.maxToolBytes) {
          throw new ConnectError(
            `tool '${tool.name}' is ${size} bytes (name, description, parameters, metadata); the limit is ${limits.maxToolBytes} (--max-tool-bytes)`,
            Code.InvalidArgument,
          );
        }
        const holder = [current(tool.sessionId, tool.name), current(undefined, tool.name)].find(
          (t) => t !== undefined && t.owner !== owner,
        );
        if (holder !== undefined) {
          throw new ConnectError(
            holder.owner === "local"
              ? `tool name '${tool.name}' is taken by a tool of the bridge itself; choose another name`
              : `tool name '${tool.name}' is registered by another worker; choose another name`,
            Code.AlreadyExists,
          );
        }
        if (current(tool.sessionId, tool.name) === undefined) {
          added++;
          if (tool.sessionId !== undefined) {
            perSession.set(tool.sessionId, (perSession.get(tool.sessionId) ?? 0) + 1);
          }
        }
      }
      if (remoteCount + added > limits.maxTools) {
        throw new ConnectError(
          `the bridge holds ${remoteCount} remote tools; ${added} more would exceed the limit of ${limits.maxTools} (--max-tools)`,
          Code.ResourceExhausted,
        );
      }
      for (const [sessionId, n] of perSession) {
        const held = scoped.get(sessionId)?.size ?? 0;
        if (held + n > limits.maxToolsPerSession) {
          throw new ConnectError(
            `the session holds ${held} tools; ${n} more would exceed the limit of ${limits.maxToolsPerSession} (--max-tools-per-session)`,
            Code.ResourceExhausted,
          );
        }
      }
    },

    lookup(sessionId, name) {
      return current(sessionId, name) ?? current(undefined, name);
    },

    list(sessionId) {
      const seen = new Map<string, RegisteredTool>();
      for (const tool of [...global.values()]) {
        if (alive(tool)) seen.set(tool.name, tool);
        else drop(global, tool, "expired");
      }
      const tools = scoped.get(sessionId);
      if (tools !== undefined) {
        for (const tool of [...tools.values()]) {
          if (alive(tool)) seen.set(tool.name, tool);
          else drop(tools, tool, "expired");
        }
      }
      // After shadowing: a session's withdrawn tool hides a global one of its
      // name, as it would on a call.
      return [...seen.values()].filter((t) => !registry.isWithdrawn(t));
    },

    visible(sessionId, allowed) {
      return registry
        .list(sessionId)
        .filter((t) => allowed.length === 0 || allowed.includes(t.name))
        .sort(byName);
    },

    dropSession(sessionId) {
      const tools = scoped.get(sessionId);
      if (tools === undefined) return 0;
      const count = tools.size;
      for (const tool of [...tools.values()]) drop(tools, tool, "session ended");
      scoped.delete(sessionId);
      return count;
    },

    remoteByAddress() {
      const groups = new Map<string, { address: WorkerAddress; tools: RegisteredTool[] }>();
      const note = (tool: RegisteredTool) => {
        if (tool.target.kind !== "remote" || !alive(tool)) return;
        const key = tool.target.address.display;
        const group = groups.get(key);
        if (group === undefined) groups.set(key, { address: tool.target.address, tools: [tool] });
        else group.tools.push(tool);
      };
      for (const tool of global.values()) note(tool);
      for (const map of scoped.values()) for (const tool of map.values()) note(tool);
      return groups;
    },

    setWithdrawn(address, value) {
      if (value) withdrawn.add(address);
      else withdrawn.delete(address);
    },

    isWithdrawn(tool) {
      return tool.target.kind === "remote" && withdrawn.has(tool.target.address.display);
    },

    unregisterLocal(name) {
      const tool = global.get(name);
      if (tool === undefined) return false;
      drop(global, tool, "unregistered");
      return true;
    },
  };
  return registry;
}

/** The bytes a tool adds to every tool listing it appears in. */
function toolBytes(tool: ToolInput): number {
  let n = utf8Length(tool.name) + utf8Length(tool.description);
  for (const p of tool.parameters) {
    n += utf8Length(p.name) + utf8Length(p.type) + utf8Length(p.description ?? "");
    if (p.default !== undefined) n += utf8Length(JSON.stringify(p.default));
  }
  for (const [k, v] of Object.entries(tool.metadata)) n += utf8Length(k) + utf8Length(v);
  return n;
}

/** Tool names: `^[A-Za-z0-9][A-Za-z0-9_.-]*$`, at most 64 characters. */
export function checkToolName(name: string): void {
  if (name.length === 0 || name.length > 64 || !TOOL_NAME.test(name)) {
    throw new ConnectError(
      `tool name ${quote(name)} is invalid: use 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit`,
      Code.InvalidArgument,
    );
  }
}

function checkParameter(tool: string, p: ToolParameter): void {
  if (!PARAMETER_TYPES.includes(p.type)) {
    throw new ConnectError(
      `tool '${tool}': parameter '${p.name}' has unknown type '${p.type}': expected one of ${PARAMETER_TYPES.join(", ")}`,
      Code.InvalidArgument,
    );
  }
  if (p.default !== undefined && !hasType(p.default, p.type)) {
    throw new ConnectError(
      `tool '${tool}': the default of parameter '${p.name}' is not of type ${p.type}`,
      Code.InvalidArgument,
    );
  }
}
