/**
 * Hostile callers against sessions, variables and watch streams, on a real
 * server over real sockets: floods stop at their limits with an error that
 * names the limit, while other sessions keep being served.
 *
 * (Over 400 lines: one case per limit, all on one shared server.)
 */
import http2 from "node:http2";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { WatchVariablesRequestSchema } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { decodeJsonAny, encodeJsonAny, encodeValue } from "../../src/values/index.js";
import { bridgePerTest, type RunningBridge } from "../support/bridge.js";
import { rejectionOf } from "../support/errors.js";
import { until, waitFor } from "../support/wait.js";

const bridge = bridgePerTest();
const str = (s: string) => encodeValue("string", s).any;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The value of one unlabelled gauge on the admin listener. */
async function gauge(b: RunningBridge, name: string): Promise<number> {
  const text = await fetch(`${b.adminUrl}/metrics`).then((r) => r.text());
  return Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1]);
}

/** Whether `probe` held within 5 s. */
async function eventually(probe: () => Promise<boolean>): Promise<boolean> {
  return waitFor(
    async () => {
      if (!(await probe())) throw new Error("not yet");
    },
    { timeoutMs: 5000, intervalMs: 50 },
  ).then(
    () => true,
    () => false,
  );
}

describe("session table fill", () => {
  it("caps client-chosen TTLs", async () => {
    const b = await bridge({ maxSessionTtlSeconds: 3600 });
    const e = await rejectionOf(
      b.client().initializeSession({ ttlSeconds: 7 * 24 * 3600 }),
      Code.InvalidArgument,
    );
    expect(e.rawMessage).toContain("--max-session-ttl");
    const ok = await b.client().initializeSession({ ttlSeconds: 3600 });
    expect(ok.created).toBe(true);
  });

  it("one client cannot fill the session table: its sessions stop at a quota, others go on", async () => {
    // The bridge trusts a proxy at 127.0.0.1 (as it would Envoy): clients are
    // told apart by the address the proxy forwards for.
    const b = await bridge({
      maxSessionsPerClient: 10,
      maxSessions: 25,
      trustedProxies: ["127.0.0.1"],
    });
    const as = (client: string) => ({ headers: { "x-forwarded-for": client } });
    const { sessionId: existing } = await b.client().initializeSession({}, as("198.51.100.1"));
    const attacker = as("203.0.113.66");
    const squatted: string[] = [];
    for (let i = 0; i < 10; i++) {
      squatted.push((await b.client("grpc").initializeSession({}, attacker)).sessionId);
    }
    const quota = await rejectionOf(
      b.client("grpc").initializeSession({}, attacker),
      Code.ResourceExhausted,
    );
    expect(quota.rawMessage).toContain("--max-sessions-per-client");
    // Another client still gets sessions, and existing ones keep working.
    const other = await b.client().initializeSession({}, as("198.51.100.2"));
    expect(other.created).toBe(true);
    await b.client().registerVariable({
      sessionId: existing,
      name: "x",
      type: "string",
      initialValue: str("still here"),
    });
    // The server-wide limit holds too, whoever asks.
    for (let i = 0; i < 13; i++) await b.client().initializeSession({}, as(`192.0.2.${i}`));
    const full = await rejectionOf(
      b.client().initializeSession({}, as("192.0.2.200")),
      Code.ResourceExhausted,
    );
    expect(full.rawMessage).toContain("session limit reached");
    expect(
      (await b.client().getVariable({ sessionId: existing, variableIdentifier: "x" })).variable
        ?.version,
    ).toBe(0);
    // A session that ends gives its places back (server-wide and the client's).
    await b.client().cleanupSession({ sessionId: squatted[0] as string });
    expect((await b.client().initializeSession({}, as("192.0.2.201"))).created).toBe(true);
    await b.client().cleanupSession({ sessionId: squatted[1] as string });
    expect((await b.client().initializeSession({}, attacker)).created).toBe(true);
  });

  it("x-forwarded-for from an untrusted peer is ignored", async () => {
    const b = await bridge({ maxSessionsPerClient: 3 });
    for (let i = 0; i < 3; i++) {
      await b.client().initializeSession({}, { headers: { "x-forwarded-for": `192.0.2.${i}` } });
    }
    await rejectionOf(
      b.client().initializeSession({}, { headers: { "x-forwarded-for": "192.0.2.99" } }),
      Code.ResourceExhausted,
    );
    // Workers are not public clients.
    expect((await b.workerClient().initializeSession({})).created).toBe(true);
  });
});

describe("session ids", () => {
  it("refuses short, blank and odd client-chosen ids", async () => {
    const c = (await bridge()).client();
    for (const id of ["a", " ", "\u0000", "x".repeat(15), "has space in it!!", "é".repeat(20)]) {
      const e = await rejectionOf(c.initializeSession({ sessionId: id }), Code.InvalidArgument);
      expect(e.rawMessage).toContain("16 to 256 characters");
    }
    const ok = await c.initializeSession({ sessionId: "a-long-enough-id_0001" });
    expect(ok.created).toBe(true);
  });

  it("reports an existing session honestly and refuses to hand over one with other settings", async () => {
    const c = (await bridge()).client();
    const id = "squatted-session-0001";
    // The squatter creates the id first, with every tool allowed and a long TTL.
    await c.initializeSession({ sessionId: id, ttlSeconds: 7000 });
    const asked = await rejectionOf(
      c.initializeSession({ sessionId: id, allowedTools: ["conversation_history"] }),
      Code.AlreadyExists,
    );
    expect(asked.rawMessage).toContain("exists with other settings");
    await rejectionOf(c.initializeSession({ sessionId: id, ttlSeconds: 60 }), Code.AlreadyExists);
    const reopened = await c.initializeSession({ sessionId: id });
    expect([reopened.success, reopened.created]).toEqual([true, false]);
  });

  it("with client-chosen ids off, public callers only reopen sessions; workers may still choose", async () => {
    const b = await bridge({ clientSessionIds: false });
    const c = b.client();
    const chosen = "client-chosen-session-1";
    const e = await rejectionOf(c.initializeSession({ sessionId: chosen }), Code.NotFound);
    expect(e.rawMessage).toContain("this server mints session ids");
    expect((await c.heartbeat({ sessionId: chosen })).sessionValid).toBe(false);
    const minted = await c.initializeSession({});
    const again = await c.initializeSession({ sessionId: minted.sessionId });
    expect([again.success, again.created]).toEqual([true, false]);
    const byWorker = await b.workerClient().initializeSession({ sessionId: chosen });
    expect(byWorker.created).toBe(true);
  });
});

describe("watch stream floods", () => {
  it("stop at the per-session and total limits; other sessions' watches still deliver", async () => {
    const b = await bridge({ maxWatchersPerSession: 5, maxWatchers: 8 });
    const c = b.client("grpc");
    const s1 = (await c.initializeSession({})).sessionId;
    const s2 = (await c.initializeSession({})).sessionId;
    const s3 = (await c.initializeSession({})).sessionId;
    for (const sessionId of [s1, s2, s3]) {
      await c.registerVariable({ sessionId, name: "v", type: "string", initialValue: str("0") });
    }
    const streams: AbortController[] = [];
    const open = async (sessionId: string) => {
      const abort = new AbortController();
      streams.push(abort);
      const it = c
        .watchVariables({ sessionId, syncMarker: true }, { signal: abort.signal })
        [Symbol.asyncIterator]();
      const first = await it.next();
      expect(first.value?.updateType).toBe("sync");
      return { it, abort };
    };
    try {
      for (let i = 0; i < 5; i++) await open(s1);
      const perSession = await rejectionOf(open(s1), Code.ResourceExhausted);
      expect(perSession.rawMessage).toContain("--max-watchers-per-session");
      const w2 = [await open(s2), await open(s2), await open(s2)];
      const total = await rejectionOf(open(s3), Code.ResourceExhausted);
      expect(total.rawMessage).toContain("--max-watchers");
      // The watches that exist keep working.
      await c.setVariable({ sessionId: s2, variableIdentifier: "v", value: str("1") });
      for (const w of w2) expect((await w.it.next()).value?.variable?.version).toBe(1);
      // Closing one frees a place.
      streams[0]?.abort();
      expect(await eventually(async () => (await gauge(b, "bridge_watchers")) === 7)).toBe(true);
      expect(await open(s3)).toBeDefined();
    } finally {
      for (const s of streams) s.abort();
    }
  });

  it("a watcher that stops reading and then resets its stream is removed at once", async () => {
    const b = await bridge();
    const c = b.client();
    const { sessionId } = await c.initializeSession({});
    await c.registerVariable({ sessionId, name: "big", type: "string", initialValue: str("") });
    // A raw HTTP/2 client that grants the server no flow-control window: the
    // first update the server writes never completes.
    const session = http2.connect(b.url, { settings: { initialWindowSize: 0 } });
    session.on("error", () => undefined);
    const message = toBinary(
      WatchVariablesRequestSchema,
      create(WatchVariablesRequestSchema, { sessionId, variableIdentifiers: ["big"] }),
    );
    const frame = Buffer.alloc(5 + message.length);
    frame.writeUInt32BE(message.length, 1);
    frame.set(message, 5);
    const stream = session.request({
      ":method": "POST",
      ":path": "/snakepit.bridge.BridgeService/WatchVariables",
      "content-type": "application/grpc",
      te: "trailers",
    });
    stream.on("error", () => undefined);
    stream.end(frame);
    try {
      expect(await eventually(async () => (await gauge(b, "bridge_watchers")) === 1)).toBe(true);
      const payload = "x".repeat(64 * 1024);
      for (let i = 0; i < 20; i++) {
        await c.setVariable({ sessionId, variableIdentifier: "big", value: str(`${i}${payload}`) });
      }
      // A negative check: nothing marks "the watcher was not dropped", so a
      // short wait gives a wrong drop the time to show.
      await sleep(100);
      expect(await gauge(b, "bridge_watchers")).toBe(1);
      stream.close(http2.constants.NGHTTP2_CANCEL);
      expect(await eventually(async () => (await gauge(b, "bridge_watchers")) === 0)).toBe(true);
      // The session goes on; new watchers are served.
      const it = c.watchVariables({ sessionId, syncMarker: true })[Symbol.asyncIterator]();
      expect((await it.next()).value?.updateType).toBe("sync");
      await it.return?.();
    } finally {
      session.destroy();
    }
  });
});

describe("tool calls", () => {
  it("run at most --max-tool-calls-per-session at once per session; other sessions are not held up", async () => {
    const b = await bridge({ maxToolCallsPerSession: 2 });
    // Calls run until the test lets them finish.
    let running = 0;
    let finish = () => {};
    const finished = new Promise<void>((resolve) => {
      finish = resolve;
    });
    b.server.registerTool({
      name: "slow",
      description: "Takes until the test lets it finish.",
      handler: async () => {
        running++;
        await finished;
        running--;
        return "done";
      },
    });
    const c = b.client("grpc");
    const { sessionId } = await c.initializeSession({});
    const other = (await c.initializeSession({})).sessionId;
    const first = [
      c.executeTool({ sessionId, toolName: "slow" }),
      c.executeTool({ sessionId, toolName: "slow" }),
    ];
    await until(() => running === 2, "the first two calls running");
    const third = c.executeTool({ sessionId, toolName: "slow" });
    // Settled (refused, as checked below) while the first two still run.
    const thirdSettled = third.then(
      () => undefined,
      () => undefined,
    );
    const elsewhere = c.executeTool({ sessionId: other, toolName: "slow" });
    await until(() => running === 3, "the other session's call running");
    await thirdSettled;
    finish();
    const results = await Promise.allSettled([...first, third, elsewhere]);
    expect(results.map((r) => r.status)).toEqual([
      "fulfilled",
      "fulfilled",
      "rejected",
      "fulfilled",
    ]);
    const refused = results[2] as PromiseRejectedResult;
    expect(String(refused.reason)).toContain("--max-tool-calls-per-session");
    // Once they finish, the session may call again.
    expect((await c.executeTool({ sessionId, toolName: "slow" })).success).toBe(true);
  });
});

describe("per-session bytes", () => {
  it("history of a 1 MiB value stays within its byte bound", async () => {
    const b = await bridge({ maxRequestBytes: 4 * 1024 * 1024 });
    const c = b.client("grpc");
    const { sessionId } = await c.initializeSession({});
    const mib = (i: number) => str(String(i % 10).repeat(1024 * 1024 - 16));
    await c.registerVariable({ sessionId, name: "blob", type: "string", initialValue: mib(0) });
    for (let i = 1; i <= 100; i++) {
      await c.setVariable({ sessionId, variableIdentifier: "blob", value: mib(i) });
    }
    const history = await c.getVariableHistory({ sessionId, variableIdentifier: "blob" });
    const pastBytes = history.entries
      .slice(1)
      .reduce((n, e) => n + (e.value?.value.length ?? 0), 0);
    expect(pastBytes).toBeLessThanOrEqual(1024 * 1024);
    expect(history.entries[0]?.version).toBe(100);
  });

  it("a session at its budget refuses writes, naming the limit, and keeps value and version", async () => {
    const b = await bridge({ maxSessionBytes: 3.5 * 1024 * 1024 });
    const c = b.client("grpc");
    const { sessionId } = await c.initializeSession({});
    const text = (n: number) => str("y".repeat(n));
    for (let i = 0; i < 3; i++) {
      await c.registerVariable({
        sessionId,
        name: `v${i}`,
        type: "string",
        initialValue: text(1e6),
      });
    }
    await c.registerVariable({ sessionId, name: "v3", type: "string", initialValue: text(6e5) });
    const register = await rejectionOf(
      c.registerVariable({ sessionId, name: "v4", type: "string", initialValue: text(1e6) }),
      Code.ResourceExhausted,
    );
    expect(register.rawMessage).toContain("--max-session-bytes");
    // Even with its own history given up, the larger value does not fit.
    const write = await rejectionOf(
      c.setVariable({ sessionId, variableIdentifier: "v3", value: text(1e6) }),
      Code.ResourceExhausted,
    );
    expect(write.rawMessage).toContain("--max-session-bytes");
    const v3 = (await c.getVariable({ sessionId, variableIdentifier: "v3" })).variable;
    expect(v3?.version).toBe(0);
    expect(v3?.value?.value.length).toBe(6e5 + 2);
    await rejectionOf(c.getVariable({ sessionId, variableIdentifier: "v4" }), Code.NotFound);
    // Another session is not affected.
    const other = (await c.initializeSession({})).sessionId;
    await c.registerVariable({
      sessionId: other,
      name: "ok",
      type: "string",
      initialValue: text(1e6),
    });
  });

  it("conversation_append refuses a message over the value limit and keeps the conversation", async () => {
    const b = await bridge({ maxRequestBytes: 8 * 1024 * 1024 });
    const c = b.client("grpc");
    const { sessionId } = await c.initializeSession({});
    const append = (content: string) =>
      c.executeTool({
        sessionId,
        toolName: "conversation_append",
        parameters: { role: encodeJsonAny("user"), content: encodeJsonAny(content) },
      });
    expect((await append("hello")).success).toBe(true);
    const huge = await append("x".repeat(3 * 1024 * 1024));
    expect(huge.success).toBe(false);
    expect(huge.errorMessage).toContain("--max-value-bytes");
    const history = await c.executeTool({ sessionId, toolName: "conversation_history" });
    expect(decodeJsonAny(history.result)).toMatchObject({ count: 1 });
  });
});

describe("glob patterns", () => {
  it("the adversarial pattern through export_variables does not hold the server", async () => {
    const b = await bridge();
    const c = b.client();
    const { sessionId } = await c.initializeSession({});
    await c.registerVariable({
      sessionId,
      name: "a".repeat(128),
      type: "string",
      initialValue: str(""),
    });
    const other = b.client("grpc");
    await other.ping({});
    const [chunks, pingMs] = await Promise.all([
      (async () => {
        const out = [];
        for await (const chunk of c.executeStreamingTool({
          sessionId,
          toolName: "export_variables",
          parameters: { pattern: encodeJsonAny("*a*a*a*a*a*a*a*a*a*a*a*a*b") },
        }))
          out.push(chunk);
        return out;
      })(),
      (async () => {
        const sent = performance.now();
        await other.ping({});
        return performance.now() - sent;
      })(),
    ]);
    expect(chunks.map((ch) => ch.isFinal)).toEqual([true]);
    expect(JSON.parse(new TextDecoder().decode(chunks[0]?.data))).toEqual({ count: 0 });
    expect(pingMs).toBeLessThan(100);
  });
});

describe("work per request", () => {
  it("a request naming more variables than a session can hold is refused up front", async () => {
    const b = await bridge({ maxVariablesPerSession: 100 });
    const c = b.client("grpc");
    const { sessionId } = await c.initializeSession({});
    const names = Array.from({ length: 5000 }, (_, i) => `k${i}`);
    const updates = Object.fromEntries(names.map((n) => [n, str("v")]));
    for (const call of [
      c.setVariables({ sessionId, updates }),
      c.getVariables({ sessionId, variableIdentifiers: names }),
      c.registerVariables({
        sessionId,
        variables: names.map((name) => ({ name, type: "string", initialValue: str("v") })),
      }),
    ]) {
      const e = await rejectionOf(call, Code.InvalidArgument);
      expect(e.rawMessage).toContain("--max-variables-per-session");
    }
    const watch = c.watchVariables({ sessionId, variableIdentifiers: names });
    await rejectionOf(
      (async () => {
        for await (const _ of watch) break;
      })(),
      Code.InvalidArgument,
    );
    await rejectionOf(
      c.initializeSession({ allowedTools: Array.from({ length: 2000 }, (_, i) => `t${i}`) }),
      Code.InvalidArgument,
    );
  });

  it("dependency edges are bounded, so the cycle check stays cheap", async () => {
    const b = await bridge({ maxVariablesPerSession: 10 });
    const c = b.client("grpc");
    const { sessionId } = await c.initializeSession({});
    for (let i = 0; i < 10; i++) {
      await c.registerVariable({ sessionId, name: `v${i}`, type: "string", initialValue: str("") });
    }
    let added = 0;
    let refused: unknown;
    // Edges from lower to higher index never close a cycle: 45 candidates.
    for (let i = 0; i < 10 && refused === undefined; i++) {
      for (let j = i + 1; j < 10 && refused === undefined; j++) {
        refused = await c
          .addDependency({ sessionId, fromVariable: `v${i}`, toVariable: `v${j}` })
          .then(
            () => {
              added++;
            },
            (e: unknown) => e,
          );
      }
    }
    expect(added).toBe(40);
    expect(String(refused)).toContain("the limit is 40");
  });
});
