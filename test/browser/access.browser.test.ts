/**
 * Access tokens in Chromium (connect-web's Connect and gRPC-Web
 * transports) against a bridge in tokens mode: a page that created a
 * session holds its owner token and mints a viewer token; a page opened
 * with that token reads the variables, follows changes through its watch
 * stream, and gets an AccessError naming the editor role when it writes,
 * which changes nothing.
 */
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { decodeValue, encodeValue } from "../../src/values/index.js";
import { pageSuite } from "./page-suite.js";

const suite = pageSuite({
  bridge: { access: "tokens", tokenKeys: [randomBytes(32).toString("base64")] },
});

describe.each(["connect", "grpc-web"])(
  "a viewer token in Chromium over %s",
  { timeout: 30_000 },
  (transport) => {
    it("reads and watches the session, and gets a typed refusal naming the role a write needs", async () => {
      const owner = await suite.open(`tab=owner-${transport}&transport=${transport}`);
      const sessionId = await owner.evaluate(() => window.app.open({ watch: false }));
      expect(await owner.evaluate(() => window.app.accessRole())).toBe("owner");
      await owner.evaluate(() => window.app.register("temperature", "float", 0.5));
      const token = await owner.evaluate(() => window.app.mint("viewer"));

      const viewer = await suite.open(`tab=viewer-${transport}&transport=${transport}`);
      expect(await viewer.evaluate((t) => window.app.open({ token: t }), token)).toBe(sessionId);
      expect(await viewer.evaluate(() => window.app.accessRole())).toBe("viewer");
      await viewer.waitForFunction(() =>
        window.app.cached().some((v) => v.name === "temperature" && v.value === 0.5),
      );
      // A change made elsewhere (a worker) reaches the viewer by its watch.
      await suite.bridge.workerClient().setVariable({
        sessionId,
        variableIdentifier: "temperature",
        value: encodeValue("float", 0.75).any,
      });
      await viewer.waitForFunction(() =>
        window.app.cached().some((v) => v.name === "temperature" && v.value === 0.75),
      );
      const refused = await viewer.evaluate(() => window.app.trySet("temperature", 1.5));
      expect(refused).toEqual({
        code: "PermissionDenied",
        accessError: true,
        requiredRole: "editor",
      });
      const { variable } = await suite.bridge
        .workerClient()
        .getVariable({ sessionId, variableIdentifier: "temperature" });
      expect([variable?.version, decodeValue(variable?.value).value]).toEqual([1, 0.75]);
      // The owner still writes.
      expect(await owner.evaluate(() => window.app.trySet("temperature", 0.25))).toEqual({
        version: 2,
      });
      await viewer.close();
      await owner.close();
    });
  },
);
