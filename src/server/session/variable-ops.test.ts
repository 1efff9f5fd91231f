import { Code, ConnectError } from "@connectrpc/connect";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { encodeValue, type JsonValue } from "../../values/index.js";
import { defaultLimits, type Limits } from "../limits/limits.js";
import { createMemoryStore } from "../store/memory-store.js";
import type { SessionStore, SessionTransaction, SessionView } from "../store/session-store.js";
import { historyOf } from "./variable-history.js";
import { createVariableOps, type VariableOps } from "./variable-ops.js";

let store: SessionStore;
beforeEach(async () => {
  store = createMemoryStore({ sweepIntervalMs: 0 });
  await store.createSession({ id: "s", metadata: {}, ttlMs: 60_000, allowedTools: [] }, 10);
  await store.createSession({ id: "t", metadata: {}, ttlMs: 60_000, allowedTools: [] }, 10);
});
afterEach(async () => {
  await store.close();
});

const opsWith = (limits: Partial<Limits>): VariableOps =>
  createVariableOps({ ...defaultLimits, ...limits });
const text = (bytes: number, fill = "x") => fill.repeat(bytes);

async function tx<T>(fn: (tx: SessionTransaction) => T, sessionId = "s"): Promise<T> {
  const result = await store.transact(sessionId, fn);
  if (result === undefined) throw new Error(`no session ${sessionId}`);
  return result.value;
}
async function view<T>(fn: (view: SessionView) => T, sessionId = "s"): Promise<T> {
  const result = await store.read(sessionId, fn);
  if (result === undefined) throw new Error(`no session ${sessionId}`);
  return result.value;
}
async function failure(p: Promise<unknown>): Promise<ConnectError> {
  const e = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(e instanceof ConnectError)) throw new Error(`expected a ConnectError, got ${String(e)}`);
  return e;
}

const register = (ops: VariableOps, name: string, value: string, sessionId = "s") =>
  tx(
    (t) =>
      ops.register(t, {
        name,
        type: "string",
        value: encodeValue("string", value).any,
        binary: new Uint8Array(0),
        constraintsJson: "",
        metadata: {},
      }),
    sessionId,
  );
const write = (ops: VariableOps, name: string, value: string, sessionId = "s") =>
  tx(
    (t) =>
      ops.applyWrite(
        t,
        ops.prepareWrite(t, {
          identifier: name,
          value: { raw: value },
          binary: new Uint8Array(0),
          metadata: {},
          expectedVersion: undefined,
        }),
      ),
    sessionId,
  );
/** The variable as it stands: version, value length, retained versions, session bytes. */
const state = (name: string, sessionId = "s") =>
  view((v) => {
    const record = v.variable(name);
    if (record === undefined) return undefined;
    return {
      version: record.version,
      length: (record.value as string).length,
      history: v.history(record.id).map((e) => e.version),
      sessionBytes: v.bytes,
    };
  }, sessionId);

describe("history bounds", () => {
  it("keeps at most historyLimit versions, the current one included", async () => {
    const ops = opsWith({ historyLimit: 3 });
    await register(ops, "x", "a");
    for (let i = 0; i < 5; i++) await write(ops, "x", `v${i}`);
    expect((await state("x"))?.history).toEqual([3, 4]);
  });

  it("keeps past versions within historyMaxBytes, dropping the oldest first", async () => {
    const ops = opsWith({ historyMaxBytes: 1000 });
    await register(ops, "x", text(300));
    for (let i = 0; i < 5; i++) await write(ops, "x", text(300, String(i)));
    const kept = await view((v) => v.history("var:1:x"));
    expect(kept.map((e) => e.version)).toEqual([2, 3, 4]);
    expect(kept.reduce((sum, e) => sum + e.bytes, 0)).toBeLessThanOrEqual(1000);
    // What is left is a run of consecutive versions a rollback can reach.
    await tx((t) => ops.rollback(t, "x", 2, "test"));
    expect(await view((v) => v.variable("x")?.value)).toBe(text(300, "1"));
  });

  it("keeps no history of a version larger than historyMaxBytes, nor of older ones", async () => {
    const ops = opsWith({ historyMaxBytes: 1000 });
    await register(ops, "x", "small");
    await write(ops, "x", text(1500));
    expect((await state("x"))?.history).toEqual([0]);
    await write(ops, "x", "small again");
    expect((await state("x"))?.history).toEqual([]);
  });

  it("counts the write's metadata in a history entry", async () => {
    const ops = opsWith({});
    await register(ops, "x", text(10));
    await tx((t) =>
      ops.applyWrite(
        t,
        ops.prepareWrite(t, {
          identifier: "x",
          value: { raw: text(20) },
          binary: new Uint8Array(0),
          metadata: { reason: "tune" },
          expectedVersion: undefined,
        }),
      ),
    );
    const sizes = await view((v) => {
      const record = v.variable("x");
      return record === undefined ? [] : historyOf(v, record).map((e) => e.bytes);
    });
    // Version 0: 10 bytes of value, no write metadata. Version 1: 20 bytes
    // plus "reason" and "tune".
    expect(sizes).toEqual([10, 30]);
    // The session holds both versions, plus the metadata the variable now carries.
    expect((await state("x"))?.sessionBytes).toBe(10 + 30 + 10);
  });
});

describe("the session budget", () => {
  it("refuses a registration over the budget and registers nothing", async () => {
    const ops = opsWith({ maxSessionBytes: 1000 });
    await register(ops, "a", text(600));
    const e = await failure(register(ops, "b", text(500)));
    expect(e.code).toBe(Code.ResourceExhausted);
    expect(e.rawMessage).toBe(
      "session would hold 1.1 KiB with variable 'b'; the limit is 1000 bytes (--max-session-bytes)",
    );
    expect(await view((v) => [v.variableCount, v.bytes])).toEqual([1, 600]);
  });

  it("gives up the written variable's own history, oldest first, to make room", async () => {
    const ops = opsWith({ maxSessionBytes: 2000 });
    await register(ops, "other", text(500));
    await write(ops, "other", text(500, "o"));
    await register(ops, "x", text(200, "0"));
    for (let i = 1; i <= 3; i++) await write(ops, "x", text(200, String(i)));
    expect(await state("x")).toMatchObject({ history: [0, 1, 2], sessionBytes: 1800 });
    // 1000 of other + 700 now + 200 replaced leaves room for none older.
    await write(ops, "x", text(700));
    expect(await state("x")).toMatchObject({ version: 4, history: [3], sessionBytes: 1900 });
    // The other variable's history is not this write's to give up.
    expect((await state("other"))?.history).toEqual([0]);
  });

  it("gives up the replaced version too before it refuses", async () => {
    const ops = opsWith({ maxSessionBytes: 1000 });
    await register(ops, "x", text(400));
    await write(ops, "x", text(900));
    expect(await state("x")).toMatchObject({ version: 1, history: [], sessionBytes: 900 });
  });

  it("refuses a write that does not fit even without history and changes nothing", async () => {
    const ops = opsWith({ maxSessionBytes: 1000 });
    await register(ops, "other", text(500));
    await register(ops, "x", text(100));
    await write(ops, "x", text(100, "y"));
    const before = await state("x");
    const e = await failure(write(ops, "x", text(600)));
    expect(e.code).toBe(Code.ResourceExhausted);
    expect(e.rawMessage).toBe(
      "session would hold 1.1 KiB with variable 'x'; the limit is 1000 bytes (--max-session-bytes)",
    );
    expect(await state("x")).toEqual(before);
    expect(before).toMatchObject({ version: 1, history: [0], sessionBytes: 700 });
    // Another session has a budget of its own.
    await register(ops, "x", text(900), "t");
    expect((await state("x", "t"))?.sessionBytes).toBe(900);
  });

  it("checks each write of a batch against the writes before it", async () => {
    const ops = opsWith({ maxSessionBytes: 1000 });
    await register(ops, "a", "1");
    await register(ops, "b", "2");
    const outcome = await tx((t) => {
      const writes = ["a", "b"].map((name) =>
        ops.prepareWrite(t, {
          identifier: name,
          value: { raw: text(600) },
          binary: new Uint8Array(0),
          metadata: {},
          expectedVersion: undefined,
        }),
      );
      // Each fits on its own; together they do not.
      const results: (number | Code)[] = [];
      for (const w of writes) {
        try {
          results.push(ops.applyWrite(t, w).version);
        } catch (e) {
          results.push(ConnectError.from(e).code);
        }
      }
      return { results, bytes: t.bytes, b: t.variable("b")?.version };
    });
    expect(outcome).toEqual({ results: [1, Code.ResourceExhausted], bytes: 602, b: 0 });
  });

  it("holds a rollback to the budget, giving up history first", async () => {
    const ops = opsWith({ maxSessionBytes: 1000 });
    await register(ops, "x", text(500));
    await write(ops, "x", "a");
    await register(ops, "y", text(400));
    expect(await state("x")).toMatchObject({ history: [0], sessionBytes: 901 });
    // Version 0 comes back as the value (with 12 bytes of rollback_to
    // metadata), so its history entry goes to make room.
    await tx((t) => ops.rollback(t, "x", 0, "test"));
    expect(await state("x")).toMatchObject({
      version: 2,
      length: 500,
      history: [1],
      sessionBytes: 913,
    });
  });

  it("refuses a rollback that does not fit and changes nothing", async () => {
    const ops = opsWith({ maxSessionBytes: 1000 });
    await register(ops, "x", text(600));
    await write(ops, "x", "a");
    await register(ops, "y", text(390));
    const before = await state("x");
    const e = await failure(tx((t) => ops.rollback(t, "x", 0, "test")));
    expect(e.code).toBe(Code.ResourceExhausted);
    expect(e.rawMessage).toContain("session would hold 1002 bytes with variable 'x'");
    expect(await state("x")).toEqual(before);
    expect(before).toMatchObject({ version: 1, history: [0], sessionBytes: 991 });
  });
});

describe("session data", () => {
  const set = (ops: VariableOps, key: string, value: JsonValue | undefined) =>
    tx((t) => ops.setData(t, key, value));

  it("counts data in the session budget by its JSON size", async () => {
    const ops = opsWith({ maxSessionBytes: 1000 });
    await set(ops, "k", ["é", 1]);
    expect(await view((v) => [v.dataBytes("k"), v.bytes])).toEqual([8, 8]);
    await register(ops, "x", text(900));
    const e = await failure(set(ops, "k", text(100)));
    expect(e.code).toBe(Code.ResourceExhausted);
    expect(e.rawMessage).toBe(
      "session would hold 1002 bytes with session data 'k'; the limit is 1000 bytes (--max-session-bytes)",
    );
    expect(await view((v) => [v.data("k"), v.bytes])).toEqual([["é", 1], 908]);
    await set(ops, "k", undefined);
    expect(await view((v) => [v.data("k"), v.bytes])).toEqual([undefined, 900]);
  });

  it("refuses a value whose JSON is over maxValueBytes", async () => {
    const ops = opsWith({ maxValueBytes: 100 });
    await set(ops, "k", "short");
    const e = await failure(set(ops, "k", text(200)));
    expect(e.code).toBe(Code.ResourceExhausted);
    expect(e.rawMessage).toBe(
      "session data 'k' would be 202 bytes as JSON; the limit is 100 bytes (--max-value-bytes)",
    );
    expect(await view((v) => v.data("k"))).toBe("short");
  });
});
