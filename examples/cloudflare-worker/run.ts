// `npm run example:worker`: runs worker.ts in workerd (Miniflare, from
// node_modules), as wrangler.toml describes it, against the bridge at
// BRIDGE_URL, or, without it, one this script starts in-process. PORT
// chooses the Worker's port (default 8787; 0: any free one). Ctrl-C stops.
import { readFileSync } from "node:fs";
import { build } from "esbuild";
import { Miniflare } from "miniflare";
import { exampleBridge } from "../bridge.ts";

const here = (file: string) => new URL(file, import.meta.url).pathname;
const bridge = await exampleBridge();
const bridgeUrl = bridge.url;

// What wrangler does: bundle for workerd, here with the package's name
// resolved to its sources (tsconfig.json "paths").
const bundled = await build({
  entryPoints: [here("worker.ts")],
  bundle: true,
  write: false,
  format: "esm",
  platform: "browser",
  conditions: ["workerd", "worker", "browser"],
  target: "es2022",
  logLevel: "warning",
  tsconfig: here("../../tsconfig.json"),
});
const compatibilityDate =
  /^compatibility_date = "([^"]+)"/m.exec(readFileSync(here("wrangler.toml"), "utf8"))?.[1] ??
  "2026-04-26";
const mf = new Miniflare({
  modules: true,
  script: bundled.outputFiles[0]?.text ?? "",
  compatibilityDate,
  bindings: { BRIDGE_URL: bridgeUrl },
  host: "127.0.0.1",
  port: Number(process.env.PORT ?? 8787),
});
const url = await mf.ready;
console.log(`worker example: listening on ${url.href} (bridge: ${bridgeUrl})`);
console.log(
  `  try: curl -s -X POST -H 'x-session: example-session-0001' --data 'hello' ${url.href}`,
);

const stop = async () => {
  await mf.dispose();
  await bridge.stop();
  process.exit(0);
};
process.once("SIGINT", stop);
process.once("SIGTERM", stop);
