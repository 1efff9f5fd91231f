/** IndexedDB helpers for the persistence suites (fake-indexeddb under Node). */

/** A Uint8Array of these bytes. */
export const bytes = (...values: number[]) => new Uint8Array(values);

/** The names of every database of `factory`, sorted. */
export const names = async (factory: IDBFactory) =>
  (await factory.databases()).map((d) => d.name).sort();

/** The database name of a session, computed here independently: prefix and hex SHA-256. */
export async function dbName(sessionId: string, prefix = "unified-bridge") {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(sessionId));
  return `${prefix}:${Buffer.from(digest).toString("hex")}`;
}

/** Writes a record behind the adapter's back (creating the database as the adapter would). */
export async function rawPut(factory: IDBFactory, dbName: string, key: string, value: unknown) {
  const db = await new Promise<IDBDatabase>((resolve, reject) => {
    const request = factory.open(dbName);
    request.onupgradeneeded = () => request.result.createObjectStore("variables");
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  await new Promise<void>((resolve, reject) => {
    const tx = db.transaction("variables", "readwrite");
    tx.objectStore("variables").put(value, key);
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
  });
  db.close();
}
