/**
 * `npm run docs` generates the client's API reference from its TSDoc: its
 * analysis must pass without a warning, so a public type that is used but
 * not exported, or a broken `{@link}`, fails here rather than in the
 * reference a user reads.
 */
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const run = promisify(execFile);
const root = fileURLToPath(new URL("..", import.meta.url));

describe("the client's API reference", () => {
  it("is generated from the TSDoc without a warning", async () => {
    const { stdout, stderr } = await run(process.execPath, ["scripts/docs.mjs", "--check"], {
      cwd: root,
      timeout: 180_000,
    }).catch((e: { stdout: string; stderr: string }) => {
      throw new Error(`npm run docs failed:\n${e.stdout}\n${e.stderr}`);
    });
    expect(`${stdout}${stderr}`).toContain("the client's public API passed API Extractor's checks");
    expect(`${stdout}${stderr}`).not.toMatch(/Warning:/);
  }, 200_000);
});
