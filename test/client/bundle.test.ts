import { builtinModules } from "node:module";
import { gzipSync } from "node:zlib";
import { build, type Message } from "esbuild";
import { describe, expect, it } from "vitest";

// The client must run in browsers and Workers unchanged: bundling it for the
// browser must pull in no Node module, and its size is a figure users weigh.

/** Ceiling on the gzipped client: a regression guard, well above today's size. */
const MAX_GZIP_KIB = 200;

/**
 * Ceiling on what the README's browser example downloads before it has met
 * a pattern constraint: a regression guard a little above today's 59.8 KiB.
 */
const MAX_FIRST_CHUNK_GZIP_KIB = 62;

/** Ceiling on what the same example adds over a bare Connect-ES client of BridgeService. */
const MAX_OVER_CONNECT_GZIP_KIB = 23;

/** Node-only globals that would throw (or be undefined) in a browser. */
const NODE_GLOBALS: readonly [string, RegExp][] = [
  ["process.", /\bprocess\./],
  ["Buffer", /\bBuffer\b/],
  ["require(", /\brequire\(/],
  ["__dirname", /\b__dirname\b/],
  ["__filename", /\b__filename\b/],
  ["global.", /(?<![\w$.])global\./],
  ["setImmediate", /\bsetImmediate\b/],
];

/**
 * Uses of Node globals that are guarded by a `typeof` check and so are safe
 * in a browser, each with where it comes from. Removed before the scan, so
 * any other use still fails it.
 */
const GUARDED: readonly RegExp[] = [
  // @bufbuild/protobuf: opt-out switch for 64-bit DataView methods, read only
  // when `process` exists.
  /typeof process\s*!=\s*"object"\s*\|\|\s*typeof process\.env\s*!=\s*"object"\s*\|\|\s*process\.env\.BUF_BIGINT_DISABLE\s*!==\s*"1"/g,
];

/** esbuild's options for `contents` (an ES module importing the client), as an app bundles it for the browser. */
const browserBuild = (contents: string) =>
  ({
    stdin: { contents, resolveDir: process.cwd(), sourcefile: "entry.ts", loader: "ts" },
    bundle: true,
    minify: true,
    platform: "browser",
    format: "esm",
    target: "es2022",
    write: false,
    metafile: true,
    logLevel: "silent",
  }) as const;

/** Bundles `contents` into one file. */
async function bundle(contents: string) {
  const result = await build(browserBuild(contents));
  const text = result.outputFiles[0]?.text ?? "";
  const inputs = Object.keys(result.metafile.inputs);
  return { text, warnings: result.warnings, inputs };
}

const kib = (n: number) => (n / 1024).toFixed(1);
const format = (messages: Message[]) => messages.map((m) => m.text);

describe("browser bundle of the client", () => {
  // Re-exporting everything defeats tree shaking: this is the whole client.
  const entry = `export * from "./src/client/index.ts";
export * from "./src/client/persist/idb.ts";`;

  it("pulls in no Node module or Node-only global, and stays small", async ({ annotate }) => {
    const { text, warnings, inputs } = await bundle(entry);
    expect(format(warnings)).toEqual([]);

    const builtins = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));
    expect(inputs.filter((path) => path.startsWith("node:") || builtins.has(path))).toEqual([]);
    expect(inputs.some((path) => path.includes("idb-keyval"))).toBe(true);
    const scanned = GUARDED.reduce((rest, guarded) => rest.replace(guarded, ""), text);
    expect(
      NODE_GLOBALS.filter(([, pattern]) => pattern.test(scanned)).map(([name]) => name),
    ).toEqual([]);

    const minified = Buffer.byteLength(text);
    const gzipped = gzipSync(text, { level: 9 }).byteLength;
    const line = `client bundle (index + persist/idb): ${kib(minified)} KiB minified, ${kib(gzipped)} KiB gzip`;
    console.log(line);
    await annotate(line);
    expect(gzipped / 1024).toBeLessThan(MAX_GZIP_KIB);
  });

  it("fails the build on a Node built-in, so the check above can fail", async () => {
    const error = await bundle(
      `import { readFileSync } from "node:fs"; export { readFileSync };`,
    ).then(
      () => undefined,
      (e: unknown) => e as { errors: Message[] },
    );
    expect(format(error?.errors ?? []).join("\n")).toMatch(/node:fs/);
  });
});

describe("the README's browser example, split as a bundler splits it", () => {
  // examples/browser/example.ts with the package's entry points as source paths.
  const entry = `import { createConnectTransport } from "@connectrpc/connect-web";
import { createSessionContext } from "./src/client/index.ts";
import { idbPersistence } from "./src/client/persist/idb.ts";
const ctx = await createSessionContext({
  transport: createConnectTransport({ baseUrl: location.origin, useBinaryFormat: true }),
  sessionId: new URLSearchParams(location.search).get("session") ?? undefined,
  persistence: idbPersistence(),
});
ctx.on("change", ({ name, snapshot }) => console.log(name, snapshot));`;

  it("leaves the pattern engine (re2js) to a chunk loaded only when a pattern is met", async ({
    annotate,
  }) => {
    // Split as Vite or Rollup split an app: dynamic imports get chunks of their own.
    const result = await build({ ...browserBuild(entry), splitting: true, outdir: "split" });
    const outputs = Object.entries(result.metafile.outputs);
    const first = outputs.find(([, o]) => o.entryPoint !== undefined);
    if (first === undefined) throw new Error("no entry chunk");
    const inFirst = Object.keys(first[1].inputs);
    expect(inFirst.filter((path) => path.includes("node_modules/re2js"))).toEqual([]);
    // re2js is still bundled: in a chunk of its own, behind the dynamic import.
    const lazy = outputs.filter(([, o]) =>
      Object.keys(o.inputs).some((path) => path.includes("node_modules/re2js")),
    );
    expect(lazy).toHaveLength(1);

    const size = (path: string) => {
      const file = result.outputFiles.find((f) => f.path.endsWith(path.replace(/^split\//, "")));
      if (file === undefined) throw new Error(`no output ${path}`);
      return gzipSync(file.contents, { level: 9 }).byteLength;
    };
    const firstGzip = size(first[0]);
    const lazyGzip = size(lazy[0]?.[0] ?? "");
    // What any Connect-ES web client of this protocol downloads: connect-web,
    // the protobuf runtime and the generated service, calling one method.
    const floor = await build(
      browserBuild(`import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { BridgeService } from "./src/gen/snakepit/bridge/bridge_pb.ts";
const client = createClient(BridgeService, createConnectTransport({ baseUrl: location.origin, useBinaryFormat: true }));
console.log(await client.ping({ message: "hi" }));`),
    );
    const floorGzip = gzipSync(floor.outputFiles[0]?.contents ?? new Uint8Array(), {
      level: 9,
    }).byteLength;
    const line = `README browser example: ${kib(firstGzip)} KiB gzip at first (a bare Connect-ES client of BridgeService: ${kib(floorGzip)} KiB), re2js chunk ${kib(lazyGzip)} KiB gzip on the first pattern`;
    console.log(line);
    await annotate(line);
    expect(firstGzip / 1024).toBeLessThan(MAX_FIRST_CHUNK_GZIP_KIB);
    // What the client adds over a bare Connect-ES client (21.7 KiB today),
    // guarded apart so a library upgrade cannot hide a growth of ours.
    expect((firstGzip - floorGzip) / 1024).toBeLessThan(MAX_OVER_CONNECT_GZIP_KIB);
  });
});
