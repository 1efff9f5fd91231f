/**
 * IndexedDB persistence for a SessionContext, on `idb-keyval`: cached
 * variables survive page reloads and are shared by the tabs of an origin.
 * A session id is a bearer secret, so databases are named by its SHA-256
 * (anything that can list an origin's databases must not learn it), and
 * databases nobody has touched for `sweepAfterMs` are deleted: sessions
 * that expired on the server leave nothing behind for long.
 *
 * @example
 * ```ts
 * import { createConnectTransport } from "@connectrpc/connect-web";
 * import { createSessionContext } from "unified-session-bridge";
 * import { idbPersistence } from "unified-session-bridge/persist/idb";
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
import { clear, delMany, entries, promisifyRequest, type UseStore } from "idb-keyval";
import type { PersistenceAdapter } from "../persistence.js";
import {
  deleteDatabase,
  FORMAT,
  idbDatabaseName,
  META_KEY,
  type Meta,
  openDatabase,
  STORE_NAME,
  storageError,
  sweepDatabases,
} from "./idb-database.js";

export { idbDatabaseName } from "./idb-database.js";
export { type IdbOutboxOptions, idbOutbox } from "./idb-outbox.js";

/** Options of {@link idbPersistence}. */
export interface IdbPersistenceOptions {
  /**
   * Stores written under another buster are discarded on first use. Change
   * it when cached values of older releases must not be shown (e.g. the app
   * version, or a hash of its variable schema).
   */
  readonly buster?: string;
  /**
   * Database names are `<prefix>:<SHA-256 of the session id, hex>`
   * (default "unified-bridge").
   */
  readonly prefix?: string;
  /**
   * A database untouched (no open, no save) for this long (ms, default 7
   * days) is deleted by the sweep that runs on this adapter's first use
   * (and by {@link IdbPersistence.sweep}). A session idle that long has
   * expired on any bridge with a shorter TTL (the default is 30 minutes);
   * a swept store of a live session only costs it one revalidation.
   */
  readonly sweepAfterMs?: number;
  /**
   * The IndexedDB to use (default: the runtime's `indexedDB`, looked up on
   * first use). Tests pass fake-indexeddb's factory instead of patching globals.
   */
  readonly indexedDB?: IDBFactory;
}

const DEFAULT_SWEEP_AFTER_MS = 7 * 24 * 60 * 60 * 1000;
/** Variables are keyed `v:<id>`, so no variable id can collide with the meta key. */
const VARIABLE_PREFIX = "v:";

/** IndexedDB persistence, with its sweep of stores of expired sessions. */
export interface IdbPersistence extends PersistenceAdapter {
  /**
   * Deletes this origin's databases (of this prefix) untouched for
   * `sweepAfterMs`, except those this adapter has open; resolves with how
   * many. Runs by itself once, on the adapter's first use. Where the
   * runtime cannot list databases (`indexedDB.databases`), it does nothing.
   */
  sweep(): Promise<number>;
}

/** One session's database, opened on first use. */
interface SessionStore {
  readonly name: Promise<string>;
  readonly use: UseStore;
  /** Resolves once the format and buster were checked (and the store discarded if stale). */
  readonly ready: Promise<void>;
  /** Closes the connection; the next use opens a new one. */
  close(): void;
}

/**
 * A {@link PersistenceAdapter} on IndexedDB: one database per session
 * (see {@link idbDatabaseName}), opened on first use, never at import or
 * creation. Failures (no IndexedDB in this runtime, private mode, quota)
 * reject with a `ConnectError` naming the database and what to do; a
 * SessionContext reports them as "persistence-degraded" and carries on in
 * memory.
 */
export function idbPersistence(options: IdbPersistenceOptions = {}): IdbPersistence {
  const buster = options.buster ?? "";
  const prefix = options.prefix ?? "unified-bridge";
  const sweepAfterMs = options.sweepAfterMs ?? DEFAULT_SWEEP_AFTER_MS;
  const stores = new Map<string, SessionStore>();
  let swept = false;

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
      store = openSessionStore(factory, idbDatabaseName(sessionId, prefix), buster);
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

  const sweep = async (): Promise<number> => {
    const inUse = new Set(
      await Promise.all([...stores.values()].map((s) => s.name.catch(() => ""))),
    );
    return sweepDatabases(factory(), prefix, inUse, Date.now() - sweepAfterMs);
  };

  /** Runs one operation on a session's store, turning any failure into a ConnectError. */
  const run = async <T>(
    sessionId: string,
    action: string,
    op: (use: UseStore) => Promise<T>,
  ): Promise<T> => {
    const store = storeOf(sessionId);
    try {
      await store.ready;
      return await op(store.use);
    } catch (error) {
      throw storageError(await store.name.catch(() => `${prefix}:…`), action, error);
    } finally {
      if (!swept) {
        swept = true;
        // Off the caller's path. A failed sweep costs only space, and the
        // next adapter (the next page load) sweeps again.
        sweep().catch(() => undefined);
      }
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

    // The entries and a fresh `touchedAt` in one transaction: a store in
    // use is never the sweep's.
    save: (sessionId, saved) =>
      run(sessionId, `saving ${saved.length} variable(s)`, (use) =>
        use("readwrite", (store) => {
          for (const e of saved) store.put(compact(e.bytes), VARIABLE_PREFIX + e.id);
          store.put({ format: FORMAT, buster, touchedAt: Date.now() } satisfies Meta, META_KEY);
          return promisifyRequest(store.transaction);
        }),
      ),

    remove: (sessionId, ids) =>
      run(sessionId, `removing ${ids.length} variable(s)`, (use) =>
        delMany(
          ids.map((id) => VARIABLE_PREFIX + id),
          use,
        ),
      ),

    async clear(sessionId) {
      const name = await storeOf(sessionId).name;
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

    sweep,
  };
}

function openSessionStore(
  factory: () => IDBFactory,
  dbName: Promise<string>,
  buster: string,
): SessionStore {
  let db: Promise<IDBDatabase> | undefined;
  const getDb = (): Promise<IDBDatabase> => {
    if (db !== undefined) return db;
    db = dbName.then((name) => openDatabase(factory(), name));
    const opened = db;
    opened.then(
      (database) => {
        // The browser may close the connection (e.g. Safari on memory
        // pressure): reopen on next use.
        database.onclose = () => {
          if (db === opened) db = undefined;
        };
        // Another tab deleting the database (close({ cleanup: true }), a
        // sweep) must not stay blocked by this connection.
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
    name: dbName,
    use,
    ready: checkFormat(use, { format: FORMAT, buster, touchedAt: Date.now() }),
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
      if (found?.format !== meta.format || found.buster !== meta.buster) store.clear();
      // Opening touches the store: the sweep leaves it alone.
      store.put(meta, META_KEY);
    };
    return promisifyRequest(store.transaction);
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
