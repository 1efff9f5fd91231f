import type { Variable } from "../gen/snakepit/bridge/bridge_pb.js";
import type { Emitter } from "./events.js";
import { decodeVariableBytes, encodeVariable, type PersistenceWriter } from "./persistence.js";
import type { SessionContextEvents } from "./session-events.js";
import type { TabChannel, TabMessage } from "./tab-channel.js";
import type { VariableCache } from "./variable-cache.js";
import { decodeVariable, type VariableSnapshot } from "./variable-snapshot.js";

/** Where a change came from: this context, the server's watch stream, another tab. */
export type ChangeOrigin = "local" | "server" | "tab";

/**
 * The context's local copy of the session: the cache, its persisted store
 * and the other tabs, kept in step. `accept` and `forget` are the only ways
 * a variable enters or leaves it, so every change reaches all three and is
 * announced once as a "change" event.
 */
export interface LocalCopy {
  readonly cache: VariableCache;
  /**
   * Stores a variable the server sent and returns what the cache now holds
   * (a newer version than `message` when one got there first).
   * `sameVersion` also accepts an equal version (pushed lock changes).
   */
  accept(message: Variable, origin: ChangeOrigin, sameVersion?: boolean): VariableSnapshot;
  /**
   * Stores a variable a write of this context made and returns the
   * snapshot of that write: its own version, even when the cache already
   * holds a newer one (another writer's, pushed first).
   */
  acceptWritten(message: Variable, origin?: ChangeOrigin): VariableSnapshot;
  /** Forgets a deleted variable (by id; `name` when the cache may not know it). */
  forget(id: string, name: string | undefined, origin: ChangeOrigin): void;
  /** Stops sharing with other tabs. */
  close(): void;
}

/** What {@link createLocalCopy} keeps in step. */
export interface LocalCopyParts {
  readonly cache: VariableCache;
  readonly persistence: PersistenceWriter | undefined;
  readonly events: Emitter<SessionContextEvents>;
  /** Opens the tab channel, or returns undefined for none. */
  readonly openTabs: (onMessage: (message: TabMessage) => void) => TabChannel | undefined;
}

/** Creates the local copy and starts listening to other tabs. */
export function createLocalCopy(parts: LocalCopyParts): LocalCopy {
  const { cache, persistence, events } = parts;

  const accept = (message: Variable, origin: ChangeOrigin, sameVersion = false) => {
    const decoded = decodeVariable(message);
    const outcome = cache.put(decoded, { sameVersion });
    if (outcome === "stored") {
      persistence?.put(decoded.snapshot.id, message);
      events.emit("change", { name: decoded.snapshot.name, snapshot: decoded.snapshot, origin });
    }
    // Share our own writes even when our watch push got here first: other
    // tabs may not watch, and they drop versions they already have.
    if (origin === "local") tabs?.post({ kind: "variable", bytes: encodeVariable(message) });
    return cache.peek(decoded.snapshot.id)?.variable.snapshot ?? decoded.snapshot;
  };

  const forget = (id: string, name: string | undefined, origin: ChangeOrigin) => {
    const entry = cache.remove(id);
    persistence?.remove(id);
    if (origin === "local") tabs?.post({ kind: "deleted", id });
    const gone = entry?.variable.snapshot.name ?? name;
    if (gone !== undefined) events.emit("change", { name: gone, snapshot: undefined, origin });
  };

  const tabs = parts.openTabs((message) => {
    if (message.kind === "variable") accept(decodeVariableBytes(message.bytes), "tab");
    else forget(message.id, undefined, "tab");
  });

  const acceptWritten = (message: Variable, origin: ChangeOrigin = "local") => {
    const held = accept(message, origin);
    return held.version === message.version ? held : decodeVariable(message).snapshot;
  };

  return { cache, accept, acceptWritten, forget, close: () => tabs?.close() };
}
