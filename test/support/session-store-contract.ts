/**
 * The SessionStore contract suite, shared by the memory and Redis store
 * tests. It lives here, outside src/, so the build never ships it (it
 * imports vitest). It is one file of about 700 lines on purpose: the
 * contract reads best as one list of what every backend must do, and each
 * part of it is a short test.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import {
  IDEMPOTENCY_KEYS_PER_SESSION,
  IDEMPOTENCY_WINDOW_MS,
  type KeyedWrite,
  once,
  writeKeyOf,
} from "../../src/server/session/idempotency.js";
import type {
  HistoryRecord,
  SessionStore,
  SessionTransaction,
  StoreEvent,
  VariableRecord,
} from "../../src/server/store/session-store.js";

/** A store under test with a clock the test controls. */
export interface StoreFixture {
  readonly store: SessionStore;
  /** Moves the clock of the store (and of its siblings) forward. */
  advance(ms: number): void;
  /**
   * Resolves once every event of what was committed so far has reached the
   * subscribers of this store and its siblings (a multi-node store delivers
   * them from its change feed).
   */
  settle(): Promise<void>;
  /**
   * For multi-node backends: another store instance on the same backend and
   * clock, as another replica would have (closed by the suite).
   */
  sibling?: () => Promise<SessionStore>;
}

/**
 * The contract every {@link SessionStore} backend must meet. Each backend's
 * test file calls this with a factory; the factory's store must use the
 * fixture clock for expiry and sweep at least every 50 ms.
 */
export function describeSessionStoreContract(
  name: string,
  factory: () => Promise<StoreFixture>,
  options: { readonly multiNode?: boolean } = {},
): void {
  describe(`SessionStore contract: ${name}`, () => {
    let fixture: StoreFixture;
    let store: SessionStore;
    let events: StoreEvent[];

    beforeEach(async () => {
      fixture = await factory();
      store = fixture.store;
      events = [];
      store.subscribe((e) => events.push(e));
      // Changes are delivered for the sessions a node follows.
      await store.follow("s");
    });
    afterEach(async () => {
      await store.close();
    });

    const init = (id: string, ttlMs = 60_000) => ({
      id,
      metadata: { owner: "t" },
      ttlMs,
      allowedTools: [],
    });
    const variable = (
      id: string,
      name: string,
      version = 0,
      value = 1,
      bytes = 8,
    ): VariableRecord => ({
      id,
      name,
      type: "integer",
      value,
      constraintsJson: "{}",
      metadata: {},
      source: 0,
      version,
      updatedAt: 0,
      accessControlJson: "",
      binary: false,
      changedBy: "test",
      changeMetadata: {},
      bytes,
    });
    const entry = (version: number, bytes = 8): HistoryRecord => ({
      version,
      value: version,
      timestamp: version,
      changedBy: "t",
      metadata: {},
      bytes,
    });

    it("creates a session once and reports whether this call created it", async () => {
      const first = await store.createSession(init("s1"), 10);
      const second = await store.createSession({ ...init("s1"), metadata: { owner: "other" } }, 10);
      expect(first.created).toBe(true);
      expect(second.created).toBe(false);
      expect(second.session.metadata).toEqual({ owner: "t" });
      expect((await store.stats()).sessions).toBe(1);
    });

    it("refuses new sessions beyond the limit with RESOURCE_EXHAUSTED", async () => {
      await store.createSession(init("a"), 2);
      await store.createSession(init("b"), 2);
      const error = await store.createSession(init("c"), 2).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ConnectError);
      expect((error as ConnectError).code).toBe(Code.ResourceExhausted);
      // An existing session is still returned at the limit.
      expect((await store.createSession(init("a"), 2)).created).toBe(false);
    });

    it("counts a client's live sessions against its quota until they end", async () => {
      const quota = { client: "198.51.100.7", max: 2 };
      await store.createSession({ ...init("q1"), quota }, 10);
      await store.createSession({ ...init("q2"), quota }, 10);
      const error = await store
        .createSession({ ...init("q3"), quota }, 10)
        .catch((e: unknown) => e);
      expect((error as ConnectError).code).toBe(Code.ResourceExhausted);
      expect((error as ConnectError).rawMessage).toContain("--max-sessions-per-client");
      // Another client, or none, is not held back; reopening is not creating.
      await store.createSession({ ...init("q4"), quota: { ...quota, client: "203.0.113.9" } }, 10);
      await store.createSession(init("q5"), 10);
      expect((await store.createSession({ ...init("q1"), quota }, 10)).created).toBe(false);
      // An ended session gives its place back, by cleanup or by expiry.
      await store.deleteSession("q1", "cleanup");
      await store.createSession({ ...init("q6", 500), quota }, 10);
      fixture.advance(1000);
      await vi.waitFor(async () => expect(await store.read("q6", () => true)).toBeUndefined());
      await vi.waitFor(async () =>
        expect((await store.createSession({ ...init("q7"), quota }, 10)).created).toBe(true),
      );
    });

    it("holds a client's bytes across its sessions: growth past them is refused until some are freed", async () => {
      const quota = { client: "198.51.100.8", max: 10, maxBytes: 4000 };
      await store.createSession({ ...init("b1"), quota }, 10);
      await store.createSession({ ...init("b2"), quota }, 10);
      await store.transact("b1", (tx) => tx.setData("k", "a", 1500));
      await store.transact("b2", (tx) => tx.setData("k", "b", 1500));
      const refused = await store
        .transact("b2", (tx) => tx.setData("k2", "c", 1500))
        .catch((e: unknown) => e);
      expect((refused as ConnectError).code).toBe(Code.ResourceExhausted);
      expect((refused as ConnectError).rawMessage).toContain("--max-bytes-per-client");
      expect((await store.read("b2", (view) => view.data("k2")))?.value).toBeUndefined();
      // Another client is not held back.
      await store.createSession({ ...init("b3"), quota: { ...quota, client: "203.0.113.8" } }, 10);
      await store.transact("b3", (tx) => tx.setData("k", "d", 3000));
      // What one session frees, another may take.
      await store.transact("b1", (tx) => tx.setData("k", undefined, 0));
      await store.transact("b2", (tx) => tx.setData("k2", "c", 1500));
      expect((await store.read("b2", (view) => view.data("k2")))?.value).toBe("c");
    });

    it("runs the creation setup atomically: a failing setup leaves no session", async () => {
      await expect(
        store.createSession(init("s"), 10, (tx) => {
          tx.putVariable(variable("var:1:x", "x"));
          throw new Error("boom");
        }),
      ).rejects.toThrow("boom");
      expect(await store.read("s", () => true)).toBeUndefined();
      expect((await store.stats()).variables).toBe(0);
    });

    it("answers undefined for unknown sessions", async () => {
      expect(await store.read("nope", () => 1)).toBeUndefined();
      expect(await store.transact("nope", () => 1)).toBeUndefined();
      expect(await store.deleteSession("nope", "cleanup")).toBeUndefined();
    });

    it("finds variables by id and by name, and counts them", async () => {
      await store.createSession(init("s"), 10);
      await store.transact("s", (tx) => {
        tx.putVariable(variable(`var:${tx.nextVariableSeq()}:x`, "x"));
        tx.putVariable(variable(`var:${tx.nextVariableSeq()}:y`, "y"));
      });
      const found = await store.read("s", (v) => [
        v.variable("x")?.id,
        v.variable("var:2:y")?.name,
        v.variable("var:9:x"),
        v.variableCount,
      ]);
      expect(found?.value).toEqual(["var:1:x", "y", undefined, 2]);
      expect((await store.stats()).variables).toBe(2);
    });

    it("never reuses variable sequence numbers, even after deletes", async () => {
      await store.createSession(init("s"), 10);
      const first = await store.transact("s", (tx) => tx.nextVariableSeq());
      await store.transact("s", (tx) => tx.deleteVariable("var:1:x"));
      const second = await store.transact("s", (tx) => tx.nextVariableSeq());
      expect(second?.value).toBeGreaterThan(first?.value ?? Number.POSITIVE_INFINITY);
    });

    it("applies nothing from a transaction that throws, and publishes nothing", async () => {
      await store.createSession(init("s"), 10);
      await store.transact("s", (tx) => tx.putVariable(variable("var:1:x", "x", 0, 1)));
      events.length = 0;
      await expect(
        store.transact("s", (tx) => {
          tx.putVariable(variable("var:1:x", "x", 1, 2));
          tx.appendHistory("var:1:x", entry(0));
          tx.setData("k", "v", 3);
          tx.emit({
            sessionId: "s",
            kind: "value_changed",
            variable: variable("var:1:x", "x", 1, 2),
            source: "t",
            metadata: {},
            timestamp: 0,
          });
          throw new Error("validation failed");
        }),
      ).rejects.toThrow("validation failed");
      const state = await store.read("s", (v) => ({
        version: v.variable("x")?.version,
        value: v.variable("x")?.value,
        history: v.history("var:1:x").length,
        data: v.data("k"),
      }));
      expect(state?.value).toEqual({ version: 0, value: 1, history: 0, data: undefined });
      await fixture.settle();
      expect(events).toEqual([]);
    });

    // A callback may run more than once (SessionStore.transact); these
    // callbacks count their runs, which real ones must not do, to tell the
    // runs apart.
    it("keeps only the last run of a callback: its writes, its changes and its result", async () => {
      await store.createSession(init("s"), 10);
      await store.transact("s", (tx) => tx.putVariable(variable("var:1:n", "n", 0, 0)));
      await fixture.settle();
      events.length = 0;
      let runs = 0;
      const result = await store.transact("s", (tx) => {
        runs++;
        const n = tx.variable("n") as VariableRecord;
        const next = { ...n, version: n.version + 1, value: Number(n.value) + 1 };
        tx.putVariable(next);
        tx.setData(`run ${runs}`, runs, 8);
        tx.emit({
          sessionId: "s",
          kind: "value_changed",
          variable: next,
          source: "t",
          metadata: { run: String(runs) },
          timestamp: runs,
        });
        return `run ${runs}`;
      });
      expect(result?.value).toBe(`run ${runs}`);
      const state = await store.read("s", (v) => ({
        n: v.variable("n"),
        data: [...v.dataKeys()],
        bytes: v.bytes,
      }));
      expect(state?.value).toMatchObject({ n: { version: 1, value: 1 }, data: [`run ${runs}`] });
      expect(state?.value.bytes).toBe(8 + 8);
      await fixture.settle();
      expect(events).toHaveLength(1);
      expect(events[0]).toMatchObject({ change: { metadata: { run: String(runs) } } });
    });

    it("keeps only the last run of a creation setup", async () => {
      let runs = 0;
      await store.createSession(init("s"), 10, (tx) => {
        runs++;
        tx.putVariable(variable(`var:${tx.nextVariableSeq()}:x`, "x", 0, runs));
        tx.setData(`run ${runs}`, runs, 8);
      });
      const state = await store.read("s", (v) => ({
        x: v.variable("x"),
        data: [...v.dataKeys()],
        count: v.variableCount,
        bytes: v.bytes,
      }));
      expect(state?.value).toMatchObject({
        x: { id: "var:1:x", value: runs },
        data: [`run ${runs}`],
        count: 1,
        bytes: 8 + 8,
      });
      expect(await store.stats()).toEqual({ sessions: 1, variables: 1 });
    });

    it("runs a read callback once", async () => {
      await store.createSession(init("s"), 10);
      let runs = 0;
      await store.read("s", () => runs++);
      expect(runs).toBe(1);
    });

    it("sees its own writes inside a transaction", async () => {
      await store.createSession(init("s"), 10);
      const seen = await store.transact("s", (tx) => {
        tx.putVariable(variable("var:1:x", "x"));
        const before = tx.variable("x")?.id;
        tx.deleteVariable("var:1:x");
        return [before, tx.variable("x"), tx.variableCount];
      });
      expect(seen?.value).toEqual(["var:1:x", undefined, 0]);
    });

    it("appends history, drops the oldest entries, and drops it all with the variable", async () => {
      await store.createSession(init("s"), 10);
      await store.transact("s", (tx) => {
        tx.putVariable(variable("var:1:x", "x"));
        for (let v = 0; v < 5; v++) tx.appendHistory("var:1:x", entry(v));
        tx.dropHistory("var:1:x", 2);
      });
      await store.transact("s", (tx) => {
        tx.appendHistory("var:1:x", entry(5));
        tx.dropHistory("var:1:x", 1);
      });
      const versions = await store.read("s", (v) => v.history("var:1:x").map((e) => e.version));
      expect(versions?.value).toEqual([3, 4, 5]);
      await store.transact("s", (tx) => tx.dropHistory("var:1:x", 10));
      expect((await store.read("s", (v) => v.history("var:1:x")))?.value).toEqual([]);
      await store.transact("s", (tx) => tx.appendHistory("var:1:x", entry(6)));
      await store.transact("s", (tx) => tx.deleteVariable("var:1:x"));
      expect((await store.read("s", (v) => v.history("var:1:x")))?.value).toEqual([]);
    });

    it("hands out history that later writes do not change", async () => {
      await store.createSession(init("s"), 10);
      await store.transact("s", (tx) => {
        tx.putVariable(variable("var:1:x", "x"));
        tx.appendHistory("var:1:x", entry(0));
      });
      const before = (await store.read("s", (v) => v.history("var:1:x")))?.value;
      await store.transact("s", (tx) => {
        tx.appendHistory("var:1:x", entry(1));
        tx.dropHistory("var:1:x", 1);
      });
      expect(before?.map((e) => e.version)).toEqual([0]);
    });

    it("counts the bytes of variables, history and data as they change", async () => {
      await store.createSession(init("s"), 10);
      const bytes = async () => (await store.read("s", (v) => v.bytes))?.value;
      expect(await bytes()).toBe(0);
      await store.transact("s", (tx) => {
        tx.putVariable(variable("var:1:x", "x", 0, 1, 100));
        tx.putVariable(variable("var:2:y", "y", 0, 1, 50));
      });
      expect(await bytes()).toBe(150);
      // A write: the new version replaces the record, the old one is history.
      await store.transact("s", (tx) => {
        tx.putVariable(variable("var:1:x", "x", 1, 2, 120));
        tx.appendHistory("var:1:x", entry(0, 100));
      });
      expect(await bytes()).toBe(270);
      await store.transact("s", (tx) => {
        tx.putVariable(variable("var:1:x", "x", 2, 3, 10));
        tx.appendHistory("var:1:x", entry(1, 120));
        tx.dropHistory("var:1:x", 1);
      });
      expect(await bytes()).toBe(180);
      await store.transact("s", (tx) => tx.setData("k", { a: 1 }, 30));
      expect(await bytes()).toBe(210);
      const data = await store.read("s", (v) => [v.dataBytes("k"), v.dataBytes("none")]);
      expect(data?.value).toEqual([30, 0]);
      await store.transact("s", (tx) => tx.setData("k", [], 2));
      expect(await bytes()).toBe(182);
      await store.transact("s", (tx) => tx.setData("k", undefined, 0));
      expect(await bytes()).toBe(180);
      // Deleting x gives back its record and its history.
      await store.transact("s", (tx) => tx.deleteVariable("var:1:x"));
      expect(await bytes()).toBe(50);
      await store.transact("s", (tx) => tx.deleteVariable("var:2:y"));
      expect(await bytes()).toBe(0);
    });

    it("counts staged writes inside a transaction, and none once it throws", async () => {
      await store.createSession(init("s"), 10);
      await store.transact("s", (tx) => {
        tx.putVariable(variable("var:1:x", "x", 0, 1, 100));
        tx.appendHistory("var:1:x", entry(0, 40));
        tx.setData("k", "v", 3);
      });
      // A multi-node store may run a callback more than once: look at the last run.
      const runs: number[][] = [];
      await expect(
        store.transact("s", (tx) => {
          const seen: number[] = [];
          runs.push(seen);
          seen.push(tx.bytes);
          tx.putVariable(variable("var:1:x", "x", 1, 2, 200));
          seen.push(tx.bytes);
          tx.appendHistory("var:1:x", entry(1, 100));
          seen.push(tx.bytes);
          tx.dropHistory("var:1:x", 1);
          seen.push(tx.bytes);
          tx.setData("k", "longer", 8);
          seen.push(tx.bytes);
          tx.putVariable(variable("var:2:y", "y", 0, 1, 1000));
          seen.push(tx.bytes);
          tx.deleteVariable("var:1:x");
          seen.push(tx.bytes);
          throw new Error("over budget");
        }),
      ).rejects.toThrow("over budget");
      expect(runs.at(-1)).toEqual([143, 243, 343, 303, 308, 1308, 1008]);
      expect((await store.read("s", (v) => v.bytes))?.value).toBe(143);
    });

    it("counts what a session's creation setup stores", async () => {
      await store.createSession(init("s"), 10, (tx) => {
        tx.putVariable(variable("var:1:x", "x", 0, 1, 64));
        tx.setData("k", 1, 1);
      });
      expect((await store.read("s", (v) => v.bytes))?.value).toBe(65);
    });

    it("stores dependency edges and removes those of a deleted variable", async () => {
      await store.createSession(init("s"), 10);
      await store.transact("s", (tx) => {
        tx.putVariable(variable("var:1:a", "a"));
        tx.putVariable(variable("var:2:b", "b"));
        tx.putVariable(variable("var:3:c", "c"));
        tx.addDependency({ from: "var:1:a", to: "var:2:b", type: "uses" });
        tx.addDependency({ from: "var:2:b", to: "var:3:c", type: "uses" });
      });
      await store.transact("s", (tx) => tx.deleteVariable("var:3:c"));
      const edges = await store.read("s", (v) => v.dependencies());
      expect(edges?.value).toEqual([{ from: "var:1:a", to: "var:2:b", type: "uses" }]);
    });

    it("keeps session data per session", async () => {
      await store.createSession(init("a"), 10);
      await store.createSession(init("b"), 10);
      await store.transact("a", (tx) => tx.setData("history", [{ role: "user" }], 17));
      expect((await store.read("a", (v) => v.data("history")))?.value).toEqual([{ role: "user" }]);
      expect((await store.read("b", (v) => v.data("history")))?.value).toBeUndefined();
      expect((await store.read("b", (v) => v.variable("x")))?.value).toBeUndefined();
    });

    it("publishes changes after commit, in order", async () => {
      await store.createSession(init("s"), 10);
      await store.transact("s", (tx) => {
        for (let v = 1; v <= 3; v++) {
          tx.emit({
            sessionId: "s",
            kind: "value_changed",
            variable: variable("var:1:x", "x", v),
            source: "t",
            metadata: {},
            timestamp: v,
          });
        }
      });
      await fixture.settle();
      const versions = events.flatMap((e) =>
        e.type === "change" ? [e.change.variable.version] : [],
      );
      expect(versions).toEqual([1, 2, 3]);
    });

    it("expires idle sessions after their TTL and refreshes the TTL on use", async () => {
      await store.createSession(init("idle", 1000), 10);
      await store.createSession(init("busy", 1000), 10);
      for (let i = 0; i < 3; i++) {
        fixture.advance(600);
        expect(await store.read("busy", () => true)).toBeDefined();
      }
      expect(await store.read("idle", () => true)).toBeUndefined();
      await vi.waitFor(() =>
        expect(events).toContainEqual({
          type: "session_ended",
          sessionId: "idle",
          reason: "expired",
        }),
      );
      expect((await store.stats()).sessions).toBe(1);
    });

    it("sweeps expired sessions without being asked", async () => {
      await store.createSession(init("a", 500), 10);
      await store.createSession(init("b", 500), 10);
      await store.createSession(init("c", 5000), 10);
      fixture.advance(1500);
      await vi.waitFor(async () => expect((await store.stats()).sessions).toBe(1), {
        timeout: 3000,
      });
      await fixture.settle();
      const ended = events.flatMap((e) => (e.type === "session_ended" ? [e.sessionId] : []));
      expect(ended.sort()).toEqual(["a", "b"]);
    });

    it("deletes a session with its variables and publishes the end", async () => {
      await store.createSession(init("s"), 10);
      await store.transact("s", (tx) => tx.putVariable(variable("var:1:x", "x")));
      expect(await store.deleteSession("s", "cleanup")).toEqual({ variables: 1 });
      expect(await store.read("s", () => true)).toBeUndefined();
      await fixture.settle();
      expect(events).toContainEqual({ type: "session_ended", sessionId: "s", reason: "cleanup" });
      expect(await store.stats()).toEqual({ sessions: 0, variables: 0 });
    });

    // Multi-node backends only (their fixtures have siblings).
    if (!options.multiNode) return;
    /**
     * Idempotency keys live in the session's own state: what a key was
     * answered with is committed by the write's own transaction.
     */
    describe("idempotency keys", () => {
      let clock = 1_000_000;
      const now = () => clock;
      const versionOf: KeyedWrite<number> = {
        summary: (v) => v,
        replay: (_view, v) => v as number,
      };
      const bump = (tx: SessionTransaction) => {
        const current = tx.variable("x") as VariableRecord;
        tx.putVariable({ ...current, version: current.version + 1 });
        return current.version + 1;
      };
      /** A request with a field besides the key, so that fingerprints differ. */
      const bumpRequest = (key: string, request: string) => {
        const body = { idempotencyKey: key, sessionId: "s", request };
        return body;
      };
      const keyed = (on: SessionStore, key: string, request = "x+1") =>
        once(
          (fn) => on.transact("s", fn).then((r) => (r as { value: never }).value),
          now,
          writeKeyOf("Bump", bumpRequest(key, request)),
          versionOf,
          bump,
        );
      const versionIn = async (on: SessionStore) =>
        (await on.read("s", (v) => v.variable("x")?.version))?.value;
      beforeEach(async () => {
        await store.createSession(init("s"), 10);
        await store.transact("s", (tx) => tx.putVariable(variable("v1", "x")));
      });

      it("applies a keyed write once and answers a repeat with the first result", async () => {
        expect(await keyed(store, "k-1")).toBe(1);
        expect(await keyed(store, "k-1")).toBe(1);
        expect(await versionIn(store)).toBe(1);
        expect(await keyed(store, "k-2")).toBe(2);
        // The same key for another request is refused, and changes nothing.
        const reused = await keyed(store, "k-1", "x+2").catch((e: unknown) => e);
        expect((reused as ConnectError).code).toBe(Code.InvalidArgument);
        expect((reused as ConnectError).rawMessage).toContain("reused for a different write");
        expect(await versionIn(store)).toBe(2);
      });

      it("records a key only with its write, and counts it in the session's bytes", async () => {
        const before = (await store.read("s", (v) => v.bytes))?.value ?? 0;
        const failing = await once(
          (fn) => store.transact("s", fn).then((r) => (r as { value: never }).value),
          now,
          writeKeyOf("Bump", { idempotencyKey: "k-fail", sessionId: "s" }),
          versionOf,
          (tx) => {
            bump(tx);
            throw new ConnectError("store full", Code.ResourceExhausted);
          },
        ).catch((e: unknown) => e);
        expect((failing as ConnectError).code).toBe(Code.ResourceExhausted);
        expect(await versionIn(store)).toBe(0);
        expect((await store.read("s", (v) => v.bytes))?.value).toBe(before);
        await keyed(store, "k-ok");
        expect((await store.read("s", (v) => v.bytes))?.value).toBeGreaterThan(before);
      });

      it("remembers the last keys of a session for a bounded time", async () => {
        for (let i = 0; i <= IDEMPOTENCY_KEYS_PER_SESSION; i++) {
          clock++;
          await keyed(store, `k-${i}`);
        }
        const applied = IDEMPOTENCY_KEYS_PER_SESSION + 1;
        expect(await versionIn(store)).toBe(applied);
        // At the cap the 32 oldest were forgotten at once: the last 225
        // are remembered (answered with their first result), the one
        // before them applies again.
        expect(await keyed(store, `k-${IDEMPOTENCY_KEYS_PER_SESSION}`)).toBe(applied);
        expect(await keyed(store, "k-32")).toBe(33);
        expect(await keyed(store, "k-31")).toBe(applied + 1);
        expect(await keyed(store, "k-0")).toBe(applied + 2);
        clock += IDEMPOTENCY_WINDOW_MS;
        expect(await keyed(store, "k-0")).toBe(applied + 3);
      });

      if (options.multiNode) {
        it("answers a key used on one instance from another", async () => {
          const other = await (fixture.sibling as () => Promise<SessionStore>)();
          try {
            expect(await keyed(store, "k-a")).toBe(1);
            expect(await keyed(other, "k-a")).toBe(1);
            expect(await versionIn(other)).toBe(1);
          } finally {
            await other.close();
          }
        });
      }
    });

    describe("several instances on one backend", () => {
      let other: SessionStore;
      let otherEvents: StoreEvent[];
      beforeEach(async () => {
        if (fixture.sibling === undefined) throw new Error("a multi-node fixture needs sibling()");
        other = await fixture.sibling();
        otherEvents = [];
        other.subscribe((e) => otherEvents.push(e));
        await other.follow("s");
      });
      afterEach(async () => {
        await other?.close();
      });

      const changeVersions = (list: StoreEvent[]) =>
        list.flatMap((e) => (e.type === "change" ? [e.change.variable.version] : []));

      // A change another instance made is read from the session when the
      // feed names it: one overwritten before that is seen as the newer
      // version (feed-delivery.ts), never as an older one after a newer.
      it("reads on one instance what another wrote, and both see the changes in order, each its own and the last", async () => {
        await store.createSession(init("s"), 10);
        for (let v = 0; v < 5; v++) {
          const writer = v % 2 === 0 ? store : other;
          await writer.transact("s", (tx) => {
            const record = variable("var:1:x", "x", v, v * 10);
            tx.putVariable(record);
            tx.emit({
              sessionId: "s",
              kind: "value_changed",
              variable: record,
              source: "t",
              metadata: {},
              timestamp: v,
            });
          });
          const seen = await (v % 2 === 0 ? other : store).read("s", (view) => view.variable("x"));
          expect(seen?.value?.version).toBe(v);
        }
        await fixture.settle();
        const increasing = (versions: number[]) =>
          versions.every((v, i) => i === 0 || v > (versions[i - 1] as number));
        for (const [list, own] of [
          [changeVersions(events), [0, 2, 4]],
          [changeVersions(otherEvents), [1, 3]],
        ] as const) {
          expect(increasing(list), `versions ${list}`).toBe(true);
          expect(list.at(-1)).toBe(4);
          expect(list).toEqual(expect.arrayContaining([...own]));
        }
      });

      it("follows several sessions at once and delivers each one's changes", async () => {
        const ids = Array.from({ length: 8 }, (_, i) => `many-${i}`);
        await Promise.all(ids.map((id) => store.createSession(init(id), 20)));
        // Begun together, as watch streams of several sessions open at once.
        await Promise.all(ids.map((id) => other.follow(id)));
        await Promise.all(
          ids.map((id) =>
            store.transact(id, (tx) => {
              const record = variable("var:1:x", "x", 1, 10);
              tx.putVariable(record);
              tx.emit({
                sessionId: id,
                kind: "value_changed",
                variable: record,
                source: "t",
                metadata: {},
                timestamp: 1,
              });
            }),
          ),
        );
        await fixture.settle();
        const changed = otherEvents.flatMap((e) =>
          e.type === "change" ? [e.change.sessionId] : [],
        );
        expect(changed.sort()).toEqual(ids);
      });

      it("loses no update when instances race on the same session", async () => {
        await store.createSession(init("s"), 10);
        await store.transact("s", (tx) => tx.putVariable(variable("var:1:n", "n", 0, 0)));
        const bump = (s: SessionStore) =>
          s.transact("s", (tx) => {
            const current = tx.variable("n") as VariableRecord;
            tx.putVariable({
              ...current,
              version: current.version + 1,
              value: Number(current.value) + 1,
            });
          });
        await Promise.all(Array.from({ length: 40 }, (_, i) => bump(i % 2 === 0 ? store : other)));
        const n = await other.read("s", (view) => view.variable("n"));
        expect(n?.value).toMatchObject({ value: 40, version: 40 });
      });

      it("ends a session for every instance, by cleanup or by expiry", async () => {
        await store.createSession(init("gone"), 10);
        await store.createSession(init("idle", 1000), 10);
        expect(await other.read("gone", () => true)).toBeDefined();
        await other.deleteSession("gone", "cleanup");
        expect(await store.read("gone", () => true)).toBeUndefined();
        fixture.advance(1500);
        await vi.waitFor(async () => expect((await other.stats()).sessions).toBe(0), {
          timeout: 3000,
        });
        await fixture.settle();
        for (const list of [events, otherEvents]) {
          expect(list).toContainEqual({
            type: "session_ended",
            sessionId: "gone",
            reason: "cleanup",
          });
          expect(list).toContainEqual({
            type: "session_ended",
            sessionId: "idle",
            reason: "expired",
          });
        }
        expect(await store.read("idle", () => true)).toBeUndefined();
      });

      it("counts a session created on one instance against the limit on another", async () => {
        await store.createSession(init("a"), 2);
        await other.createSession(init("b"), 2);
        const error = await other.createSession(init("c"), 2).catch((e: unknown) => e);
        expect((error as ConnectError).code).toBe(Code.ResourceExhausted);
        expect((await other.createSession(init("a"), 2)).created).toBe(false);
      });
    });
  });
}
