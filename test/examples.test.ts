/**
 * The examples in examples/ run as their READMEs say: this suite runs each
 * one's npm script exactly (`npm run example:node`, `example:browser`,
 * `example:worker`, `example:python-worker`) in a process of its own, against a real bridge, and
 * drives what it serves (the page in Chromium, the Worker in workerd over
 * HTTP). It also checks that README shows exactly the examples' code, so
 * the two cannot drift apart.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { decodeJsonAny, encodeValue } from "../src/values/index.js";
import { type RunningBridge, startBridge } from "./support/bridge.js";
import { launchChromium } from "./support/chromium.js";
import { waitFor } from "./support/wait.js";

const root = (path: string) => fileURLToPath(new URL(`../${path}`, import.meta.url));
const readme = readFileSync(root("README.md"), "utf8");

/** The code between `// #region readme` and `// #endregion`, dedented. */
function region(file: string): string {
  const text = readFileSync(root(file), "utf8");
  const match = /\/\/ #region readme\n([\s\S]*?)\n\s*\/\/ #endregion/.exec(text);
  if (match?.[1] === undefined) return text.trimEnd();
  const lines = match[1].split("\n");
  const indent = Math.min(
    ...lines.filter((l) => l.trim() !== "").map((l) => /^ */.exec(l)?.[0].length ?? 0),
  );
  return lines.map((l) => l.slice(indent)).join("\n");
}

/** A running `npm run <script>`, its output so far, and how it ended. */
interface Script {
  readonly child: ChildProcess;
  output(): string;
  readonly exited: Promise<number | null>;
}

const running: ChildProcess[] = [];
afterEach(() => {
  for (const child of running.splice(0)) {
    // npm, and the node it started, in their own process group.
    if (child.exitCode === null && child.pid !== undefined) {
      try {
        process.kill(-child.pid, "SIGTERM");
      } catch {
        // Gone already.
      }
    }
  }
});

/** Runs `npm run <name>` from the project root, as its README says. */
function npmRun(name: string, env: Record<string, string> = {}): Script {
  const child = spawn("npm", ["run", "-s", name], {
    cwd: root(""),
    env: { ...process.env, ...env },
    detached: true,
  });
  running.push(child);
  let out = "";
  child.stdout?.on("data", (d: Buffer) => {
    out += d.toString();
  });
  child.stderr?.on("data", (d: Buffer) => {
    out += d.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
  return { child, output: () => out, exited };
}

/** Waits until the script printed a line matching `pattern`; returns the match. */
async function printed(script: Script, pattern: RegExp): Promise<RegExpExecArray> {
  return waitFor(
    () => {
      const match = pattern.exec(script.output());
      if (match === null) throw new Error(`not printed yet: ${pattern}\n${script.output()}`);
      return match;
    },
    { timeoutMs: 45_000, intervalMs: 100 },
  );
}

let bridge: RunningBridge;
beforeAll(async () => {
  bridge = await startBridge();
});
afterAll(async () => {
  await bridge.stop();
});

describe("README examples", () => {
  it.each([
    "examples/node/example.ts",
    "examples/browser/example.ts",
    "examples/cloudflare-worker/worker.ts",
  ])("shows %s exactly", (file) => {
    expect(readme).toContain(region(file));
  });

  it("npm run example:node: binds, writes through the cache, refuses bad input locally", async () => {
    const script = npmRun("example:node");
    expect(await script.exited).toBe(0);
    expect(script.output().trim().split("\n")).toEqual([
      expect.stringMatching(/^bridge: http:\/\/127\.0\.0\.1:\d+ \(started by this example\)$/),
      "0.9",
      "ConnectError: [invalid_argument] variable 'temperature': value 2.5 is above maximum 2",
    ]);
  }, 60_000);

  it("npm run example:python-worker: a Python worker in the pool serves its tool to a Node client", async () => {
    const script = npmRun("example:python-worker");
    expect(await script.exited).toBe(0);
    expect(script.output().trim().split("\n").slice(-2)).toEqual([
      "true",
      "{ words: 5, longest: 'shared' }",
    ]);
  }, 90_000);

  it("npm run example:worker: appends to the session's conversation from workerd", async () => {
    const script = npmRun("example:worker", { BRIDGE_URL: bridge.url, PORT: "0" });
    const [, url] = await printed(script, /listening on (http:\/\/127\.0\.0\.1:\d+\/)/);
    const { sessionId } = await bridge.client().initializeSession({});
    const post = (body: string) =>
      fetch(url ?? "", { method: "POST", headers: { "x-session": sessionId }, body });
    expect((await post("hello from the edge")).status).toBe(200);
    const res = await post("and again");
    expect(await res.json()).toMatchObject({
      count: 2,
      messages: [{ content: "hello from the edge" }, { content: "and again" }],
    });
    const history = await bridge
      .client()
      .executeTool({ sessionId, toolName: "conversation_history" });
    expect(decodeJsonAny(history.result)).toMatchObject({ count: 2 });
  }, 60_000);

  it("npm run example:browser: the page renders changes from itself, another tab and another client, in Chromium", async () => {
    const script = npmRun("example:browser", { BRIDGE_URL: bridge.url, PORT: "0" });
    const [, url] = await printed(script, /open (http:\/\/127\.0\.0\.1:\d+\/)/);
    const chromium = await launchChromium();
    try {
      const tab = await chromium.context.newPage();
      await tab.goto(url ?? "");
      // The page made a session and put its link in the address bar.
      await tab.waitForFunction(() => new URL(location.href).searchParams.has("session"), null, {
        timeout: 30_000,
      });
      const sessionId = new URL(tab.url()).searchParams.get("session") ?? "";
      await tab.getByText("clicks = 0 (version 0)").waitFor();

      await tab.getByRole("button", { name: "clicks + 1" }).click();
      await tab.getByText("clicks = 1 (version 1)").waitFor();

      // A second tab with the link, and a client elsewhere, share the session.
      const second = await chromium.context.newPage();
      await second.goto(tab.url());
      await second.getByText("clicks = 1 (version 1)").waitFor();
      await bridge.client().registerVariable({
        sessionId,
        name: "threshold",
        type: "float",
        initialValue: encodeValue("float", 0.8).any,
      });
      await tab.getByText("threshold = 0.8 (version 0)").waitFor();
      await second.getByText("threshold = 0.8 (version 0)").waitFor();
    } finally {
      await chromium.close();
    }
  }, 90_000);
});
