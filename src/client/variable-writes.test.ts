import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { thrownBy } from "../../test/support/errors.js";
import { loadedPatternEngine } from "../values/pattern-engine.js";
import { declare, patternsReady } from "./variable-writes.js";

// Nothing in this file's module graph loads re2js up front, as in a page.

describe("declaring variables with patterns on a client", () => {
  it("loads the pattern engine only for a declaration with a pattern, then checks it here", async () => {
    await patternsReady([{ constraints: { min: 0, max: 2 } }, {}]);
    expect(loadedPatternEngine()).toBeUndefined();

    await patternsReady([{ constraints: { min_length: 1 } }, { constraints: { pattern: "^a+$" } }]);
    expect(loadedPatternEngine()).toBeDefined();
    // Refused without a round trip, as the server would refuse it.
    const refusal = thrownBy(
      () => declare("code", "string", "b", { constraints: { pattern: "^a+$" } }, 1024),
      Code.InvalidArgument,
    );
    expect(refusal.rawMessage).toBe("variable 'code': does not match pattern '^a+$'");
  });
});
