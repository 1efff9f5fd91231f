import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import {
  BatchSetVariablesRequestSchema,
  SetVariableRequestSchema,
} from "../../gen/snakepit/bridge/bridge_pb.js";
import { encodeValue } from "../../values/index.js";
import { createMemoryStore } from "../store/memory-store.js";
import type { SessionTransaction } from "../store/session-store.js";
import { canonical, type KeyedWrite, once, writeKeyOf } from "./idempotency.js";

const now = () => 1_000_000;
const counted: KeyedWrite<number> = {
  summary: (n) => n,
  replay: (_view, summary) => summary as number,
};

async function session() {
  const store = createMemoryStore();
  await store.createSession({ id: "s", metadata: {}, ttlMs: 60_000, allowedTools: [] }, 10);
  const transact = async <R>(fn: (tx: SessionTransaction) => R): Promise<R> => {
    const done = await store.transact("s", fn);
    if (done === undefined) throw new ConnectError("session not found", Code.NotFound);
    return done.value;
  };
  return { store, transact };
}

const key = (k: string) => writeKeyOf("SetVariable", { idempotencyKey: k, sessionId: "s" });

describe("once: what a key remembers", () => {
  it("a refusal the write made is answered again", async () => {
    const { transact } = await session();
    let runs = 0;
    const refuse = () => {
      runs++;
      throw new ConnectError("version mismatch", Code.Aborted);
    };
    const first = once(transact, now, key("k"), counted, refuse);
    await expect(first).rejects.toThrow("version mismatch");
    const again = once(transact, now, key("k"), counted, () => 7);
    await expect(again).rejects.toThrow("version mismatch");
    expect(runs).toBe(1);
  });

  it("a failure the store raised after the write ran is not remembered: a retry applies", async () => {
    const { transact } = await session();
    // The store gives up after the callback ran (as Redis does after too
    // many lost races), with a code a refusal could have too.
    let contended = true;
    const flaky = async <R>(fn: (tx: SessionTransaction) => R): Promise<R> => {
      if (!contended) return transact(fn);
      contended = false;
      await transact((tx) => {
        fn(tx);
        throw new ConnectError("the session changed 16 times while writing; retry", Code.Aborted);
      }).catch(() => undefined);
      throw new ConnectError("the session changed 16 times while writing; retry", Code.Aborted);
    };
    await expect(once(flaky, now, key("k2"), counted, () => 1)).rejects.toThrow("16 times");
    await expect(once(flaky, now, key("k2"), counted, () => 2)).resolves.toBe(2);
  });
});

describe("canonical: the text a fingerprint is made of", () => {
  // The form fingerprints were first made with: remembered fingerprints
  // outlive restarts and upgrades, so the text must not change.
  const reference = (value: unknown): string =>
    JSON.stringify(value, (_key, v: unknown) => {
      if (v instanceof Uint8Array) return Buffer.from(v).toString("base64");
      if (v === null || typeof v !== "object" || Array.isArray(v)) return v;
      const sorted: Record<string, unknown> = {};
      for (const k of Object.keys(v).sort()) {
        if (!k.startsWith("$")) sorted[k] = (v as Record<string, unknown>)[k];
      }
      return sorted;
    });

  it("is the sorted-key JSON of requests, bytes and odd values alike", () => {
    const requests: unknown[] = [
      create(BatchSetVariablesRequestSchema, {
        sessionId: "s",
        updates: {
          zeta: encodeValue("float", 1.5).any,
          alpha: encodeValue("string", "h\u00e9llo \ud83d\ude00").any,
        },
        binaryUpdates: { blob: new Uint8Array([0, 1, 2, 250]) },
        metadata: { b: "2", a: "1", "\u00e9": "x" },
        atomic: true,
      }),
      create(SetVariableRequestSchema, {
        variableIdentifier: "v",
        value: encodeValue("float", Number.NaN).any,
        expectedVersion: 3,
      }),
      {
        $typeName: "x",
        n: [1, Number.NaN, -0, Number.POSITIVE_INFINITY, undefined, null, () => 1],
        nested: { $unknown: [1], b: undefined, a: { y: false, x: "" } },
        buffer: Buffer.from([1, 2, 3]),
        empty: {},
        list: [],
        lone: "\ud800",
        quote: 'say "hi"\n',
      },
    ];
    for (const request of requests) {
      expect(canonical(request)).toBe(reference(request));
    }
  });
});
