// `npm run example:browser`: serves the example page on Vite's dev server
// and forwards its RPCs to the bridge, so the page reaches the bridge from
// its own origin (no CORS; in production Envoy or any reverse proxy does the
// same, see docs/deploying.md). The bridge is BRIDGE_URL's, or, without
// it, one this script starts in-process. PORT chooses the page's port
// (default 5174; 0: any free one). Ctrl-C stops both.
import { createServer } from "vite";
import { exampleBridge } from "../bridge.ts";

const bridge = await exampleBridge();
const bridgeUrl = bridge.url;

const vite = await createServer({
  root: import.meta.dirname,
  configFile: false,
  clearScreen: false,
  logLevel: "warn",
  // The package's own name resolves to its sources (tsconfig.json "paths").
  resolve: { tsconfigPaths: true },
  server: {
    host: "127.0.0.1",
    port: Number(process.env.PORT ?? 5174),
    proxy: {
      // Every RPC of the bridge's service, unary and streaming alike.
      "/snakepit.bridge.BridgeService/": { target: bridgeUrl, xfwd: true },
    },
  },
});
await vite.listen();
console.log(`browser example: open ${vite.resolvedUrls?.local[0] ?? "?"} (bridge: ${bridgeUrl})`);

const stop = async () => {
  await vite.close();
  await bridge.stop();
  process.exit(0);
};
process.once("SIGINT", stop);
process.once("SIGTERM", stop);
