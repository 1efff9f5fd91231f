/**
 * The IndexedDB side of `idbPersistence`: database names, the stored
 * layout, opening, deleting and sweeping databases, and storage errors.
 * @module
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { promisifyRequest } from "idb-keyval";

/**
 * Bumped whenever the stored layout changes: a store written in another
 * format is discarded rather than misread. 2: meta has `touchedAt`.
 */
export const FORMAT = 2;
/** The one object store of a session's database. */
export const STORE_NAME = "variables";
/** The key of the store's {@link Meta} record. */
export const META_KEY = "meta";

/** What a store records about itself. */
export interface Meta {
  readonly format: number;
  readonly buster: string;
  /** When the store was last opened or written (epoch ms), for the sweep. */
  readonly touchedAt: number;
}

/**
 * The name of a session's database: `<prefix>:` and the SHA-256 of the
 * session id in hex, so the name does not reveal the id. Needs WebCrypto
 * (`crypto.subtle`), which browsers offer in secure contexts (https,
 * localhost), and which workerd and Node have.
 */
export async function idbDatabaseName(
  sessionId: string,
  prefix = "unified-bridge",
): Promise<string> {
  const subtle = globalThis.crypto?.subtle as SubtleCrypto | undefined;
  if (subtle === undefined) {
    throw new ConnectError(
      "IndexedDB persistence names databases by a SHA-256 of the session id and needs WebCrypto (crypto.subtle), which browsers offer only in secure contexts: serve the page over https (or from localhost)",
      Code.Unimplemented,
    );
  }
  const digest = new Uint8Array(
    await subtle.digest("SHA-256", new TextEncoder().encode(sessionId)),
  );
  let hex = "";
  for (const byte of digest) hex += byte.toString(16).padStart(2, "0");
  return `${prefix}:${hex}`;
}

/** Opens (creating when missing) a session's database. */
export function openDatabase(factory: IDBFactory, name: string): Promise<IDBDatabase> {
  const request = factory.open(name);
  request.onupgradeneeded = () => request.result.createObjectStore(STORE_NAME);
  return promisifyRequest(request);
}

/**
 * Whether a database of ours may go: its meta is of another format (an
 * older release) or older than `cutoff`. One with no meta yet is being
 * created by another tab and stays; one gone since it was listed is not
 * created again.
 */
async function isStale(factory: IDBFactory, name: string, cutoff: number): Promise<boolean> {
  const request = factory.open(name);
  request.onupgradeneeded = () => request.transaction?.abort();
  let database: IDBDatabase;
  try {
    database = await promisifyRequest(request);
  } catch {
    return false; // Gone (the upgrade was aborted above) or unreadable: leave it.
  }
  try {
    if (!database.objectStoreNames.contains(STORE_NAME)) return false;
    const meta = (await promisifyRequest(
      database.transaction(STORE_NAME).objectStore(STORE_NAME).get(META_KEY),
    )) as Partial<Meta> | undefined;
    if (meta === undefined) return false;
    return meta.format !== FORMAT || typeof meta.touchedAt !== "number" || meta.touchedAt < cutoff;
  } finally {
    database.close();
  }
}

/**
 * Deletes the databases named `<prefix>:…` that are stale (see
 * {@link isStale}), but those in `inUse`; returns how many. Where the
 * runtime cannot list databases (`indexedDB.databases`), it does nothing.
 */
export async function sweepDatabases(
  factory: IDBFactory,
  prefix: string,
  inUse: ReadonlySet<string>,
  cutoff: number,
): Promise<number> {
  if (typeof factory.databases !== "function") return 0;
  let removed = 0;
  for (const { name } of await factory.databases()) {
    if (name === undefined || !name.startsWith(`${prefix}:`) || inUse.has(name)) continue;
    if (!(await isStale(factory, name, cutoff))) continue;
    await deleteDatabase(factory, name);
    removed++;
  }
  return removed;
}

/** Deletes a database; resolves once deleted or blocked by a connection that ignores "versionchange". */
export function deleteDatabase(factory: IDBFactory, name: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const request = factory.deleteDatabase(name);
    request.onsuccess = () => resolve();
    // Another connection that ignores "versionchange" holds it open; the
    // deletion completes when it closes, and the store is already empty.
    request.onblocked = () => resolve();
    request.onerror = () => reject(request.error);
  });
}

/** A storage failure as a ConnectError with a code and a message a person can act on. */
export function storageError(dbName: string, action: string, error: unknown): ConnectError {
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
