/**
 * Remote tools shared by every node of a multi-node store: a worker's
 * registration on one bridge replica is checked once for all of them
 * (ownership and counts, atomically) and reaches every replica's registry.
 */
import type { AuditEntry, AuditFilter } from "./audit-trail.js";
import type { ToolParameter } from "./tool-definition.js";

/** A remote tool as nodes exchange it. */
export interface SharedTool {
  readonly name: string;
  readonly description: string;
  readonly parameters: readonly ToolParameter[];
  readonly metadata: Readonly<Record<string, string>>;
  readonly streaming: boolean;
  /** The session it belongs to, or undefined for a global tool. */
  readonly sessionId?: string;
  /** Epoch ms after which it is gone. */
  readonly expiresAt?: number;
  /** The worker's address, as checked at registration (`host:port`). */
  readonly address: string;
  readonly workerId: string;
  /** The client address the registration came from (see ToolTarget). */
  readonly registeredBy?: string;
}

/** Where a multi-node store keeps the remote tools of all its nodes. */
export interface SharedToolDirectory {
  /**
   * Records one worker's tools (all in one scope), all or none, atomically
   * across nodes.
   *
   * @throws ConnectError ALREADY_EXISTS (a name of another worker),
   *   RESOURCE_EXHAUSTED (over a count limit) or NOT_FOUND (the session is gone).
   */
  register(
    sessionId: string | undefined,
    tools: readonly SharedTool[],
    workerId: string,
    limits: { readonly maxTools: number; readonly maxToolsPerSession: number },
  ): Promise<void>;
  /** Every remote tool recorded now (a node loads them when it starts). */
  list(): Promise<SharedTool[]>;
  /** Calls `listener` with the tools other nodes register; returns the unsubscribe function. */
  subscribe(listener: (tools: readonly SharedTool[]) => void): () => void;
}

/** Where a multi-node store keeps the audit trail of all its nodes (bounded). */
export interface SharedAuditTrail {
  /** Appends an entry (in the background; a failure is logged, never thrown). */
  append(entry: AuditEntry): void;
  /** The most recent entries of every node matching `filter`, oldest first. */
  read(filter?: AuditFilter): Promise<AuditEntry[]>;
}
