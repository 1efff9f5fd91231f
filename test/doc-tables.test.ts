/**
 * The tables of docs/ that restate code or data are exactly what
 * scripts/doc-tables.ts makes from it: a new option, a changed default or
 * a benchmark run that is not in the docs fails here (`npm run docs`
 * regenerates them).
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { docTables, withTable } from "../scripts/doc-tables.ts";
import { optionEntries } from "../src/server/config/config-options.js";

describe("generated tables in docs/", () => {
  it.each(docTables())(
    "$file ($name) is up to date; run `npm run docs` if not",
    ({ file, name, table }) => {
      const text = readFileSync(new URL(`../${file}`, import.meta.url), "utf8");
      expect(text).toBe(withTable(text, name, table));
    },
  );

  it("lists every option of the server with its variable", () => {
    const table = docTables().find((t) => t.name === "options")?.table ?? "";
    for (const [, o] of optionEntries) {
      expect(table).toContain(`\`--${o.flag}`);
      expect(table).toContain(`\`${o.env}\``);
    }
  });
});
