// `npm run example:python-worker`: a bridge that runs word_worker.py in its
// worker pool, and a Node client calling the worker's tool through it. The
// command line equivalent of the bridge here is
//   unified-bridge serve --worker-command "python3 examples/python-worker/word_worker.py"
// with the bridge's proto compiled into the worker's PYTHONPATH, as below.
// Needs Debian's python3-grpcio, protobuf-compiler and protobuf-compiler-grpc.
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { createSessionContext } from "unified-session-bridge";
import { createBridgeServer, createLogger } from "unified-session-bridge/server";

const root = join(import.meta.dirname, "../..");
// The bridge's own proto, compiled for Python (what snakepit ships pregenerated).
const stubs = mkdtempSync(join(tmpdir(), "ub-example-python-"));
const missing = [
  ["/usr/bin/python3", "python3-grpcio", ["-c", "import grpc"]],
  ["protoc", "protobuf-compiler", ["--version"]],
  ["/usr/bin/grpc_python_plugin", "protobuf-compiler-grpc", ["--version"]],
].filter(([file, , args]) => {
  try {
    execFileSync(file as string, args as string[], { stdio: "ignore" });
    return false;
  } catch (e) {
    // The plugin exits non-zero on --version; only "not found" counts.
    return (e as { code?: unknown }).code === "ENOENT" || file === "/usr/bin/python3";
  }
});
if (missing.length > 0) {
  rmSync(stubs, { recursive: true, force: true });
  console.error(
    `example:python-worker needs the Debian packages ${missing.map(([, pkg]) => pkg).join(", ")}: sudo apt-get install ${missing.map(([, pkg]) => pkg).join(" ")}`,
  );
  process.exit(1);
}
execFileSync("protoc", [
  "-I",
  join(root, "proto"),
  `--python_out=${stubs}`,
  `--grpc_python_out=${stubs}`,
  "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin",
  join(root, "proto/snakepit/bridge/bridge.proto"),
]);
for (const dir of ["snakepit", "snakepit/bridge"]) {
  mkdirSync(join(stubs, dir), { recursive: true });
  writeFileSync(join(stubs, dir, "__init__.py"), "");
}

const bridge = createBridgeServer({
  port: 0,
  logger: createLogger({ level: "warn" }),
  workers: {
    command: ["/usr/bin/python3", join(import.meta.dirname, "word_worker.py")],
    count: 1,
    env: { PYTHONPATH: stubs, PYTHONDONTWRITEBYTECODE: "1" },
  },
});
try {
  const { url } = await bridge.start();
  // The pool lists the worker's tools once it is ready.
  for (let i = 0; i < 300 && bridge.workers()[0]?.state !== "ready"; i++) {
    await new Promise((r) => setTimeout(r, 100));
  }
  const ctx = await createSessionContext({ transport: createGrpcTransport({ baseUrl: url }) });
  console.log((await ctx.listTools()).map((t) => t.name).includes("word_count"));
  console.log(await ctx.callTool("word_count", { text: "typed state shared with Python" }));
  await ctx.close();
} finally {
  await bridge.stop();
  rmSync(stubs, { recursive: true, force: true });
}
