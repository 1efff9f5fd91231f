import { IDBFactory as FakeIDBFactory } from "fake-indexeddb";
import { describe, expect, it } from "vitest";
import { bytes, dbName, names, rawPut } from "../../../test/support/idb.js";
import { until } from "../../../test/support/wait.js";
import { idbDatabaseName, idbPersistence } from "./idb.js";

describe("IndexedDB databases of idbPersistence", () => {
  it("names databases by a SHA-256 of the session id, never the id itself", async () => {
    const factory = new FakeIDBFactory();
    const secret = "sess-9f2c0b7e41d8a3aa";
    await idbPersistence({ indexedDB: factory }).save(secret, [{ id: "a", bytes: bytes(1) }]);
    const listed = await names(factory);
    expect(listed).toEqual([await dbName(secret)]);
    expect(listed.join()).not.toContain(secret);
    expect(await idbDatabaseName(secret, "app")).toBe(await dbName(secret, "app"));
  });

  it("sweeps databases untouched for sweepAfterMs, and those of older formats, but no store in use", async () => {
    const factory = new FakeIDBFactory();
    const day = 24 * 60 * 60 * 1000;
    const writer = idbPersistence({ indexedDB: factory });
    for (const s of ["old", "fresh", "in-use"])
      await writer.save(s, [{ id: "a", bytes: bytes(1) }]);
    // What an earlier release left: named by the raw id, format 1.
    await rawPut(factory, "unified-bridge:legacy-id", "meta", { format: 1, buster: "" });
    await rawPut(factory, "other-app:x", "meta", { format: 1, buster: "" });
    await rawPut(factory, await dbName("old"), "meta", {
      format: 2,
      buster: "",
      touchedAt: Date.now() - 8 * day,
    });
    await rawPut(factory, await dbName("in-use"), "meta", {
      format: 2,
      buster: "",
      touchedAt: Date.now() - 8 * day,
    });

    const adapter = idbPersistence({ indexedDB: factory, sweepAfterMs: 7 * day });
    expect(await adapter.load("in-use")).toEqual([bytes(1)]);
    expect(await adapter.sweep()).toBe(2);
    expect(await names(factory)).toEqual(
      [await dbName("fresh"), await dbName("in-use"), "other-app:x"].sort(),
    );
  });

  it("sweeps by itself on first use, off the caller's path", async () => {
    const factory = new FakeIDBFactory();
    await rawPut(factory, await dbName("expired"), "meta", { format: 2, buster: "", touchedAt: 0 });
    await idbPersistence({ indexedDB: factory }).load("current");
    await until(
      async () => !(await names(factory)).includes(await dbName("expired")),
      "the sweep to delete the expired store",
    );
    expect(await names(factory)).toEqual([await dbName("current")]);
  });
});
