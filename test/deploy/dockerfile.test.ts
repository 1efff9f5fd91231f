/**
 * The Dockerfile, without a Docker engine: its stages and instructions are
 * checked as written, and the bridge image's recipe is run on the same
 * files: `npm ci --omit=dev` from the lock file (offline, from the npm
 * cache), the compiled dist/, package.json, and nothing else; then the
 * image's command starts, its HEALTHCHECK command passes, and SIGTERM ends
 * it with exit code 0. The demo-bridge image (docker-compose.yml's opt-in
 * demo profile) gets the same checks, its COPY lines replayed from the checkout.
 */
import { execFile, spawn } from "node:child_process";
import { copyFile, cp, mkdir, mkdtemp, readdir, readFile, rm, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BridgeService } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { cleanEnv, node } from "../support/cli.js";

const root = fileURLToPath(new URL("../..", import.meta.url));

interface Instruction {
  readonly op: string;
  readonly args: string;
}
interface Stage {
  readonly image: string;
  readonly name: string;
  readonly instructions: Instruction[];
}

/** The Dockerfile's global ARG defaults and its stages, continuation lines joined. */
function parseDockerfile(text: string): { args: Map<string, string>; stages: Stage[] } {
  const args = new Map<string, string>();
  const stages: Stage[] = [];
  const lines = text
    .replace(/\\\n/g, " ")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"));
  for (const line of lines) {
    const [op = "", ...rest] = line.split(/\s+/);
    const argsText = rest.join(" ");
    if (op.toUpperCase() === "FROM") {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(argsText);
      if (m === null) throw new Error(`cannot read ${line}`);
      const image = (m[1] as string).replace(/\$\{(\w+)\}/g, (_, n: string) => args.get(n) ?? "");
      stages.push({ image, name: m[2] ?? String(stages.length), instructions: [] });
    } else if (stages.length === 0 && op.toUpperCase() === "ARG") {
      const [name, value = ""] = argsText.split("=");
      args.set(name as string, value);
    } else {
      stages.at(-1)?.instructions.push({ op: op.toUpperCase(), args: argsText });
    }
  }
  return { args, stages };
}

const text = await readFile(path.join(root, "Dockerfile"), "utf8");
const { stages } = parseDockerfile(text);
const bridge = stages.at(-1) as Stage;
const demoBridge = stages.find((s) => s.name === "demo-bridge") as Stage;
const ops = (stage: Stage, op: string) => stage.instructions.filter((i) => i.op === op);
/** An exec-form instruction's argument list. */
const execForm = (i: Instruction | undefined): string[] =>
  JSON.parse(i?.args ?? "null") as string[];

describe("the Dockerfile", () => {
  it("is multi-stage, every base image pinned, the bridge on Node 24 as the default target", () => {
    expect(stages.length).toBeGreaterThanOrEqual(3);
    for (const stage of stages) {
      // A release number (node:24.21.0-…) or a dated snapshot (debian:bookworm-20250520-slim).
      expect(stage.image, stage.name).toMatch(
        /^[a-z0-9./-]+:(?:[\w.-]*\d+\.\d+[\w.-]*|[\w-]*\d{8}[\w-]*)$/,
      );
      expect(stage.image, stage.name).not.toMatch(/:latest$/);
    }
    expect(bridge.name).toBe("bridge");
    expect(bridge.image).toMatch(/^node:24\.\d+\.\d+-/);
  });

  it("ships only dist/, package.json and runtime dependencies installed with npm ci --omit=dev", () => {
    const copies = ops(bridge, "COPY").map((c) => c.args);
    expect(copies.sort()).toEqual([
      "--from=build /app/dist ./dist",
      "--from=runtime-deps /app/node_modules ./node_modules",
      "package.json ./",
    ]);
    const deps = stages.find((s) => s.name === "runtime-deps") as Stage;
    expect(
      ops(deps, "RUN")
        .map((r) => r.args)
        .join(" "),
    ).toMatch(/npm ci --omit=dev/);
    expect(ops(bridge, "RUN")).toEqual([]);
  });

  it("runs as a non-root user with a HEALTHCHECK and the CLI as its command", () => {
    const user = ops(bridge, "USER").at(-1)?.args;
    expect(user).toBeDefined();
    expect(["root", "0"]).not.toContain(user);
    const check = ops(bridge, "HEALTHCHECK")[0]?.args ?? "";
    expect(check).toMatch(/CMD \["node", "-e", .*\/healthz/);
    expect(execForm(ops(bridge, "ENTRYPOINT")[0])).toEqual(["node", "dist/server/cli.js"]);
    expect(ops(bridge, "STOPSIGNAL")[0]?.args).toBe("SIGTERM");
    // The production image keeps the CLI's defaults: no limit set by the image.
    expect(ops(bridge, "ENV").map((e) => e.args)).toEqual(["NODE_ENV=production"]);
  });

  it("keeps installed and built trees out of the build context", async () => {
    const ignore = (await readFile(path.join(root, ".dockerignore"), "utf8")).split("\n");
    for (const entry of ["**/node_modules", "dist/", "demo/dist/", ".git/"]) {
      expect(ignore).toContain(entry);
    }
  });
});

describe("the bridge image's recipe, run on its files", () => {
  let app: string;

  beforeAll(async () => {
    app = await mkdtemp(path.join(tmpdir(), "ub-image-"));
    await copyFile(path.join(root, "package.json"), path.join(app, "package.json"));
    await copyFile(path.join(root, "package-lock.json"), path.join(app, "package-lock.json"));
    const run = promisify(execFile);
    // Node 24 first on PATH: npm and its scripts run on the image's Node.
    const env = cleanEnv({ PATH: `${path.dirname(node)}:${process.env.PATH ?? ""}` });
    const install = ops(stages.find((s) => s.name === "runtime-deps") as Stage, "RUN")[0]?.args;
    const npmCi =
      /npm ci [^&]*/
        .exec(install ?? "")?.[0]
        ?.trim()
        .split(/\s+/) ?? [];
    expect(npmCi.slice(0, 3)).toEqual(["npm", "ci", "--omit=dev"]);
    await run("npm", [...npmCi.slice(1), "--offline"], { cwd: app, env, timeout: 120_000 });
    const tsc = path.join(root, "node_modules/typescript/bin/tsc");
    await run(node, [tsc, "-p", "tsconfig.build.json", "--outDir", path.join(app, "dist")], {
      cwd: root,
      env,
      timeout: 120_000,
    });
  }, 240_000);

  afterAll(async () => {
    if (app !== undefined) await rm(app, { recursive: true, force: true });
  });

  it("installs no development dependency", async () => {
    const installed = await readdir(path.join(app, "node_modules"));
    const pkg = JSON.parse(await readFile(path.join(root, "package.json"), "utf8")) as {
      devDependencies: Record<string, string>;
    };
    for (const dev of Object.keys(pkg.devDependencies)) {
      const [scope, name] = dev.split("/");
      const present =
        name === undefined
          ? installed.includes(dev)
          : installed.includes(scope as string) &&
            (await readdir(path.join(app, "node_modules", scope as string))).includes(name);
      expect(present, dev).toBe(false);
    }
  });

  it("serves with only those files, passes its HEALTHCHECK and exits 0 on SIGTERM", async () => {
    await serveHealthyAndStop(bridge, app, async (client) => {
      const ping = await client.ping({ message: "image" });
      expect(ping.message).toContain("image");
    });
  });
});

/**
 * Starts the stage's command in `cwd` as the image sets it up, waits for its
 * ready line, makes `use`'s calls, runs the stage's HEALTHCHECK command, then
 * SIGTERM: exit 0.
 */
async function serveHealthyAndStop(
  stage: Stage,
  cwd: string,
  use: (client: Client<typeof BridgeService>) => Promise<void>,
): Promise<void> {
  const [entry, ...command] = [
    ...execForm(ops(stage, "ENTRYPOINT")[0]),
    ...execForm(ops(stage, "CMD")[0]),
  ];
  expect(entry).toBe("node");
  const child = spawn(node, [...command, "--port", "0", "--worker-port", "0"], {
    cwd,
    env: cleanEnv({ NODE_ENV: "production", UB_ADMIN_PORT: "0" }),
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
  try {
    let out = "";
    child.stdout.setEncoding("utf8");
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk: string) => {
      out += chunk;
    });
    const ready = await new Promise<RegExpExecArray>((resolve, reject) => {
      child.stdout.on("data", (chunk: string) => {
        out += chunk;
        const m = /listening on (http:\/\/\S+) .*admin: http:\/\/[^:]+:(\d+)/.exec(out);
        if (m !== null) resolve(m);
      });
      void exited.then((code) => reject(new Error(`exited ${code}:\n${out}`)));
    });
    const url = (ready[1] as string).replace("0.0.0.0", "127.0.0.1");
    await use(createClient(BridgeService, createGrpcTransport({ baseUrl: url })));
    const check = JSON.parse(
      /CMD (\[.*\])$/.exec(ops(stage, "HEALTHCHECK")[0]?.args ?? "")?.[1] ?? "[]",
    ) as string[];
    const probe = await promisify(execFile)(node, check.slice(1), {
      env: cleanEnv({ UB_ADMIN_PORT: ready[2] as string }),
    }).then(
      () => 0,
      (e: { code?: number }) => e.code ?? -1,
    );
    expect(probe).toBe(0);
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
  } finally {
    if (child.exitCode === null) child.kill("SIGKILL");
  }
}

describe("the demo-bridge target (docker-compose.yml's demo profile)", () => {
  it("runs demo/server/serve.ts from source as a non-root user, with the bridge's HEALTHCHECK, signal and command", () => {
    expect(demoBridge).toBeDefined();
    expect(demoBridge.image).toBe(bridge.image);
    const user = ops(demoBridge, "USER").at(-1)?.args;
    expect(user).toBeDefined();
    expect(["root", "0"]).not.toContain(user);
    expect(ops(demoBridge, "HEALTHCHECK")).toEqual(ops(bridge, "HEALTHCHECK"));
    expect(ops(demoBridge, "STOPSIGNAL")[0]?.args).toBe("SIGTERM");
    expect(ops(demoBridge, "ENV")).toEqual(ops(bridge, "ENV"));
    expect(execForm(ops(demoBridge, "ENTRYPOINT")[0])).toEqual([
      "node",
      "--disable-warning=ExperimentalWarning",
      "--experimental-transform-types",
      "--import",
      "./scripts/ts-source-hooks.mjs",
      "demo/server/serve.ts",
    ]);
    expect(execForm(ops(demoBridge, "CMD")[0])).toEqual(execForm(ops(bridge, "CMD")[0]));
    // Everything from the build stage (sources and its full node_modules); nothing run.
    for (const copy of ops(demoBridge, "COPY")) expect(copy.args).toMatch(/^--from=build \/app\//);
    expect(ops(demoBridge, "RUN")).toEqual([]);
  });

  it("serves the spam tools with only the files it copies, passes its HEALTHCHECK and exits 0 on SIGTERM", {
    timeout: 60_000,
  }, async () => {
    const app = await mkdtemp(path.join(tmpdir(), "ub-demo-image-"));
    try {
      for (const copy of ops(demoBridge, "COPY")) {
        const [, from = "", to = ""] = copy.args.split(/\s+/);
        const source = path.join(root, from.replace(/^\/app\//, ""));
        const target = path.join(app, to);
        if (from === "/app/node_modules") {
          // The build stage's full install: the checkout's own.
          await symlink(source, target, "dir");
        } else {
          await mkdir(to.endsWith("/") ? target : path.dirname(target), { recursive: true });
          await cp(source, to.endsWith("/") ? path.join(target, path.basename(source)) : target, {
            recursive: true,
          });
        }
      }
      await serveHealthyAndStop(demoBridge, app, async (client) => {
        const session = await client.initializeSession({});
        expect(Object.keys(session.availableTools)).toContain("spam_evaluate");
      });
    } finally {
      await rm(app, { recursive: true, force: true });
    }
  });
});
