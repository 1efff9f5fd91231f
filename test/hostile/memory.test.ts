/**
 * Hostile callers against the server's memory, on a real server over real
 * sockets: one client's sessions are bounded in bytes together, not only in
 * number; the process refuses growth above its memory budget while reads go
 * on; and one request cannot buy unbounded pattern-matching time with a
 * batch of values each within its own check's limit.
 */
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { memoryInUse } from "../../src/server/limits/memory-budget.js";
import { PATTERN_REQUEST_BUDGET } from "../../src/server/session/variable-batch.js";
import { encodeValue, MAX_PATTERN_REPEAT, PATTERN_CHECK_BUDGET } from "../../src/values/index.js";
import { bridgePerTest, type RunningBridge } from "../support/bridge.js";
import { rejectionOf } from "../support/errors.js";
import { pingsDuring } from "../support/pings.js";
import { startRedis, type TestRedis } from "../support/redis-server.js";
import { replicasPerTest } from "../support/replicas.js";
import { until } from "../support/wait.js";

const bridge = bridgePerTest();
const MiB = 1024 * 1024;
const str = (s: string) => encodeValue("string", s).any;
/** As a client behind a trusted proxy at 127.0.0.1 (as behind Envoy). */
const as = (client: string) => ({ headers: { "x-forwarded-for": client } });

/** `n` letters a/b from a fixed seed: input that keeps an NFA's threads alive. */
function randomAb(n: number, seed = 12345): string {
  let out = "";
  for (let i = 0; i < n; i++) {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    out += seed < 1073741824 ? "a" : "b";
  }
  return out;
}

/** The garbage collector, to see the memory the server holds without waiting for one. */
function collector(): () => void {
  setFlagsFromString("--expose-gc");
  return runInNewContext("gc") as () => void;
}

describe("bytes per client", () => {
  it("one client filling sessions stops at its byte budget across them, while another is served", async () => {
    const b = await bridge({
      maxBytesPerClient: 4 * MiB,
      maxSessionBytes: 2 * MiB,
      trustedProxies: ["127.0.0.1"],
      memoryBudget: 0,
    });
    const attacker = as("203.0.113.66");
    const client = b.client();
    const value = str("x".repeat(500_000));
    // Each session holds 3 values (1.5 MB), so the budget runs out in the
    // third session while the session quota (256) is far away.
    const sessions: string[] = [];
    let accepted = 0;
    let refusal: Error | undefined;
    for (let s = 0; s < 8 && refusal === undefined; s++) {
      const { sessionId } = await client.initializeSession({}, attacker);
      sessions.push(sessionId);
      for (let i = 0; i < 3; i++) {
        try {
          await client.registerVariable(
            { sessionId, name: `v${i}`, type: "string", initialValue: value },
            attacker,
          );
          accepted++;
        } catch (e) {
          refusal = e as Error;
          break;
        }
      }
    }
    const e = await rejectionOf(
      client.registerVariable(
        { sessionId: sessions.at(-1) as string, name: "more", type: "string", initialValue: value },
        attacker,
      ),
      Code.ResourceExhausted,
    );
    expect(e.rawMessage).toContain("(--max-bytes-per-client)");
    expect(e.rawMessage).toContain("the limit is 4 MiB");
    // 8 values of 500,000 bytes fit in 4 MiB, the 9th does not.
    expect(accepted).toBe(8);
    expect(sessions).toHaveLength(3);

    // Another client is served in full.
    const other = as("198.51.100.2");
    const { sessionId: theirs } = await client.initializeSession({}, other);
    for (let i = 0; i < 3; i++) {
      await client.registerVariable(
        { sessionId: theirs, name: `v${i}`, type: "string", initialValue: value },
        other,
      );
    }
    // Ending one of its sessions gives the attacker room again.
    await client.cleanupSession({ sessionId: sessions[0] as string }, attacker);
    await client.registerVariable(
      { sessionId: sessions.at(-1) as string, name: "more", type: "string", initialValue: value },
      attacker,
    );
  });

  it("a client at its byte budget gets no new session", async () => {
    const b = await bridge({
      maxBytesPerClient: 1 * MiB,
      trustedProxies: ["127.0.0.1"],
      memoryBudget: 0,
    });
    const attacker = as("203.0.113.66");
    const client = b.client();
    const { sessionId } = await client.initializeSession({}, attacker);
    // Fill the budget to the byte: one big value, then ever smaller ones
    // until a one-byte value no longer fits.
    await client.registerVariable(
      { sessionId, name: "big", type: "string", initialValue: str("x".repeat(1000 * 1000)) },
      attacker,
    );
    let i = 0;
    for (let fill = 16 * 1024; fill >= 1; fill = Math.floor(fill / 2)) {
      for (;;) {
        const ok = await client
          .registerVariable(
            { sessionId, name: `f${i++}`, type: "string", initialValue: str("y".repeat(fill)) },
            attacker,
          )
          .then(
            () => true,
            () => false,
          );
        if (!ok) break;
      }
    }
    const { variables } = await client.listVariables({ sessionId }, attacker);
    expect(variables.length).toBeGreaterThan(1);
    // A one-byte value fitted last: the client's sessions hold exactly its
    // budget. Neither a byte more nor a new session is granted.
    const e = await rejectionOf(
      client.registerVariable(
        { sessionId, name: "last", type: "string", initialValue: str("z") },
        attacker,
      ),
      Code.ResourceExhausted,
    );
    expect(e.rawMessage).toContain("the limit is 1 MiB (--max-bytes-per-client)");
    const full = await rejectionOf(client.initializeSession({}, attacker), Code.ResourceExhausted);
    expect(full.rawMessage).toBe(
      "this client's sessions hold 1 MiB; the limit is 1 MiB (--max-bytes-per-client): delete values or sessions it no longer uses (CleanupSession) or let them expire",
    );
    expect((await client.initializeSession({}, as("198.51.100.2"))).created).toBe(true);
  });
});

describe("bytes per client on replicas sharing Redis", () => {
  let redis: TestRedis;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis?.stop();
  });
  const replicaOf = replicasPerTest(() => redis.url);

  it("the budget holds across replicas, and what one replica frees the other grants", async () => {
    const replica = () =>
      replicaOf({
        keyPrefix: "bytes:",
        bridge: { maxBytesPerClient: 4 * MiB, trustedProxies: ["127.0.0.1"], memoryBudget: 0 },
      });
    const [one, two] = await Promise.all([replica(), replica()]);
    const attacker = as("203.0.113.77");
    const value = str("x".repeat(500_000));
    const replicas = [one.bridge, two.bridge];
    // Sessions on alternating replicas, values written on the other one.
    const sessions: string[] = [];
    for (let s = 0; s < 4; s++) {
      const on = replicas[s % 2] as RunningBridge;
      sessions.push((await on.client().initializeSession({}, attacker)).sessionId);
    }
    let accepted = 0;
    for (let i = 0; i < 8; i++) {
      const on = replicas[(i + 1) % 2] as RunningBridge;
      await on.client().registerVariable(
        {
          sessionId: sessions[i % 4] as string,
          name: `v${i}`,
          type: "string",
          initialValue: value,
        },
        attacker,
      );
      accepted++;
    }
    expect(accepted).toBe(8);
    for (const on of replicas) {
      const e = await rejectionOf(
        on.client().registerVariable(
          {
            sessionId: sessions[0] as string,
            name: "more",
            type: "string",
            initialValue: value,
          },
          attacker,
        ),
        Code.ResourceExhausted,
      );
      expect(e.rawMessage).toContain("the limit is 4 MiB (--max-bytes-per-client)");
    }
    // Another client is served on either replica.
    const other = as("198.51.100.3");
    const { sessionId: theirs } = await two.bridge.client().initializeSession({}, other);
    await one.bridge
      .client()
      .registerVariable(
        { sessionId: theirs, name: "v", type: "string", initialValue: value },
        other,
      );
    // A deleted variable (on one replica) and an ended session (on the
    // other) give the bytes back.
    await one.bridge
      .client()
      .deleteVariable({ sessionId: sessions[1] as string, variableIdentifier: "v1" }, attacker);
    await two.bridge
      .client()
      .registerVariable(
        { sessionId: sessions[0] as string, name: "more", type: "string", initialValue: value },
        attacker,
      );
    await rejectionOf(
      one.bridge.client().registerVariable(
        {
          sessionId: sessions[0] as string,
          name: "more2",
          type: "string",
          initialValue: value,
        },
        attacker,
      ),
      Code.ResourceExhausted,
    );
    await two.bridge.client().cleanupSession({ sessionId: sessions[2] as string }, attacker);
    await one.bridge
      .client()
      .registerVariable(
        { sessionId: sessions[0] as string, name: "more2", type: "string", initialValue: value },
        attacker,
      );
  });
});

describe("memory budget", () => {
  it("above the budget growth is refused with the flag's name, reads go on, and writes come back once memory drops", async () => {
    const gc = collector();
    gc();
    const budget = memoryInUse() + 48 * MiB;
    // Real memory first; then held over the budget (a collection the test
    // does not control could otherwise take the garbage that tipped it).
    let held: number | undefined;
    const b = await bridge({
      memoryBudget: budget,
      maxBytesPerClient: 2 ** 31,
      memorySample: () => held ?? memoryInUse(),
    });
    const client = b.client();
    const big = str("m".repeat(1000 * 1000));
    const sessions: string[] = [];
    let refusal: { code: Code; rawMessage: string } | undefined;
    let written = 0;
    const refused = (e: { code: Code; rawMessage: string }) => {
      refusal = e;
    };
    // Each session takes 14 values of ~1 MB (under --max-session-bytes).
    // The budget may be reached at a new session as well as at a value.
    for (let n = 0; n < 200 && refusal === undefined; n++) {
      if (n % 14 === 0) {
        const opened = await client.initializeSession({}).then((r) => r.sessionId, refused);
        if (opened === undefined) break;
        sessions.push(opened);
      }
      await client
        .registerVariable({
          sessionId: sessions.at(-1) as string,
          name: `v${n}`,
          type: "string",
          initialValue: big,
        })
        .then(() => written++, refused);
    }
    expect(refusal?.code).toBe(Code.ResourceExhausted);
    expect(refusal?.rawMessage).toContain("the server is at its memory budget (--memory-budget");
    expect(refusal?.rawMessage).toContain("try again later");
    // It stopped near the budget, not at the end of the loop.
    expect(written).toBeGreaterThan(4);
    expect(written).toBeLessThan(120);

    held = budget + 8 * MiB;
    const sampled = async () => {
      const health = (await fetch(`${b.adminUrl}/healthz`).then((r) => r.json())) as {
        memory: { used: number };
      };
      return health.memory.used === held;
    };
    await until(sampled, "the held figure sampled");
    // Reads keep working; new sessions and small growth are refused.
    const first = sessions[0] as string;
    const read = await client.getVariable({ sessionId: first, variableIdentifier: "v0" });
    expect(read.variable?.name).toBe("v0");
    const e = await rejectionOf(client.initializeSession({}), Code.ResourceExhausted);
    expect(e.rawMessage).toContain("--memory-budget");
    await rejectionOf(
      client.registerVariable({
        sessionId: first,
        name: "tiny",
        type: "string",
        initialValue: str("t"),
      }),
      Code.ResourceExhausted,
    );
    // The admin listener says so.
    const healthz = await fetch(`${b.adminUrl}/healthz`);
    const health = (await healthz.json()) as {
      status: string;
      memory: { state: string; budget: number; used: number };
    };
    expect(healthz.status).toBe(200);
    expect(health.status).toBe("ok");
    expect(health.memory).toMatchObject({ state: "over_budget", budget });
    expect(health.memory.used).toBeGreaterThan(budget);
    const metrics = await fetch(`${b.adminUrl}/metrics`).then((r) => r.text());
    expect(metrics).toMatch(new RegExp(`^bridge_memory_budget_bytes ${budget}$`, "m"));

    // Ending sessions shrinks: allowed. Once the memory is freed, growth
    // is served again.
    for (const sessionId of sessions) await client.cleanupSession({ sessionId });
    held = undefined;
    gc();
    await until(
      () =>
        client.initializeSession({}).then(
          () => true,
          () => false,
        ),
      "new sessions to be served again once the memory was freed",
    );
    // A 1 MB write, too, once the collector has given back enough (the
    // process's heap also holds other suites' garbage; a new session may
    // fit under the budget a moment before a megabyte does).
    const { sessionId } = await client.initializeSession({});
    await until(
      () =>
        client
          .registerVariable({ sessionId, name: "back", type: "string", initialValue: big })
          .then(
            () => true,
            (e: { code: Code }) => {
              if (e.code !== Code.ResourceExhausted) throw e;
              gc();
              return false;
            },
          ),
      "a 1 MB write to be served again once the memory was freed",
    );
  });
});

describe("pattern work per request", () => {
  // Repeat count just under the limit: one NFA thread per [ab] stays alive
  // on random a/b input, so each check costs about its whole budget.
  const repeat = MAX_PATTERN_REPEAT - 6;
  const pattern = `a[ab]{${repeat}}c`;
  const instructions = repeat + 4;
  const longest = Math.floor(PATTERN_CHECK_BUDGET / instructions);
  const shortest = `a${randomAb(repeat)}c`;
  /** A value of the longest length a check allows, matching only at its end. */
  const atLimit = (seed: number) =>
    `c${randomAb(longest - 3 - repeat, seed)}a${randomAb(repeat, seed + 1)}c`;

  async function patternedSession(b: RunningBridge, count: number): Promise<string> {
    const client = b.client();
    const { sessionId } = await client.initializeSession({});
    // Registered in requests well within the per-request budget.
    for (let i = 0; i < count; i += 20) {
      await client.registerVariables({
        sessionId,
        variables: Array.from({ length: Math.min(20, count - i) }, (_, k) => ({
          name: `p${i + k}`,
          type: "string",
          initialValue: str(shortest),
          constraintsJson: JSON.stringify({ pattern }),
        })),
      });
    }
    return sessionId;
  }

  it("a batch of patterned values over the request budget is refused before any check, and Ping stays fast", async () => {
    const b = await bridge();
    const count = 1000;
    const sessionId = await patternedSession(b, count);
    const updates = Object.fromEntries(
      Array.from({ length: count }, (_, i) => [`p${i}`, str(atLimit(i + 7))]),
    );
    const flood = await pingsDuring(b, () =>
      b.client().setVariables({ sessionId, updates, atomic: false }),
    );
    expect(flood.outcome.status).toBe("rejected");
    const e = (flood.outcome as PromiseRejectedResult).reason as {
      code: Code;
      rawMessage: string;
    };
    expect(e.code).toBe(Code.ResourceExhausted);
    expect(e.rawMessage).toContain(`a request may cost at most ${PATTERN_REQUEST_BUDGET}`);
    // Checking them all would hold the event loop for seconds; refusing
    // them takes a few milliseconds (generous margin for a shared machine).
    expect(flood.slowestPingMs).toBeLessThan(250);
    expect(flood.workMs).toBeLessThan(500);
    const { variable } = await b.client().getVariable({ sessionId, variableIdentifier: "p0" });
    expect(variable?.version).toBe(0);

    // RegisterVariables and initial_variables are held to the same budget.
    const registrations = Array.from({ length: count }, (_, i) => ({
      name: `q${i}`,
      type: "string",
      initialValue: str(atLimit(i + 300)),
      constraintsJson: JSON.stringify({ pattern }),
    }));
    const reg = await rejectionOf(
      b.client().registerVariables({ sessionId, variables: registrations }),
      Code.ResourceExhausted,
    );
    expect(reg.rawMessage).toContain("RegisterVariables of 1000 variables");
    const init = await rejectionOf(
      b.client().initializeSession({ initialVariables: registrations }),
      Code.ResourceExhausted,
    );
    expect(init.rawMessage).toContain("initial_variables of 1000 variables");
  });

  it("a batch within the request budget is checked and written", async () => {
    const b = await bridge();
    const within = Math.floor(PATTERN_REQUEST_BUDGET / (longest * instructions));
    const sessionId = await patternedSession(b, within);
    const updates = Object.fromEntries(
      Array.from({ length: within }, (_, i) => [`p${i}`, str(atLimit(i + 7))]),
    );
    const reply = await b.client().setVariables({ sessionId, updates, atomic: true });
    expect(reply.success).toBe(true);
    const { variable } = await b.client().getVariable({ sessionId, variableIdentifier: "p0" });
    expect(variable?.version).toBe(1);
  });
});
