#!/usr/bin/env node
/**
 * `npm run docs`: the client's API reference, generated from its TSDoc,
 * and the tables of docs/ generated from code and data (doc-tables.ts).
 *
 * Compiles the declarations into a temporary directory (never into dist/,
 * which other runs may use), has API Extractor read the public API of the
 * package entry `unified-session-bridge` (src/client/index.ts) from them, and
 * API Documenter write it as Markdown to docs/api/ (one page per export).
 * Any warning of API Extractor (a type the API uses but does not export, a
 * broken `{@link}`) fails the run. `--check` stops after the analysis and
 * writes nothing: test/docs.test.ts runs that.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Extractor, ExtractorConfig } from "@microsoft/api-extractor";

const root = fileURLToPath(new URL("..", import.meta.url));
const check = process.argv.includes("--check");
const work = mkdtempSync(join(tmpdir(), "ub-docs-"));
const run = (file, args) => {
  const r = spawnSync(file, args, { cwd: root, stdio: "inherit" });
  if (r.status !== 0) process.exit(r.status ?? 1);
};

try {
  const dts = join(work, "dts");
  run(process.execPath, [
    join(root, "node_modules/typescript/bin/tsc"),
    ...["-p", "tsconfig.build.json", "--declaration", "--emitDeclarationOnly"],
    ...["--declarationMap", "false", "--sourceMap", "false", "--outDir", dts],
  ]);
  const model = join(work, "model");
  const config = ExtractorConfig.prepare({
    configObject: {
      projectFolder: root,
      mainEntryPointFilePath: join(dts, "client/index.d.ts"),
      compiler: { tsconfigFilePath: join(root, "tsconfig.build.json") },
      apiReport: { enabled: false },
      docModel: { enabled: true, apiJsonFilePath: join(model, "unified-bridge.api.json") },
      dtsRollup: { enabled: false },
      tsdocMetadata: { enabled: false },
      messages: {
        extractorMessageReporting: {
          // Every export is public: there are no release tags to check.
          "ae-missing-release-tag": { logLevel: "none" },
          default: { logLevel: "warning" },
        },
        tsdocMessageReporting: {
          // protoc-gen-es marks the generated code it writes `@generated`.
          "tsdoc-undefined-tag": { logLevel: "none" },
          default: { logLevel: "warning" },
        },
      },
    },
    configObjectFullPath: undefined,
    packageJsonFullPath: join(root, "package.json"),
  });
  const result = Extractor.invoke(config, { localBuild: true, showVerboseMessages: false });
  if (!result.succeeded || result.warningCount > 0) {
    console.error(
      `docs: the client's public API has ${result.errorCount} errors and ${result.warningCount} warnings (above)`,
    );
    process.exit(1);
  }
  console.log("docs: the client's public API passed API Extractor's checks");
  if (!check) {
    // The tables of docs/ that restate code or data (scripts/doc-tables.ts).
    run(process.execPath, [
      ...["--disable-warning=ExperimentalWarning", "--experimental-transform-types"],
      ...["--import", "./scripts/ts-source-hooks.mjs", "scripts/doc-tables.ts"],
    ]);
    run(process.execPath, [
      join(root, "node_modules/@microsoft/api-documenter/bin/api-documenter"),
      ...["markdown", "-i", model, "-o", join(root, "docs/api")],
    ]);
    console.log("docs: the client API reference is in docs/api/index.md");
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
