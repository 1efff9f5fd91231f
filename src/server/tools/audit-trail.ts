/** How a tool execution ended. */
export type ToolOutcome = "ok" | "error" | "denied" | "not_found" | "invalid_arguments";

/** One tool execution, as recorded by the audit trail. */
export interface AuditEntry {
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
}

/** A bounded, in-order record of tool executions. */
export interface AuditTrail {
  record(entry: AuditEntry): void;
  /** Entries, oldest first, optionally only those of one session. */
  entries(filter?: { sessionId?: string; tool?: string }): AuditEntry[];
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
