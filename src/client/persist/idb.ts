/**
 * IndexedDB persistence for a SessionContext, on `idb-keyval`: cached
 * variables survive page reloads and are shared by the tabs of an origin.
 *
 * @example
 * ```ts
 * import { createConnectTransport } from "@connectrpc/connect-web";
 * import { createSessionContext } from "unified-bridge";
 * import { idbPersistence } from "unified-bridge/persist/idb";
 *
 * const ctx = await createSessionContext({
 *   transport: createConnectTransport({ baseUrl: location.origin, useBinaryFormat: true }),
 *   sessionId: localStorage.getItem("session") ?? undefined,
 *   persistence: idbPersistence({ buster: "app-v3" }),
 * });
 * ctx.peek("temperature");   // the value of the last visit, possibly stale
 * await ctx.revalidated;     // one GetVariables call later: current
 * ```
 * @module
 */

import { Code, ConnectError } from "@connectrpc/connect";
import { clear, delMany, entries, promisifyRequest, setMany, type UseStore } from "idb-keyval";
import type { PersistenceAdapter } from "../persistence.js";

/** Options of {@link idbPersistence}. */
export interface IdbPersistenceOptions {
  /**
   * Stores written under another buster are discarded on first use. Change
   * it when cached values of older releases must not be shown (e.g. the app
   * version, or a hash of its variable schema).
   */
  readonly buster?: string;
  /** Database names are `<prefix>:<sessionId>` (default "unified-bridge"). */
  readonly prefix?: string;
  /**
   * The IndexedDB to use (default: the runtime's `indexedDB`, looked up on
   * first use). Tests pass fake-indexeddb's factory instead of patching globals.
   */
  readonly indexedDB?: IDBFactory;
}

/**
 * Bumped whenever the stored layout changes: a store written in another
 * format is discarded rather than misread.
 */
const FORMAT = 1;
const STORE_NAME = "variables";
const META_KEY = "meta";
/** Variables are keyed `v:<id>`, so no variable id can collide with the meta key. */
const VARIABLE_PREFIX = "v:";

interface Meta {
  readonly format: number;
  readonly buster: string;
}

/** One session's database, opened on first use. */
interface SessionStore {
  readonly use: UseStore;
  /** Resolves once the format and buster were checked (and the store discarded if stale). */
  readonly ready: Promise<void>;
  /** Closes the connection; the next use opens a new one. */
  close(): void;
}

/**
 * A {@link PersistenceAdapter} on IndexedDB: one database per session
 * (`unified-bridge:<sessionId>`), opened on first use, never at import or
 * creation. Failures (no IndexedDB in this runtime, private mode, quota)
 * reject with a `ConnectError` naming the database and what to do; a
 * SessionContext reports them as "persistence-degraded" and carries on in
 * memory.
 */
export function idbPersistence(options: IdbPersistenceOptions = {}): PersistenceAdapter {
  const buster = options.buster ?? "";
  const prefix = options.prefix ?? "unified-bridge";
  const stores = new Map<string, SessionStore>();

  const factory = (): IDBFactory => {
    const found = options.indexedDB ?? globalThis.indexedDB;
    // Typed as always present by the DOM lib; absent in Workers and Node.
    if (found === undefined) {
      throw new ConnectError(
        "IndexedDB is not available in this runtime: pass `indexedDB` to idbPersistence() or use another PersistenceAdapter",
        Code.Unimplemented,
      );
    }
    return found;
  };

  const storeOf = (sessionId: string): SessionStore => {
    let store = stores.get(sessionId);
    if (store === undefined) {
      store = openSessionStore(factory, `${prefix}:${sessionId}`, buster);
      const opened = store;
      // A failed open or check must not stick: the next call tries again.
      opened.ready.catch(() => {
        if (stores.get(sessionId) === opened) stores.delete(sessionId);
        opened.close();
      });
      stores.set(sessionId, store);
    }
    return store;
  };

  /** Runs one operation on a session's store, turning any failure into a ConnectError. */
  const run = async <T>(
    sessionId: string,
    action: string,
    op: (use: UseStore) => Promise<T>,
  ): Promise<T> => {
    try {
      const store = storeOf(sessionId);
      await store.ready;
      return await op(store.use);
    } catch (error) {
      throw storageError(`${prefix}:${sessionId}`, action, error);
    }
  };

  return {
    load: (sessionId) =>
      run(sessionId, "loading variables", async (use) => {
        const all = await entries<IDBValidKey, unknown>(use);
        const out: Uint8Array[] = [];
        for (const [key, value] of all) {
          if (isVariableKey(key) && value instanceof Uint8Array) out.push(value);
        }
        return out;
      }),

    save: (sessionId, saved) =>
      run(sessionId, `saving ${saved.length} variable(s)`, (use) =>
        setMany(
          saved.map((e): [IDBValidKey, Uint8Array] => [VARIABLE_PREFIX + e.id, compact(e.bytes)]),
          use,
        ),
      ),

    remove: (sessionId, ids) =>
      run(sessionId, `removing ${ids.length} variable(s)`, (use) =>
        delMany(
          ids.map((id) => VARIABLE_PREFIX + id),
          use,
        ),
      ),

    async clear(sessionId) {
      const name = `${prefix}:${sessionId}`;
      await run(sessionId, "clearing the store", (use) => clear(use));
      // The store is empty now; also drop the database so ended sessions do
      // not leave one empty database each behind.
      stores.get(sessionId)?.close();
      stores.delete(sessionId);
      try {
        await deleteDatabase(factory(), name);
      } catch (error) {
        throw storageError(name, "deleting the database", error);
      }
    },
  };
}

function openSessionStore(factory: () => IDBFactory, dbName: string, buster: string): SessionStore {
  let db: Promise<IDBDatabase> | undefined;
  const getDb = (): Promise<IDBDatabase> => {
    if (db !== undefined) return db;
    const request = factory().open(dbName);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE_NAME);
    const opened = promisifyRequest(request);
    db = opened;
    opened.then(
      (database) => {
        // The browser may close the connection (e.g. Safari on memory
        // pressure): reopen on next use.
        database.onclose = () => {
          if (db === opened) db = undefined;
        };
        // Another tab deleting the database (close({ cleanup: true })) must
        // not stay blocked by this connection.
        database.onversionchange = () => {
          database.close();
          if (db === opened) db = undefined;
        };
      },
      () => {
        if (db === opened) db = undefined;
      },
    );
    return opened;
  };

  // async: a synchronous throw of open() (private mode in some browsers,
  // no IndexedDB) becomes a rejection like every other failure.
  const use: UseStore = async (txMode, callback) => {
    const database = await getDb();
    return callback(database.transaction(STORE_NAME, txMode).objectStore(STORE_NAME));
  };

  return {
    use,
    ready: checkFormat(use, { format: FORMAT, buster }),
    close() {
      const current = db;
      db = undefined;
      current?.then(
        (database) => database.close(),
        () => undefined, // A failed open has nothing to close.
      );
    },
  };
}

/**
 * Compares the stored meta with ours and, in the same transaction, empties
 * the store when they differ: a tab can never read entries of another
 * format or buster between the check and the discard.
 */
function checkFormat(use: UseStore, meta: Meta): Promise<void> {
  return use("readwrite", (store) => {
    const stored = store.get(META_KEY);
    stored.onsuccess = () => {
      const found = stored.result as Partial<Meta> | undefined;
      if (found?.format === meta.format && found.buster === meta.buster) return;
      store.clear();
      store.put(meta, META_KEY);
    };
    return promisifyRequest(store.transaction);
  });
}

function deleteDatabase(factory: IDBFactory, name: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const request = factory.deleteDatabase(name);
    request.onsuccess = () => resolve();
    // Another connection that ignores "versionchange" holds it open; the
    // deletion completes when it closes, and the store is already empty.
    request.onblocked = () => resolve();
    request.onerror = () => reject(request.error);
  });
}

function isVariableKey(key: IDBValidKey): boolean {
  return typeof key === "string" && key.startsWith(VARIABLE_PREFIX);
}

/**
 * IndexedDB clones a typed array's whole buffer: store a view on a shared
 * buffer as its own copy.
 */
function compact(bytes: Uint8Array): Uint8Array {
  return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength
    ? bytes
    : bytes.slice();
}

/** A storage failure as a ConnectError with a code and a message a person can act on. */
function storageError(dbName: string, action: string, error: unknown): ConnectError {
  if (error instanceof ConnectError) return error;
  const name = typeof error === "object" && error !== null && "name" in error ? error.name : "";
  const detail = error instanceof Error ? error.message : String(error);
  if (name === "QuotaExceededError") {
    return new ConnectError(
      `IndexedDB '${dbName}': ${action} failed: the storage quota is exhausted (${detail}); free space or clear this site's data`,
      Code.ResourceExhausted,
      undefined,
      undefined,
      error,
    );
  }
  return new ConnectError(
    `IndexedDB '${dbName}': ${action} failed: ${detail || String(name)} (private browsing and disabled site storage refuse IndexedDB)`,
    Code.Unavailable,
    undefined,
    undefined,
    error,
  );
}
