/**
 * Hostile `pattern` constraints and non-finite floats, on a real server over
 * real sockets. A valid RE2 pattern used to cost (value length) × (program
 * size) per check on the shared event loop: `(?:a|ab|b){1000}c` against a
 * 128 KiB value held every other caller for 9.5 s. Patterns are now bounded
 * when registered and values when checked, and each refusal names its limit.
 */
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { createSessionContext } from "../../src/client/index.js";
import {
  decodeValue,
  encodeValue,
  MAX_PATTERN_REPEAT,
  PATTERN_CHECK_BUDGET,
} from "../../src/values/index.js";
import { bridgePerTest } from "../support/bridge.js";
import { rejectionOf } from "../support/errors.js";
import { pingsDuring } from "../support/pings.js";

const bridge = bridgePerTest();
const str = (s: string) => encodeValue("string", s).any;

/** `n` letters a/b from a fixed seed: input that keeps an NFA's threads alive. */
function randomAb(n: number): string {
  let seed = 12345;
  let out = "";
  for (let i = 0; i < n; i++) {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    out += seed < 1073741824 ? "a" : "b";
  }
  return out;
}

describe("pattern constraints", () => {
  it("refuses a pathological but valid pattern at registration, naming the limit", async () => {
    const b = await bridge();
    const client = b.client();
    const { sessionId } = await client.initializeSession({});
    const e = await rejectionOf(
      client.registerVariable({
        sessionId,
        name: "word",
        type: "string",
        initialValue: str("c"),
        constraintsJson: JSON.stringify({ pattern: "(?:a|ab|b){1000}c" }),
      }),
      Code.InvalidArgument,
    );
    expect(e.rawMessage).toContain(
      `pattern: repeat count 1000 exceeds the limit of ${MAX_PATTERN_REPEAT}`,
    );
    // Nested repeats, each allowed, multiply into a program over the limit.
    const nested = await rejectionOf(
      client.registerVariable({
        sessionId,
        name: "word",
        type: "string",
        initialValue: str("ab"),
        constraintsJson: JSON.stringify({ pattern: "(?:(?:ab){200}){100}" }),
      }),
      Code.InvalidArgument,
    );
    expect(nested.rawMessage).toContain("instructions; the limit is 1000");
    const { variables } = await client.listVariables({ sessionId });
    expect(variables).toHaveLength(0);
  });

  it("a pattern just under the limits checks its longest allowed value while other callers stay served", async () => {
    const b = await bridge();
    const client = b.client();
    const { sessionId } = await client.initializeSession({});
    // Repeat count just under the limit; one NFA thread per [ab] stays alive
    // on random a/b input, and re2js's DFA would make a state per character.
    const repeat = MAX_PATTERN_REPEAT - 6;
    const pattern = `a[ab]{${repeat}}c`;
    const instructions = repeat + 4;
    const longest = Math.floor(PATTERN_CHECK_BUDGET / instructions);
    // Matches only at its very end, so the check reads all of it.
    const matching = `c${randomAb(longest - 3 - repeat)}a${randomAb(repeat)}c`;
    expect(matching).toHaveLength(longest);
    await client.registerVariable({
      sessionId,
      name: "word",
      type: "string",
      initialValue: str(matching),
      constraintsJson: JSON.stringify({ pattern }),
    });

    // The most work one check may do: accepted, and Ping keeps answering.
    const allowed = await pingsDuring(b, () =>
      client.setVariable({ sessionId, variableIdentifier: "word", value: str(matching) }),
    );
    expect(allowed.outcome).toMatchObject({ status: "fulfilled", value: { newVersion: 1 } });
    expect(allowed.slowestPingMs).toBeLessThan(500);

    // 128 KiB of the same input: refused without matching, instead of a
    // multi-second stall.
    const huge = `c${randomAb(128 * 1024)}`;
    const refused = await pingsDuring(b, () =>
      client.setVariable({ sessionId, variableIdentifier: "word", value: str(huge) }),
    );
    expect(refused.slowestPingMs).toBeLessThan(500);
    expect(refused.outcome.status).toBe("rejected");
    const e = await rejectionOf(
      client.setVariable({ sessionId, variableIdentifier: "word", value: str(huge) }),
      Code.InvalidArgument,
    );
    expect(e.rawMessage).toBe(
      `variable 'word': length ${huge.length} is too long to check against pattern '${pattern}': it compiles to ${instructions} instructions, so values may have at most ${longest} characters (the limit is ${PATTERN_CHECK_BUDGET} characters × instructions)`,
    );
    const { variable } = await client.getVariable({ sessionId, variableIdentifier: "word" });
    expect(variable?.version).toBe(1);
  });

  it("the client refuses the same patterns locally, with the same message", async () => {
    const b = await bridge();
    const ctx = await createSessionContext({ transport: b.transport(), watch: false });
    try {
      const e = await rejectionOf(
        ctx.register("word", "string", "c", { constraints: { pattern: "(?:a|ab|b){1000}c" } }),
        Code.InvalidArgument,
      );
      expect(e.rawMessage).toContain(
        `pattern: repeat count 1000 exceeds the limit of ${MAX_PATTERN_REPEAT}`,
      );
      const { variables } = await b.client().listVariables({ sessionId: ctx.sessionId });
      expect(variables).toHaveLength(0);
    } finally {
      await ctx.close();
    }
  });
});

describe("floats with bounds", () => {
  it("refuse NaN and ±Infinity by default, and take them with allow_non_finite", async () => {
    const b = await bridge();
    const client = b.client();
    const { sessionId } = await client.initializeSession({});
    const float = (n: number) => encodeValue("float", n).any;
    await client.registerVariable({
      sessionId,
      name: "temperature",
      type: "float",
      initialValue: float(0.5),
      constraintsJson: '{"min":0,"max":1}',
    });
    const set = (name: string, n: number) =>
      client.setVariable({ sessionId, variableIdentifier: name, value: float(n) });
    const nan = await rejectionOf(set("temperature", Number.NaN), Code.InvalidArgument);
    expect(nan.rawMessage).toBe(
      "variable 'temperature': value NaN is not a finite number; set constraint 'allow_non_finite' to true to accept NaN and ±Infinity",
    );
    const inf = await rejectionOf(
      set("temperature", Number.POSITIVE_INFINITY),
      Code.InvalidArgument,
    );
    expect(inf.rawMessage).toBe("variable 'temperature': value Infinity is above maximum 1");
    const { variable } = await client.getVariable({ sessionId, variableIdentifier: "temperature" });
    expect(variable?.version).toBe(0);
    expect(variable?.constraintsJson).toBe('{"max":1,"min":0}');

    await client.registerVariable({
      sessionId,
      name: "loss",
      type: "float",
      initialValue: float(0.5),
      constraintsJson: '{"min":0,"max":1,"allow_non_finite":true}',
    });
    expect((await set("loss", Number.NaN)).newVersion).toBe(1);
    const loss = await client.getVariable({ sessionId, variableIdentifier: "loss" });
    if (loss.variable?.value === undefined) throw new Error("no value");
    expect(decodeValue(loss.variable.value).value).toBeNaN();
  });
});
