/** How a tool execution, registration or removal ended. */
export type ToolOutcome =
  | "ok"
  | "error"
  | "denied"
  | "not_found"
  | "invalid_arguments"
  | "already_exists"
  | "resource_exhausted";

/** What an audit entry records. */
export type AuditAction = "execute" | "register" | "remove";

/** One tool execution, registration or removal, as recorded by the audit trail. */
export interface AuditEntry {
  readonly action: AuditAction;
  /** The session, or "" for a global tool's registration or removal. */
  readonly sessionId: string;
  readonly tool: string;
  /** Epoch milliseconds when the execution started. */
  readonly startedAt: number;
  readonly durationMs: number;
  readonly outcome: ToolOutcome;
  /** The error message for any outcome but "ok". */
  readonly error?: string;
  /** "local", or "remote:<worker address>" for forwarded calls. */
  readonly target: string;
  readonly streaming: boolean;
  /** The registering worker's id, for remote tools' registrations and removals. */
  readonly worker?: string;
  /** An execution's correlation id (x-snakepit-correlation-id), sent to its worker too. */
  readonly correlationId?: string;
  /**
   * For executions: the identity the caller acted for (the subject of the
   * identity JWT that created the session, carried by its tokens).
   */
  readonly subject?: string;
}

/** Which entries {@link AuditTrail.entries} returns. */
export interface AuditFilter {
  readonly sessionId?: string;
  readonly tool?: string;
  readonly action?: AuditAction;
}

/** A bounded, in-order record of tool executions. */
export interface AuditTrail {
  record(entry: AuditEntry): void;
  /** Entries, oldest first, optionally only those of one session, tool or action. */
  entries(filter?: AuditFilter): AuditEntry[];
  /** Subscribes to new entries; returns the unsubscribe function. */
  subscribe(listener: (entry: AuditEntry) => void): () => void;
}

/**
 * Creates an audit trail keeping the last `capacity` entries in a ring
 * buffer, so a busy server's memory stays flat.
 */
export function createAuditTrail(capacity = 10_000): AuditTrail {
  const ring: (AuditEntry | undefined)[] = new Array(capacity);
  let next = 0;
  let count = 0;
  const listeners = new Set<(entry: AuditEntry) => void>();
  return {
    record(entry) {
      ring[next] = entry;
      next = (next + 1) % capacity;
      count = Math.min(count + 1, capacity);
      for (const listener of listeners) listener(entry);
    },
    entries(filter = {}) {
      const out: AuditEntry[] = [];
      for (let i = 0; i < count; i++) {
        const entry = ring[(next - count + i + capacity) % capacity];
        if (entry === undefined) continue;
        if (filter.sessionId !== undefined && entry.sessionId !== filter.sessionId) continue;
        if (filter.tool !== undefined && entry.tool !== filter.tool) continue;
        if (filter.action !== undefined && entry.action !== filter.action) continue;
        out.push(entry);
      }
      return out;
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => {
        listeners.delete(listener);
      };
    },
  };
}
