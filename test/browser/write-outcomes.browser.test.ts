/**
 * Honest write outcomes in Chromium (connect-web's fetch transport): a
 * write whose reply is lost after the bridge applied it (the page server
 * drops the page's connection once the bridge answered) is sent again
 * under its idempotency key and counted once, for a plain set and for a
 * compare-and-swap; a real conflict is still a refusal. Over connect-web's
 * Connect and gRPC-Web transports. The Node side of
 * the same cases, on all three protocols, is test/client/write-outcomes.test.ts.
 */
import type { Page } from "playwright-core";
import { describe, expect, it } from "vitest";
import { pageSuite } from "./page-suite.js";

const suite = pageSuite();

async function openPage(
  tab: string,
  transport: string,
): Promise<{ page: Page; sessionId: string }> {
  const page = await suite.open(`tab=${tab}&transport=${transport}`);
  const sessionId = await page.evaluate(() => window.app.open({ watch: false }));
  await page.evaluate(() => window.app.register("counter", "integer", 0));
  return { page, sessionId };
}

/** The stored versions of `counter`, oldest first, read past the page. */
async function history(sessionId: string): Promise<number[]> {
  const res = await suite.bridge
    .client()
    .getVariableHistory({ sessionId, variableIdentifier: "counter" });
  return res.entries.map((e) => e.version).reverse();
}

describe.each(["connect", "grpc-web"])(
  "write outcomes in Chromium over %s",
  { timeout: 30_000 },
  (transport) => {
    it("a set whose reply is lost after it was applied is sent again and applied once", async () => {
      const { page, sessionId } = await openPage(`lost-set-${transport}`, transport);
      suite.server.reset();
      const lost = suite.server.loseReply("SetVariable");
      const version = await page.evaluate(() => window.app.set("counter", 1));
      await lost;
      expect({
        version,
        // The first call and its resend: both reached the bridge.
        calls: suite.server.calls(`lost-set-${transport}`).SetVariable,
        history: await history(sessionId),
      }).toEqual({ version: 1, calls: 2, history: [0, 1] });
      await page.close();
    });

    it("a compare-and-swap whose reply is lost is not a conflict with itself, and counts once", async () => {
      const { page, sessionId } = await openPage(`lost-cas-${transport}`, transport);
      const lost = suite.server.loseReply("SetVariable");
      const result = await page.evaluate(() => window.app.setExpecting("counter", 1, 0));
      await lost;
      // The same compare-and-swap made again is a real conflict now.
      const again = await page.evaluate(() => window.app.setExpecting("counter", 2, 0));
      expect({ result, again, history: await history(sessionId) }).toEqual({
        result: 1,
        again: { code: "Aborted", outcome: "refused" },
        history: [0, 1],
      });
      await page.close();
    });
  },
);
