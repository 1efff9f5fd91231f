/**
 * The variable RPCs against a real server: register and get, set, batch,
 * list and delete, history and rollback, the optimization lock,
 * dependencies and RegisterVariables.
 *
 * (Over 400 lines: one describe block per area, on one shared server.)
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { decodeValue, encodeValue, isVariableType } from "../../src/values/index.js";
import { type RunningBridge, startBridge } from "../support/bridge.js";
import { rejectionOf } from "../support/errors.js";

let bridge: RunningBridge;
let sessionId: string;

beforeAll(async () => {
  bridge = await startBridge({ historyLimit: 5, maxVariablesPerSession: 20, maxValueBytes: 4096 });
});
afterAll(async () => {
  await bridge.stop();
});
beforeEach(async () => {
  const res = await bridge.client().initializeSession({});
  sessionId = res.sessionId;
});

const client = () => bridge.client("grpc");
const any = (type: Parameters<typeof encodeValue>[0], value: Parameters<typeof encodeValue>[1]) =>
  encodeValue(type, value).any;
const valueIn = (v: { value?: Parameters<typeof decodeValue>[0] } | undefined) =>
  decodeValue(v?.value).value;

async function register(name: string, type: string, value: unknown, constraints = {}) {
  const valueType = isVariableType(type) ? type : "float";
  return client().registerVariable({
    sessionId,
    name,
    type,
    initialValue: any(valueType, value as number),
    constraintsJson: JSON.stringify(constraints),
  });
}

async function codeOf(p: Promise<unknown>): Promise<{ code: Code; message: string }> {
  const e = await rejectionOf(p);
  return { code: e.code, message: e.rawMessage };
}

describe("register and get", () => {
  it("registers a variable and reads it by name and by id", async () => {
    const res = await register("temperature", "float", 0.7, { min: 0, max: 2 });
    expect(res.variableId).toBe(res.variable?.id);
    const byName = await client().getVariable({ sessionId, variableIdentifier: "temperature" });
    const byId = await client().getVariable({ sessionId, variableIdentifier: res.variableId });
    expect(byName.variable?.id).toBe(res.variableId);
    expect(byId.variable?.name).toBe("temperature");
    expect(byName.variable?.version).toBe(0);
    expect(valueIn(byName.variable)).toBe(0.7);
    expect(JSON.parse(byName.variable?.constraintsJson ?? "")).toEqual({ min: 0, max: 2 });
  });

  it("refuses a taken name with ALREADY_EXISTS", async () => {
    await register("x", "integer", 1);
    expect((await codeOf(register("x", "integer", 2))).code).toBe(Code.AlreadyExists);
  });

  it.each([
    ["", "required"],
    ["1abc", "invalid"],
    ["has:colon", "invalid"],
    ["a".repeat(129), "limit is 128"],
  ])("rejects the name %j", async (name, fragment) => {
    const { code, message } = await codeOf(register(name, "integer", 1));
    expect(code).toBe(Code.InvalidArgument);
    expect(message).toContain(fragment);
  });

  it("rejects an unknown type, unknown constraint keys and an invalid pattern", async () => {
    expect((await codeOf(register("a", "decimal", 1))).message).toContain("unknown type");
    const keys = await codeOf(register("b", "float", 1, { min_length: 2 }));
    expect(keys.code).toBe(Code.InvalidArgument);
    expect(keys.message).toMatch(/min_length.*min, max/);
    const pattern = await codeOf(register("c", "string", "x", { pattern: "(" }));
    expect(pattern.message).toContain("invalid pattern");
  });

  it("rejects an initial value that violates the constraints", async () => {
    const { code, message } = await codeOf(register("t", "float", 3, { max: 2 }));
    expect(code).toBe(Code.InvalidArgument);
    expect(message).toBe("variable 't': value 3 is above maximum 2");
  });

  it("answers NOT_FOUND for unknown variables and sessions", async () => {
    const missing = await codeOf(client().getVariable({ sessionId, variableIdentifier: "nope" }));
    expect(missing.code).toBe(Code.NotFound);
    expect(missing.message).toContain("not found");
    const noSession = await codeOf(
      client().getVariable({ sessionId: "no-such-session", variableIdentifier: "x" }),
    );
    expect(noSession.code).toBe(Code.NotFound);
    expect(noSession.message).toContain("not found");
    expect(noSession.message).not.toContain("no-such-session");
  });

  it("enforces the variable count and value size limits", async () => {
    for (let i = 0; i < 20; i++) await register(`v${i}`, "integer", i);
    expect((await codeOf(register("one_more", "integer", 0))).code).toBe(Code.ResourceExhausted);
    await client().deleteVariable({ sessionId, variableIdentifier: "v0" });
    const big = await codeOf(register("big", "string", "x".repeat(5000)));
    expect(big.code).toBe(Code.ResourceExhausted);
    expect(big.message).toContain("limit is 4096");
  });
});

describe("set", () => {
  it("bumps the version by one per write and normalizes the value", async () => {
    const { variableId } = await register("t", "float", 0.5, { min: 0, max: 2 });
    const res = await client().setVariable({
      sessionId,
      variableIdentifier: variableId,
      value: any("integer", 1),
    });
    expect(res.newVersion).toBe(1);
    expect(res.variable?.type).toBe("float");
    const again = await client().setVariable({
      sessionId,
      variableIdentifier: "t",
      value: any("float", 1.5),
    });
    expect(again.newVersion).toBe(2);
    expect(valueIn(again.variable)).toBe(1.5);
  });

  it("changes nothing when the value is invalid", async () => {
    await register("t", "float", 0.5, { min: 0, max: 2 });
    const { code, message } = await codeOf(
      client().setVariable({ sessionId, variableIdentifier: "t", value: any("float", 2.5) }),
    );
    expect(code).toBe(Code.InvalidArgument);
    expect(message).toBe("variable 't': value 2.5 is above maximum 2");
    const now = await client().getVariable({ sessionId, variableIdentifier: "t" });
    expect(now.variable?.version).toBe(0);
    expect(valueIn(now.variable)).toBe(0.5);
    const history = await client().getVariableHistory({ sessionId, variableIdentifier: "t" });
    expect(history.entries.map((e) => e.version)).toEqual([0]);
  });

  it("merges metadata on update", async () => {
    await client().registerVariable({
      sessionId,
      name: "m",
      type: "string",
      initialValue: any("string", "a"),
      metadata: { owner: "alice", stage: "draft" },
    });
    await client().setVariable({
      sessionId,
      variableIdentifier: "m",
      value: any("string", "b"),
      metadata: { stage: "final" },
    });
    const { variable } = await client().getVariable({ sessionId, variableIdentifier: "m" });
    expect(variable?.metadata).toEqual({ owner: "alice", stage: "final" });
  });

  it("honours expected_version: ABORTED with the current version on mismatch", async () => {
    await register("n", "integer", 0);
    await client().setVariable({
      sessionId,
      variableIdentifier: "n",
      value: any("integer", 1),
      expectedVersion: 0,
      expectVersionZero: true,
    });
    const { code, message } = await codeOf(
      client().setVariable({
        sessionId,
        variableIdentifier: "n",
        value: any("integer", 5),
        expectedVersion: 3,
      }),
    );
    expect(code).toBe(Code.Aborted);
    expect(message).toContain("current version is 1");
    const zero = await codeOf(
      client().setVariable({
        sessionId,
        variableIdentifier: "n",
        value: any("integer", 5),
        expectVersionZero: true,
      }),
    );
    expect(zero.code).toBe(Code.Aborted);
    const ok = await client().setVariable({
      sessionId,
      variableIdentifier: "n",
      value: any("integer", 2),
      expectedVersion: 1,
    });
    expect(ok.newVersion).toBe(2);
  });

  it("loses no increment when concurrent writers use compare-and-swap with retry", async () => {
    await register("counter", "integer", 0);
    const workers = 12;
    const perWorker = 5;
    const increment = async () => {
      for (;;) {
        const { variable } = await client().getVariable({
          sessionId,
          variableIdentifier: "counter",
        });
        const version = variable?.version ?? 0;
        try {
          await client().setVariable({
            sessionId,
            variableIdentifier: "counter",
            value: any("integer", (valueIn(variable) as number) + 1),
            expectedVersion: version,
            expectVersionZero: version === 0,
          });
          return;
        } catch (e) {
          if (!(e instanceof ConnectError) || e.code !== Code.Aborted) throw e;
        }
      }
    };
    await Promise.all(
      Array.from({ length: workers }, async () => {
        for (let i = 0; i < perWorker; i++) await increment();
      }),
    );
    const { variable } = await client().getVariable({ sessionId, variableIdentifier: "counter" });
    expect(valueIn(variable)).toBe(workers * perWorker);
    expect(variable?.version).toBe(workers * perWorker);
  });

  it("carries large embeddings in the portable binary form", async () => {
    const data = Array.from({ length: 512 }, (_, i) => Math.fround(Math.sin(i)));
    const encoded = encodeValue("embedding", data, { binary: true });
    await client().registerVariable({
      sessionId,
      name: "emb",
      type: "embedding",
      initialValue: encoded.any,
      initialBinaryValue: encoded.binary ?? new Uint8Array(),
      constraintsJson: '{"dimensions":512}',
    });
    const { variable } = await client().getVariable({ sessionId, variableIdentifier: "emb" });
    expect(variable?.binaryValue.length).toBe(512 * 4);
    expect(decodeValue(variable?.value, variable?.binaryValue).value).toEqual(data);
  });

  it("refuses a pickle payload without decoding it", async () => {
    await register("e", "embedding", [1, 2]);
    const { code, message } = await codeOf(
      client().setVariable({
        sessionId,
        variableIdentifier: "e",
        value: {
          $typeName: "google.protobuf.Any",
          typeUrl: "type.googleapis.com/snakepit.embedding.binary",
          value: new TextEncoder().encode('{"shape":[2]}'),
        },
        binaryValue: new Uint8Array([0x80, 0x04, 0x95, 0, 0]),
      }),
    );
    expect(code).toBe(Code.InvalidArgument);
    expect(message.toLowerCase()).toContain("pickle");
  });
});

describe("batch", () => {
  it("gets found variables and lists the missing ones", async () => {
    const { variableId } = await register("a", "integer", 1);
    await register("b", "string", "x");
    const res = await client().getVariables({
      sessionId,
      variableIdentifiers: [variableId, "b", "zzz"],
    });
    expect(Object.keys(res.variables).sort()).toEqual([variableId, "b"].sort());
    expect(res.missingVariables).toEqual(["zzz"]);
  });

  it("returns metadata only when include_metadata is set", async () => {
    await client().registerVariable({
      sessionId,
      name: "m",
      type: "integer",
      initialValue: any("integer", 1),
      metadata: { k: "v" },
    });
    const without = await client().getVariables({ sessionId, variableIdentifiers: ["m"] });
    const withMeta = await client().getVariables({
      sessionId,
      variableIdentifiers: ["m"],
      includeMetadata: true,
    });
    expect(without.variables.m?.metadata).toEqual({});
    expect(withMeta.variables.m?.metadata).toEqual({ k: "v" });
  });

  it("non-atomic: applies valid updates and reports each failed key", async () => {
    await register("a", "integer", 1, { max: 10 });
    await register("b", "integer", 1, { max: 10 });
    const res = await client().setVariables({
      sessionId,
      updates: { a: any("integer", 5), b: any("integer", 50), nope: any("integer", 1) },
    });
    expect(res.success).toBe(true);
    expect(res.newVersions).toEqual({ a: 1 });
    expect(res.errors.b).toContain("above maximum");
    expect(res.errors.nope).toContain("not found");
    const b = await client().getVariable({ sessionId, variableIdentifier: "b" });
    expect(b.variable?.version).toBe(0);
  });

  it("atomic: applies nothing when anything fails", async () => {
    await register("a", "integer", 1, { max: 10 });
    await register("b", "integer", 1, { max: 10 });
    const res = await client().setVariables({
      sessionId,
      atomic: true,
      updates: { a: any("integer", 5), b: any("integer", 50) },
    });
    expect(res.success).toBe(false);
    expect(Object.keys(res.errors)).toEqual(["b"]);
    const got = await client().getVariables({ sessionId, variableIdentifiers: ["a", "b"] });
    expect(valueIn(got.variables.a)).toBe(1);
    expect(got.variables.a?.version).toBe(0);
    const ok = await client().setVariables({
      sessionId,
      atomic: true,
      updates: { a: any("integer", 2), b: any("integer", 3) },
    });
    expect(ok.success).toBe(true);
    expect(ok.newVersions).toEqual({ a: 1, b: 1 });
  });

  it("refuses one variable updated twice in a batch (by name and by id)", async () => {
    const { variableId } = await register("a", "integer", 1);
    const res = await client().setVariables({
      sessionId,
      updates: { a: any("integer", 2), [variableId]: any("integer", 3) },
    });
    expect(Object.values(res.errors).join()).toContain("twice");
  });
});

describe("list and delete", () => {
  it("lists with * globs, sorted by name", async () => {
    for (const name of ["model.temperature", "model.top_p", "prompt", "model_x"])
      await register(name, "float", 0.1);
    const all = await client().listVariables({ sessionId });
    expect(all.variables.map((v) => v.name)).toEqual([
      "model.temperature",
      "model.top_p",
      "model_x",
      "prompt",
    ]);
    const model = await client().listVariables({ sessionId, pattern: "model.*" });
    expect(model.variables.map((v) => v.name)).toEqual(["model.temperature", "model.top_p"]);
    const none = await client().listVariables({ sessionId, pattern: "x*" });
    expect(none.variables).toEqual([]);
  });

  it("answers an adversarial glob promptly and keeps serving other clients meanwhile", async () => {
    // Compiled to a RegExp with a lazy [^]*? per star, this pattern
    // backtracked for minutes against one long name, holding the event loop.
    const pattern = "*a*a*a*a*a*a*a*a*a*a*a*a*b";
    const long = "a".repeat(128);
    const matching = `${"a".repeat(127)}b`;
    await register(long, "float", 0.1);
    await register(matching, "float", 0.1);
    const other = bridge.client("grpc-web");
    await other.ping({}); // connects first: the latency below is of the call alone
    const started = performance.now();
    const [listed, pingMs] = await Promise.all([
      client().listVariables({ sessionId, pattern }),
      (async () => {
        const sent = performance.now();
        await other.ping({ message: "still there?" });
        return performance.now() - sent;
      })(),
    ]);
    const listMs = performance.now() - started;
    expect(listed.variables.map((v) => v.name)).toEqual([matching]);
    expect(pingMs).toBeLessThan(100);
    expect(listMs).toBeLessThan(2000);
  });

  it("deletes by name or id; the name can be registered again with a new id", async () => {
    const first = await register("d", "integer", 1);
    await client().deleteVariable({ sessionId, variableIdentifier: first.variableId });
    expect((await codeOf(client().getVariable({ sessionId, variableIdentifier: "d" }))).code).toBe(
      Code.NotFound,
    );
    expect(
      (await codeOf(client().deleteVariable({ sessionId, variableIdentifier: "d" }))).code,
    ).toBe(Code.NotFound);
    const second = await register("d", "integer", 2);
    expect(second.variableId).not.toBe(first.variableId);
    const old = await codeOf(
      client().getVariable({ sessionId, variableIdentifier: first.variableId }),
    );
    expect(old.code).toBe(Code.NotFound);
  });
});

describe("history and rollback", () => {
  it("keeps a bounded history, newest first", async () => {
    await register("h", "integer", 0);
    for (let v = 1; v <= 7; v++)
      await client().setVariable({
        sessionId,
        variableIdentifier: "h",
        value: any("integer", v * 10),
      });
    const all = await client().getVariableHistory({ sessionId, variableIdentifier: "h" });
    expect(all.entries.map((e) => e.version)).toEqual([7, 6, 5, 4, 3]);
    expect(all.entries.map((e) => decodeValue(e.value).value)).toEqual([70, 60, 50, 40, 30]);
    const two = await client().getVariableHistory({ sessionId, variableIdentifier: "h", limit: 2 });
    expect(two.entries.map((e) => e.version)).toEqual([7, 6]);
  });

  it("rolls back by writing the old value as a new version", async () => {
    await register("r", "string", "first");
    await client().setVariable({
      sessionId,
      variableIdentifier: "r",
      value: any("string", "second"),
    });
    const res = await client().rollbackVariable({
      sessionId,
      variableIdentifier: "r",
      targetVersion: 0,
    });
    expect(res.variable?.version).toBe(2);
    expect(valueIn(res.variable)).toBe("first");
    const gone = await codeOf(
      client().rollbackVariable({ sessionId, variableIdentifier: "r", targetVersion: 99 }),
    );
    expect(gone.code).toBe(Code.NotFound);
  });
});

describe("optimization lock", () => {
  it("refuses other writers while locked and lets the holder write", async () => {
    await register("lr", "float", 0.1);
    const start = await client().startOptimization({
      sessionId,
      variableIdentifier: "lr",
      optimizerId: "opt-1",
    });
    expect(start.optimizationId).not.toBe("");
    const { variable } = await client().getVariable({ sessionId, variableIdentifier: "lr" });
    expect(variable?.optimizationStatus?.optimizing).toBe(true);
    expect(variable?.optimizationStatus?.optimizerId).toBe("opt-1");

    const blocked = await codeOf(
      client().setVariable({ sessionId, variableIdentifier: "lr", value: any("float", 0.2) }),
    );
    expect(blocked.code).toBe(Code.FailedPrecondition);
    expect(blocked.message).toContain("opt-1");
    const other = await codeOf(
      client().startOptimization({ sessionId, variableIdentifier: "lr", optimizerId: "opt-2" }),
    );
    expect(other.code).toBe(Code.FailedPrecondition);
    expect(
      (await codeOf(client().deleteVariable({ sessionId, variableIdentifier: "lr" }))).code,
    ).toBe(Code.FailedPrecondition);

    const own = await client().setVariable({
      sessionId,
      variableIdentifier: "lr",
      value: any("float", 0.3),
      metadata: { optimizer_id: "opt-1" },
    });
    expect(own.newVersion).toBe(1);
    const wrongStop = await codeOf(
      client().stopOptimization({ sessionId, variableIdentifier: "lr", optimizerId: "opt-2" }),
    );
    expect(wrongStop.code).toBe(Code.FailedPrecondition);
    const stop = await client().stopOptimization({
      sessionId,
      variableIdentifier: "lr",
      optimizerId: "opt-1",
    });
    expect(decodeValue(stop.finalValue).value).toBe(0.3);
    const free = await client().setVariable({
      sessionId,
      variableIdentifier: "lr",
      value: any("float", 0.4),
    });
    expect(free.newVersion).toBe(2);
  });

  it("records the lock holder in the write's history, not in the variable's metadata", async () => {
    await register("m", "float", 0.1);
    await client().startOptimization({ sessionId, variableIdentifier: "m", optimizerId: "opt-9" });
    await client().setVariables({
      sessionId,
      updates: { m: any("float", 0.2) },
      metadata: { optimizer_id: "opt-9", trial: "3" },
    });
    const { variable } = await client().getVariable({ sessionId, variableIdentifier: "m" });
    expect(variable?.metadata).toEqual({ trial: "3" });
    const history = await client().getVariableHistory({
      sessionId,
      variableIdentifier: "m",
      limit: 1,
    });
    expect(history.entries[0]?.changedBy).toBe("opt-9");
    expect(history.entries[0]?.metadata).toEqual({ optimizer_id: "opt-9", trial: "3" });
  });

  it("lets force release someone else's lock", async () => {
    await register("x", "float", 0.1);
    await client().startOptimization({ sessionId, variableIdentifier: "x", optimizerId: "a" });
    await client().stopOptimization({
      sessionId,
      variableIdentifier: "x",
      optimizerId: "b",
      force: true,
    });
    const { variable } = await client().getVariable({ sessionId, variableIdentifier: "x" });
    expect(variable?.optimizationStatus?.optimizing).toBe(false);
  });
});

describe("dependencies", () => {
  it("records edges and rejects cycles", async () => {
    for (const n of ["a", "b", "c"]) await register(n, "integer", 0);
    await client().addDependency({
      sessionId,
      fromVariable: "a",
      toVariable: "b",
      dependencyType: "uses",
    });
    await client().addDependency({ sessionId, fromVariable: "b", toVariable: "c" });
    const cycle = await codeOf(
      client().addDependency({ sessionId, fromVariable: "c", toVariable: "a" }),
    );
    expect(cycle.code).toBe(Code.InvalidArgument);
    expect(cycle.message).toContain("cycle");
    const self = await codeOf(
      client().addDependency({ sessionId, fromVariable: "a", toVariable: "a" }),
    );
    expect(self.code).toBe(Code.InvalidArgument);
    const missing = await codeOf(
      client().addDependency({ sessionId, fromVariable: "a", toVariable: "zz" }),
    );
    expect(missing.code).toBe(Code.NotFound);
  });
});

describe("RegisterVariables (extension)", () => {
  it("registers what is missing and returns what exists, in one call", async () => {
    await register("a", "integer", 5);
    const res = await client().registerVariables({
      sessionId,
      ifAbsent: true,
      variables: [
        { name: "a", type: "integer", initialValue: any("integer", 1) },
        { name: "b", type: "float", initialValue: any("float", 0.5), constraintsJson: '{"max":1}' },
      ],
    });
    expect(res.created).toEqual(["b"]);
    expect(res.variables.map((v) => [v.name, valueIn(v)])).toEqual([
      ["a", 5],
      ["b", 0.5],
    ]);
  });

  it("is all or nothing, and checks the type of existing variables", async () => {
    await register("a", "integer", 5);
    const mismatch = await codeOf(
      client().registerVariables({
        sessionId,
        ifAbsent: true,
        variables: [
          { name: "c", type: "integer", initialValue: any("integer", 1) },
          { name: "a", type: "string", initialValue: any("string", "x") },
        ],
      }),
    );
    expect(mismatch.code).toBe(Code.InvalidArgument);
    expect(mismatch.message).toContain("exists with type integer");
    const exists = await codeOf(
      client().registerVariables({
        sessionId,
        variables: [{ name: "a", type: "integer", initialValue: any("integer", 1) }],
      }),
    );
    expect(exists.code).toBe(Code.AlreadyExists);
    const list = await client().listVariables({ sessionId });
    expect(list.variables.map((v) => v.name)).toEqual(["a"]);
  });
});
