import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it, onTestFinished } from "vitest";

const root = fileURLToPath(new URL("..", import.meta.url));
const script = join(root, "scripts/import-cycles.mjs");

/** The directories kept free of import cycles; one more is one more entry. */
const acyclic = ["src/client", "src/server", "src/values"];

function findCycles(cwd: string, dirs: readonly string[]) {
  const run = spawnSync(process.execPath, [script, ...dirs], {
    cwd,
    encoding: "utf8",
    timeout: 15_000,
  });
  return { status: run.status, output: `${run.stdout}${run.stderr}` };
}

describe("import cycles", () => {
  it(`there are none among the modules of ${acyclic.join(", ")}`, () => {
    const { status, output } = findCycles(root, acyclic);
    expect(output).toMatch(/^no import cycle among the \d+ modules/m);
    expect(status, output).toBe(0);
  });

  it("are found through type-only and dynamic imports, and not in comments or strings", () => {
    const dir = mkdtempSync(join(tmpdir(), "ub-cycles-"));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const files: Record<string, string> = {
      // A cycle made only by types: nothing of it is left at run time.
      "src/a.ts": 'import type { B } from "./b.js";\nexport interface A {\n  readonly b: B;\n}\n',
      "src/b.ts": 'import { type A } from "./a.js";\nexport type B = readonly A[];\n',
      // A cycle through a re-export and an import() in a type.
      "src/parts/e.ts": 'export { f } from "./f.js";\nexport const e = 1;\n',
      "src/parts/f.ts": 'export type E = typeof import("./e.js");\nexport const f = 2;\n',
      // d imports c, but c imports d only in comments, a string and a
      // template: no cycle.
      "src/c.ts": [
        '// import { d } from "./d.js";',
        "/**",
        " * @example",
        ' * import { d } from "./d.js";',
        " */",
        "const quotes = /[\"'/]/;",
        'const text = "/* import { d } from \\"./d.js\\" */";',
        // biome-ignore lint/suspicious/noTemplateCurlyInString: the fixture's own template literal
        'const template = `import("./d.js") ${{ a: "}" }.a} //`;',
        "export const c = [quotes, text, template];",
        "",
      ].join("\n"),
      "src/d.ts": 'import { c } from "./c.js";\nexport const d = c;\n',
      // Tests are not modules of the library.
      "src/d.test.ts": 'import { d } from "./d.js";\nexport const t = d;\n',
      "src/g.ts": 'import { t } from "./d.test.js";\nexport const g = t;\n',
    };
    for (const [path, text] of Object.entries(files)) {
      mkdirSync(join(dir, path, ".."), { recursive: true });
      writeFileSync(join(dir, path), text);
    }

    const { status, output } = findCycles(dir, ["src"]);
    expect(status, output).toBe(1);
    expect(output).toContain(
      "cycle among 2 modules:\n  src/a.ts imports src/b.ts\n  src/b.ts imports src/a.ts\n",
    );
    expect(output).toContain(
      "cycle among 2 modules:\n  src/parts/e.ts imports src/parts/f.ts\n  src/parts/f.ts imports src/parts/e.ts\n",
    );
    expect(output).not.toMatch(/src\/(c|d|g)\.ts imports/);
    expect(output).toContain("2 import cycles among the 7 modules of src");
  });
});
