/**
 * Tools of stock snakepit workers in Chromium: a bridge runs snakepit
 * v0.13.0's own grpc_server.py (showcase adapter) in its worker pool, and
 * a page calls the workers' tools over connect-web's Connect and gRPC-Web
 * transports, getting snakepit's typed results (`snakepit.map`,
 * `snakepit.float`) as plain values. Skipped, saying why, without
 * snakepit's code.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BridgeServerOptions } from "../../src/server/index.js";
import { copySnakepit, missing, type SnakepitCopy, showcaseTools } from "../workers/snakepit.js";
import { pageSuite } from "./page-suite.js";

let copy: SnakepitCopy | undefined;
// Filled in before the page suite's own beforeAll starts the bridge.
const bridge: { workers?: NonNullable<BridgeServerOptions["workers"]> } = {};
beforeAll(async () => {
  if (missing !== undefined) return;
  copy = await copySnakepit("v0.13.0");
  bridge.workers = { command: copy.command, count: 1, tools: showcaseTools };
}, 60_000);
afterAll(async () => {
  await copy?.remove();
});

describe.skipIf(missing !== undefined)(
  `a page calling pool workers' tools ${missing ?? ""}`,
  () => {
    const suite = pageSuite({ bridge });

    it.each(["connect", "grpc-web"])(
      "gets snakepit's typed results as plain values over %s",
      {
        timeout: 60_000,
      },
      async (transport) => {
        // The pool's tools are listed once its worker is ready.
        await expect
          .poll(async () => (await fetch(`${suite.bridge.adminUrl}/workers`)).json(), {
            timeout: 30_000,
          })
          .toMatchObject({ workers: [{ kind: "pool", state: "ready" }] });
        const page = await suite.open(`tab=pool-${transport}&transport=${transport}`);
        await page.evaluate(() => window.app.open({ watch: false }));
        const sum = await page.evaluate(() => window.app.callTool("add", { a: 2, b: 3.5 }));
        expect(sum).toEqual({ value: 5.5 });
        const pong = await page.evaluate(() => window.app.callTool("ping", { message: "hi" }));
        expect(pong.value).toMatchObject({ message: "hi" });
        // A tool nobody serves is refused as such.
        expect(await page.evaluate(() => window.app.callTool("no_such_tool", {}))).toEqual({
          code: "NotFound",
        });
      },
    );
  },
);
