import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { type Variable, VariableSchema } from "../gen/snakepit/bridge/bridge_pb.js";
import type { TimerProvider } from "./timers.js";

/**
 * Where a SessionContext keeps its cache between page loads. Entries are
 * wire `Variable` messages in binary form, so what is restored is exactly
 * what the server sent (binary embeddings included). Implementations open
 * their storage on first use, never at import.
 */
export interface PersistenceAdapter {
  /** Every persisted variable of the session (empty when none or discarded). */
  load(sessionId: string): Promise<Uint8Array[]>;
  /** Stores or replaces variables, by id. */
  save(sessionId: string, entries: readonly { id: string; bytes: Uint8Array }[]): Promise<void>;
  /** Forgets variables by id. */
  remove(sessionId: string, ids: readonly string[]): Promise<void>;
  /** Forgets the session's whole store. */
  clear(sessionId: string): Promise<void>;
}

/** Encodes a variable for persistence or tab sharing. */
export function encodeVariable(message: Variable): Uint8Array {
  return toBinary(VariableSchema, message);
}

/** Decodes what {@link encodeVariable} produced. */
export function decodeVariableBytes(bytes: Uint8Array): Variable {
  return fromBinary(VariableSchema, bytes);
}

/**
 * Coalesces cache changes into batched writes, off the caller's path: a
 * write to the server never waits for storage. The first storage failure
 * turns persistence off (memory only) and is reported once.
 */
export interface PersistenceWriter {
  put(id: string, message: Variable): void;
  remove(id: string): void;
  /** Writes what is pending now. */
  flush(): Promise<void>;
  /** Turns persistence off after a failure elsewhere (e.g. loading). */
  degrade(): void;
  /** Drops pending writes and ignores later ones (the context is closing). */
  stop(): void;
  readonly degraded: boolean;
}

/** Creates a writer over an adapter. */
export function createPersistenceWriter(
  adapter: PersistenceAdapter,
  sessionId: string,
  timers: TimerProvider,
  onDegraded: (error: unknown) => void,
): PersistenceWriter {
  const puts = new Map<string, Variable>();
  const removes = new Set<string>();
  let scheduled = false;
  let degraded = false;
  let chain: Promise<void> = Promise.resolve();

  const write = async () => {
    scheduled = false;
    if (degraded || (puts.size === 0 && removes.size === 0)) return;
    const entries = [...puts].map(([id, message]) => ({ id, bytes: encodeVariable(message) }));
    const gone = [...removes];
    puts.clear();
    removes.clear();
    try {
      if (entries.length > 0) await adapter.save(sessionId, entries);
      if (gone.length > 0) await adapter.remove(sessionId, gone);
    } catch (error) {
      degraded = true;
      onDegraded(error);
    }
  };

  const schedule = () => {
    if (scheduled || degraded) return;
    scheduled = true;
    timers.setTimeout(() => {
      chain = chain.then(write);
    }, 0);
  };

  return {
    put(id, message) {
      removes.delete(id);
      puts.set(id, message);
      schedule();
    },
    remove(id) {
      puts.delete(id);
      removes.add(id);
      schedule();
    },
    async flush() {
      chain = chain.then(write);
      await chain;
    },
    degrade() {
      degraded = true;
    },
    stop() {
      degraded = true;
      puts.clear();
      removes.clear();
    },
    get degraded() {
      return degraded;
    },
  };
}
