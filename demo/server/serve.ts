/**
 * The demo's bridge as a deployable server: `unified-bridge serve` with
 * the same options (--store redis://…, --host, …) and, besides the
 * built-in tools, the spam program's tools the demo page calls (Tune,
 * Evaluate, Try it). The Dockerfile's `demo-bridge` target runs it from
 * source on Node 24:
 *
 *   node --disable-warning=ExperimentalWarning --experimental-transform-types \
 *     --import ./scripts/ts-source-hooks.mjs demo/server/serve.ts serve [options]
 *
 * The request limit defaults to the demo's (MAX_REQUEST_BYTES, for the
 * training rows sent to a Python worker); --max-request-bytes or
 * UB_MAX_REQUEST_BYTES override it.
 */
import { runServe } from "../../src/server/serve-command.ts";
import { loopbackToolCall, MAX_REQUEST_BYTES } from "./demo-bridge.ts";
import type { ToolCall } from "./python-module.ts";
import { createSpamProgram } from "./spam-program.ts";
import { createSpamTools } from "./spam-tools.ts";

const [command, ...rest] = process.argv.slice(2);
if (command !== "serve") {
  console.error("usage: demo/server/serve.ts serve [options] (serve --help lists the options)");
  process.exit(1);
}

// The evaluation tool calls the bridge itself, whose address is known once
// it listens.
let callTool: ToolCall = () => Promise.reject(new Error("the bridge is not started"));
await runServe(
  rest,
  { UB_MAX_REQUEST_BYTES: String(MAX_REQUEST_BYTES), ...process.env },
  {
    tools: createSpamTools(createSpamProgram({ callTool: (call) => callTool(call) })),
    onListening: ({ url, workerUrl }) => {
      // The worker listener: the tool's own calls need no access token.
      callTool = loopbackToolCall(workerUrl ?? url);
    },
  },
);
