import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { thrownBy } from "../../test/support/errors.js";
import { checkValue } from "./check-value.js";
import { parseConstraints } from "./constraints.js";
import { loadedPatternEngine, loadPatternEngine } from "./pattern-engine.js";

// Each test file has its own module graph: nothing here has loaded re2js
// before the first test runs, as in a browser page that has not met a
// pattern yet. The steps share that state, so they are one test.

const refusal = (pattern: string) =>
  thrownBy(() => parseConstraints("string", { pattern }), Code.InvalidArgument).rawMessage;

describe("the pattern engine, loaded on first need", () => {
  it("defers a client's first patterns, then checks them exactly once re2js has loaded", async () => {
    expect(loadedPatternEngine()).toBeUndefined();

    // What the text alone shows is refused without the engine.
    expect(refusal("x{300}")).toBe("pattern: repeat count 300 exceeds the limit of 256");

    const constraints = parseConstraints("string", { pattern: "^[a-z]+$" });
    const pattern = constraints.rules.pattern;
    if (pattern === undefined) throw new Error("no pattern");
    // Not loaded yet: the check is left to the server, never refused wrongly.
    expect(pattern.deferred).toBe(true);
    expect(checkValue("string", "ABC", constraints)).toEqual({ ok: true, value: "ABC" });
    // Bad syntax needs the engine to be seen.
    const broken = parseConstraints("string", { pattern: "(unclosed" });

    // Parsing started the load; the same constraints now check for real.
    await loadPatternEngine();
    expect(pattern.deferred).toBe(false);
    expect(pattern.instructions).toBe(6);
    expect(checkValue("string", "ABC", constraints)).toEqual({
      ok: false,
      message: "does not match pattern '^[a-z]+$'",
    });
    expect(checkValue("string", "abc", constraints)).toEqual({ ok: true, value: "abc" });
    // The deferred bad pattern is refused at its first use...
    expect(
      thrownBy(() => checkValue("string", "x", broken), Code.InvalidArgument).rawMessage,
    ).toMatch(/^invalid pattern '\(unclosed': missing closing \)/);
    // ...and a new parse refuses it at once, as the server does.
    expect(refusal("(unclosed")).toMatch(/^invalid pattern '\(unclosed': missing closing \)/);
  });
});
