// `npm run example:node`: runs examples/node/example.ts (the README's Node
// example) against the bridge at BRIDGE_URL, or, without it, against a
// bridge this script starts in-process on a free port and stops at the end.
import { exampleBridge } from "../bridge.ts";
import { nodeExample } from "./example.ts";

const bridge = await exampleBridge();
const url = bridge.url;
console.log(`bridge: ${url}${bridge.started ? " (started by this example)" : ""}`);
try {
  await nodeExample(url);
} finally {
  await bridge.stop();
}
