import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { startRedis, type TestRedis } from "../../../test/support/redis-server.js";
import { encodeValue } from "../../values/index.js";
import { defaultLimits, type Limits } from "../limits/limits.js";
import { createMemoryStore } from "../store/memory-store.js";
import { createRedisStore } from "../store/redis-store.js";
import type { SessionStore, SessionTransaction } from "../store/session-store.js";
import { type BatchResult, setMany } from "./variable-batch.js";
import { createVariableOps } from "./variable-ops.js";

/**
 * SetVariables' batch semantics where they meet the store's retries: its
 * callback may run more than once (SessionStore.transact), and the outcome
 * reported must be the one of the run that decided.
 */

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
});

/** The parts of a bridge core setMany uses, over `store` (without auto-creation). */
function coreOn(store: SessionStore, limits: Limits) {
  const transact = async <T>(sessionId: string, fn: (tx: SessionTransaction) => T) => {
    const result = await store.transact(sessionId, fn);
    if (result === undefined) throw new ConnectError(`no session ${sessionId}`, Code.NotFound);
    return result.value;
  };
  return { ops: createVariableOps(limits), transact, now: Date.now };
}

/** Creates session "s" holding string variables with small values. */
async function sessionWith(
  store: SessionStore,
  limits: Limits,
  names: readonly string[],
  quota?: { client: string; max: number; maxBytes: number },
) {
  const ops = createVariableOps(limits);
  await store.createSession(
    {
      id: "s",
      metadata: {},
      ttlMs: 60_000,
      allowedTools: [],
      ...(quota === undefined ? {} : { quota }),
    },
    10,
    (tx) => {
      for (const name of names) {
        ops.register(tx, {
          name,
          type: "string",
          value: encodeValue("string", "").any,
          binary: new Uint8Array(0),
          constraintsJson: "",
          metadata: {},
        });
      }
    },
  );
}

const batchOf = (values: Record<string, string>, atomic = true) => ({
  writes: Object.entries(values).map(([identifier, value]) => ({
    identifier,
    value: { raw: value },
    binary: new Uint8Array(0),
  })),
  metadata: {},
  atomic,
});

const outcome = (p: Promise<BatchResult>) =>
  p.then(
    (r) => ({ success: r.success, errors: r.errors, written: [...r.written.keys()] }),
    (e: unknown) => ({ thrown: ConnectError.from(e) }),
  );

describe("an atomic SetVariables batch run again by the store", () => {
  it("reports the refusal of the run that decided, not one of a run that was dropped", async () => {
    // Two batches queued behind a write on one Redis replica are tried
    // together first: the second, after the first's 6 kB, is over the
    // session's 10 kB. Together they are also over the client's 2 kB, so
    // the store drops that try and runs each batch alone, where the second
    // fits the session but not the client: the client's limit is what
    // refused it.
    const limits: Limits = { ...defaultLimits, maxSessionBytes: 10_000 };
    const store = await createRedisStore({
      url: redis.url,
      keyPrefix: "batch-retry:",
      sweepIntervalMs: 0,
    });
    onTestFinished(() => store.close());
    await sessionWith(store, limits, ["a", "b", "c"], { client: "c1", max: 10, maxBytes: 2000 });
    const core = coreOn(store, limits);

    const first = outcome(setMany(core, "s", batchOf({ c: "1" })));
    const grows = outcome(setMany(core, "s", batchOf({ a: "x".repeat(6000) })));
    const refused = outcome(setMany(core, "s", batchOf({ b: "y".repeat(6000) })));

    expect(await first).toEqual({ success: true, errors: {}, written: ["c"] });
    for (const result of [await grows, await refused]) {
      expect(result).toMatchObject({ thrown: { code: Code.ResourceExhausted } });
      expect((result as { thrown: ConnectError }).thrown.rawMessage).toContain(
        "--max-bytes-per-client",
      );
    }
    const values = await store.read("s", (v) => [v.variable("a")?.value, v.variable("b")?.value]);
    expect(values?.value).toEqual(["", ""]);
  });

  it("refuses in-band once, writing nothing, when every run is over the session budget", async () => {
    const limits: Limits = { ...defaultLimits, maxSessionBytes: 10_000 };
    const store = createMemoryStore({ sweepIntervalMs: 0, rehearse: true });
    onTestFinished(() => store.close());
    await sessionWith(store, limits, ["a", "b"]);
    const core = coreOn(store, limits);

    const result = await outcome(
      setMany(core, "s", batchOf({ a: "x".repeat(6000), b: "y".repeat(6000) })),
    );
    expect(result).toMatchObject({ success: false, written: [] });
    expect(Object.keys((result as { errors: object }).errors)).toEqual(["b"]);
    const values = await store.read("s", (v) => [v.variable("a")?.value, v.variable("b")?.value]);
    expect(values?.value).toEqual(["", ""]);
  });
});
