/**
 * An outbox in IndexedDB, for browsers: a SessionContext's writes survive
 * a reload, a tab closed and a bridge that is down, and exactly one tab of
 * the origin sends them (Web Locks). One database per session, named like
 * the persisted cache's by the SHA-256 of the session id.
 *
 * @example
 * ```ts
 * import { createSessionContext } from "unified-session-bridge";
 * import { idbOutbox, idbPersistence } from "unified-session-bridge/persist/idb";
 *
 * const ctx = await createSessionContext({
 *   transport,
 *   sessionId,
 *   persistence: idbPersistence(), // values shown offline
 *   outbox: idbOutbox(),           // writes kept offline
 * });
 * const write = ctx.enqueue("temperature", 0.9);
 * await write.stored;     // on disk: it will reach the bridge
 * await write.committed;  // the bridge applied it
 * ```
 * @module
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { clear, promisifyRequest, type UseStore } from "idb-keyval";
import {
  checkRoom,
  isOutboxMessage,
  memoryOutbox,
  type OutboxOptions,
  type OutboxRecord,
  type OutboxStore,
  outboxLimits,
} from "../outbox.js";
import { deleteDatabase, idbDatabaseName, storageError } from "./idb-database.js";

/** Options of {@link idbOutbox}. */
export interface IdbOutboxOptions extends OutboxOptions {
  /** Database names are `<prefix>:<SHA-256 of the session id, hex>` (default "unified-bridge-outbox"). */
  readonly prefix?: string;
  /** The IndexedDB to use (default: the runtime's `indexedDB`, looked up on first use). */
  readonly indexedDB?: IDBFactory;
  /**
   * The Web Locks to take the replay turn with (default: `navigator.locks`;
   * where the runtime has none, the turn is per page only).
   */
  readonly locks?: LockManager;
}

const STORE = "writes";

/** An {@link OutboxStore} on IndexedDB and Web Locks. */
export function idbOutbox(options: IdbOutboxOptions = {}): OutboxStore {
  const limits = outboxLimits(options);
  const prefix = options.prefix ?? "unified-bridge-outbox";
  const stores = new Map<string, { name: Promise<string>; use: UseStore; close(): void }>();
  // Where the runtime has no Web Locks, one page's contexts still take turns.
  const pageTurns = memoryOutbox(limits);

  const factory = (): IDBFactory => {
    const found = options.indexedDB ?? globalThis.indexedDB;
    if (found === undefined) {
      throw new ConnectError(
        "IndexedDB is not available in this runtime: use memoryOutbox() instead of idbOutbox()",
        Code.Unimplemented,
      );
    }
    return found;
  };

  const storeOf = (sessionId: string) => {
    let store = stores.get(sessionId);
    if (store === undefined) {
      const name = idbDatabaseName(sessionId, prefix);
      // One connection, opened on first use and closed whenever another
      // connection wants to delete the database (a cleanup in another tab),
      // so a deletion is never left waiting for it.
      let db: Promise<IDBDatabase> | undefined;
      const open = async () => {
        const request = factory().open(await name);
        request.onupgradeneeded = () => request.result.createObjectStore(STORE);
        const database = await promisifyRequest(request);
        database.onversionchange = () => {
          database.close();
          db = undefined;
        };
        database.onclose = () => {
          db = undefined;
        };
        return database;
      };
      store = {
        name,
        use: async (mode, callback) => {
          db ??= open();
          const opened = db;
          opened.catch(() => {
            if (db === opened) db = undefined;
          });
          const database = await opened;
          return callback(database.transaction(STORE, mode).objectStore(STORE));
        },
        close() {
          const current = db;
          db = undefined;
          current?.then(
            (database) => database.close(),
            () => undefined,
          );
        },
      };
      stores.set(sessionId, store);
    }
    return store;
  };

  const run = async <T>(sessionId: string, action: string, op: (use: UseStore) => Promise<T>) => {
    const store = storeOf(sessionId);
    try {
      return await op(store.use);
    } catch (error) {
      throw storageError(await store.name.catch(() => `${prefix}:…`), action, error);
    }
  };

  // The tabs of a session hear each other on one BroadcastChannel (none
  // where the runtime has no BroadcastChannel: then one tab is all there is).
  const channelName = async (sessionId: string) =>
    typeof BroadcastChannel === "undefined"
      ? undefined
      : `${await storeOf(sessionId).name.catch(() => "")}:tabs`;
  const senders = new Map<string, Promise<BroadcastChannel | undefined>>();
  const channelOf = (sessionId: string) => {
    let sender = senders.get(sessionId);
    if (sender === undefined) {
      sender = channelName(sessionId).then((name) =>
        name === undefined ? undefined : new BroadcastChannel(name),
      );
      senders.set(sessionId, sender);
    }
    return sender;
  };

  const locks = (): LockManager | undefined =>
    options.locks ?? (globalThis.navigator as Navigator | undefined)?.locks;

  return {
    limits,

    load: (sessionId) =>
      run(sessionId, "loading the outbox", (use) =>
        use("readonly", (store) => promisifyRequest(store.getAll())).then((all) =>
          (all as OutboxRecord[]).sort((a, b) =>
            a.order < b.order ? -1 : a.order > b.order ? 1 : 0,
          ),
        ),
      ),

    // The bounds are checked and the record stored in one transaction, so
    // tabs storing at once cannot pass the limits together.
    add: (sessionId, record) =>
      run(sessionId, `storing a write of '${record.name}'`, (use) =>
        use("readwrite", (store) => {
          let full: unknown;
          const all = store.getAll();
          all.onsuccess = () => {
            try {
              checkRoom(all.result as OutboxRecord[], record, limits);
              store.put(record, record.key);
            } catch (error) {
              full = error;
              store.transaction.abort();
            }
          };
          return promisifyRequest(store.transaction).catch((error: unknown) => {
            throw full ?? error;
          });
        }),
      ),

    update: (sessionId, remove, put) =>
      run(sessionId, "updating the outbox", (use) =>
        use("readwrite", (store) => {
          for (const key of remove) store.delete(key);
          for (const record of put) store.put(record, record.key);
          return promisifyRequest(store.transaction);
        }),
      ),

    async exclusive(sessionId, fn) {
      const manager = locks();
      if (manager === undefined) return pageTurns.exclusive(sessionId, fn);
      const name = `${await storeOf(sessionId).name}:replay`;
      return manager.request(name, () => fn()) as Promise<Awaited<ReturnType<typeof fn>>>;
    },

    publish(sessionId, message) {
      void channelOf(sessionId).then((channel) => channel?.postMessage(message));
    },

    listen(sessionId, listener) {
      let closed = false;
      let channel: BroadcastChannel | undefined;
      void channelName(sessionId).then((name) => {
        if (closed || name === undefined) return;
        channel = new BroadcastChannel(name);
        channel.onmessage = (event: MessageEvent<unknown>) => {
          if (isOutboxMessage(event.data)) listener(event.data);
        };
      });
      return () => {
        closed = true;
        channel?.close();
      };
    },

    async clear(sessionId) {
      const store = storeOf(sessionId);
      const { name } = store;
      await run(sessionId, "clearing the outbox", (use) => clear(use));
      // Our own connection would hold the deletion up.
      store.close();
      stores.delete(sessionId);
      const dbName = await name;
      try {
        await deleteDatabase(factory(), dbName);
      } catch (error) {
        throw storageError(dbName, "deleting the outbox database", error);
      }
    },
  };
}
