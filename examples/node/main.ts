// `npm run example:node`: runs examples/node/example.ts (the README's Node
// example) against the bridge at BRIDGE_URL, or, without it, against a
// bridge this script starts in-process on a free port and stops at the end.
import { createBridgeServer, createLogger } from "unified-session-bridge/server";
import { nodeExample } from "./example.ts";

const given = process.env.BRIDGE_URL;
const bridge =
  given === undefined
    ? createBridgeServer({
        port: 0,
        workerPort: null,
        adminPort: null,
        logger: createLogger({ level: "warn" }),
      })
    : undefined;
const url = given ?? (await bridge?.start())?.url ?? "";
console.log(`bridge: ${url}${given === undefined ? " (started by this example)" : ""}`);
try {
  await nodeExample(url);
} finally {
  await bridge?.stop();
}
