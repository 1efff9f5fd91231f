import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import {
  decodeJsonAny,
  decodeValue,
  encodeJsonAny,
  encodeValue,
  type JsonValue,
} from "../../src/values/index.js";
import { bridgePerTest } from "../support/bridge.js";
import { rejectionOf } from "../support/errors.js";

const startBridge = bridgePerTest();
const KiB = 1024;
const text = (bytes: number, fill = "x") => fill.repeat(bytes);
const any = (value: string) => encodeValue("string", value).any;
const valueIn = (v: { value?: Parameters<typeof decodeValue>[0] } | undefined) =>
  decodeValue(v?.value).value;
const params = (o: Record<string, JsonValue>) =>
  Object.fromEntries(Object.entries(o).map(([k, v]) => [k, encodeJsonAny(v)]));

describe("history bounded in bytes", () => {
  it("keeps the history of a 256 KiB value written 50 times within historyMaxBytes", async () => {
    const bridge = await startBridge({ historyMaxBytes: 1024 * KiB });
    const c = bridge.client("grpc");
    const { sessionId } = await c.initializeSession({});
    await c.registerVariable({ sessionId, name: "big", type: "string", initialValue: any("") });
    for (let i = 1; i <= 50; i++) {
      await c.setVariable({
        sessionId,
        variableIdentifier: "big",
        value: any(text(256 * KiB, String.fromCharCode(64 + (i % 26)))),
      });
    }
    const { entries } = await c.getVariableHistory({ sessionId, variableIdentifier: "big" });
    // Newest first; the first entry is the current version.
    const [current, ...past] = entries;
    expect(current?.version).toBe(50);
    const pastBytes = past.reduce((sum, e) => sum + (valueIn(e) as string).length, 0);
    expect(pastBytes).toBeLessThanOrEqual(1024 * KiB);
    // Exactly four past versions fit, the newest ones, with their own values.
    expect(past.map((e) => e.version)).toEqual([49, 48, 47, 46]);
    expect((valueIn(past[0]) as string)[0]).toBe(String.fromCharCode(64 + (49 % 26)));
  });
});

describe("the session byte budget", () => {
  const limits = { maxSessionBytes: 64 * KiB, maxValueBytes: 48 * KiB };

  /** A session on a bridge with those limits, holding "a" and "b" of 30 KiB each. */
  const twoOf30KiB = async () => {
    const bridge = await startBridge(limits);
    const c = bridge.client("grpc");
    const { sessionId } = await c.initializeSession({});
    for (const name of ["a", "b"]) {
      await c.registerVariable({
        sessionId,
        name,
        type: "string",
        initialValue: any(text(30 * KiB)),
      });
    }
    return { c, sessionId };
  };

  it("refuses a write over the budget, leaving value and version, while other sessions write on", async () => {
    const { c, sessionId } = await twoOf30KiB();
    const refused = await rejectionOf(
      c.setVariable({ sessionId, variableIdentifier: "a", value: any(text(40 * KiB, "y")) }),
      Code.ResourceExhausted,
    );
    expect(refused.rawMessage).toBe(
      "session would hold 70 KiB with variable 'a'; the limit is 64 KiB (--max-session-bytes)",
    );
    const { variable } = await c.getVariable({ sessionId, variableIdentifier: "a" });
    expect(variable?.version).toBe(0);
    expect(valueIn(variable)).toBe(text(30 * KiB));

    // Another session has a budget of its own and keeps writing.
    const other = (await c.initializeSession({})).sessionId;
    await c.registerVariable({
      sessionId: other,
      name: "a",
      type: "string",
      initialValue: any(text(40 * KiB)),
    });
    for (let i = 1; i <= 5; i++) {
      const res = await c.setVariable({
        sessionId: other,
        variableIdentifier: "a",
        value: any(text(40 * KiB, String(i))),
      });
      expect(res.success).toBe(true);
    }
    // The first session still takes writes that fit.
    const small = await c.setVariable({ sessionId, variableIdentifier: "a", value: any("small") });
    expect(small.success).toBe(true);
  });

  it("fails an atomic batch over the budget as a whole", async () => {
    const { c, sessionId } = await twoOf30KiB();
    // "a" alone fits; "b" then does not, so neither applies.
    const res = await c.setVariables({
      sessionId,
      atomic: true,
      updates: { a: any("small"), b: any(text(40 * KiB)) },
    });
    expect(res.success).toBe(false);
    expect(res.errorCodes).toEqual({ b: Code.ResourceExhausted });
    expect(res.errors.b).toContain("--max-session-bytes");
    expect(res.newVersions).toEqual({});
    const { variables } = await c.getVariables({ sessionId, variableIdentifiers: ["a", "b"] });
    expect(Object.values(variables).map((v) => v.version)).toEqual([0, 0]);
  });

  it("reports the key over the budget in a non-atomic batch and applies the others", async () => {
    const { c, sessionId } = await twoOf30KiB();
    const res = await c.setVariables({
      sessionId,
      atomic: false,
      updates: { a: any("small"), b: any(text(40 * KiB)) },
    });
    expect(res.newVersions).toEqual({ a: 1 });
    expect(res.errorCodes).toEqual({ b: Code.ResourceExhausted });
    expect(res.errors.b).toContain("--max-session-bytes");
    const { variable } = await c.getVariable({ sessionId, variableIdentifier: "b" });
    expect(variable?.version).toBe(0);
  });
});

describe("tool data bounded", () => {
  const append = (
    bridge: Awaited<ReturnType<typeof startBridge>>,
    sessionId: string,
    content: string,
    max = 100,
  ) =>
    bridge.client().executeTool({
      sessionId,
      toolName: "conversation_append",
      parameters: params({ role: "user", content, max_messages: max }),
    });
  const history = async (bridge: Awaited<ReturnType<typeof startBridge>>, sessionId: string) => {
    const res = await bridge.client().executeTool({
      sessionId,
      toolName: "conversation_history",
      parameters: {},
    });
    return (decodeJsonAny(res.result) as { messages: { content: string }[] }).messages.map(
      (m) => m.content,
    );
  };

  it("refuses a message over the value limit in-band and keeps the history", async () => {
    const bridge = await startBridge({ maxValueBytes: 4 * KiB });
    const { sessionId } = await bridge.client().initializeSession({});
    expect((await append(bridge, sessionId, "hello")).success).toBe(true);
    const res = await append(bridge, sessionId, text(5 * KiB));
    expect(res.success).toBe(false);
    expect(res.errorMessage).toMatch(
      /^the message is 5\.1 KiB as JSON; a conversation may hold at most 4 KiB \(--max-value-bytes\): send a shorter message$/,
    );
    expect(await history(bridge, sessionId)).toEqual(["hello"]);
  });

  it("refuses a message that would take the conversation over the limit, saying what to do", async () => {
    const bridge = await startBridge({ maxValueBytes: 4 * KiB });
    const { sessionId } = await bridge.client().initializeSession({});
    for (const fill of ["a", "b"]) {
      expect((await append(bridge, sessionId, text(1500, fill))).success).toBe(true);
    }
    const res = await append(bridge, sessionId, text(1500, "c"));
    expect(res.success).toBe(false);
    expect(res.errorMessage).toContain("the conversation would exceed its limit");
    expect(res.errorMessage).toContain("(--max-value-bytes)");
    expect(res.errorMessage).toContain("lower max_messages");
    expect(await history(bridge, sessionId)).toEqual([text(1500, "a"), text(1500, "b")]);
    // Doing what the message says works.
    expect((await append(bridge, sessionId, text(1500, "c"), 2)).success).toBe(true);
    expect(await history(bridge, sessionId)).toEqual([text(1500, "b"), text(1500, "c")]);
  });

  it("counts the conversation in the session budget", async () => {
    const bridge = await startBridge({ maxValueBytes: 4 * KiB, maxSessionBytes: 8 * KiB });
    const c = bridge.client();
    const { sessionId } = await c.initializeSession({});
    for (const name of ["a", "b"]) {
      await c.registerVariable({
        sessionId,
        name,
        type: "string",
        initialValue: any(text(3 * KiB)),
      });
    }
    const res = await append(bridge, sessionId, text(2500));
    expect(res.success).toBe(false);
    expect(res.errorMessage).toContain("(--max-session-bytes)");
    expect(await history(bridge, sessionId)).toEqual([]);
    // Freeing room lets it through.
    await c.deleteVariable({ sessionId, variableIdentifier: "a" });
    expect((await append(bridge, sessionId, text(2500))).success).toBe(true);
  });
});
