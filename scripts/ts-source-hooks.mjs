/**
 * Lets Node 24 run src/ from source: src/ imports its siblings with `.js`
 * specifiers (what tsc emits), so a relative `.js` import that does not
 * exist resolves to the `.ts` file beside it, and the package's own name
 * (`unified-session-bridge`, `unified-session-bridge/server`, …) resolves to its sources
 * through tsconfig.json's "paths", the one alias map. Used with
 * --experimental-transform-types (src/gen has enums) by `npm run serve
 * -- --help` and by the examples' npm scripts (`npm run example:node`, …).
 */
import { existsSync, readFileSync } from "node:fs";
import { registerHooks } from "node:module";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = new URL("../", import.meta.url);

/**
 * tsconfig.json's "paths", as file URLs (its comments are whole lines);
 * none where it is absent (the demo's tools image runs src/ without it and
 * imports nothing by the package's name).
 */
const aliases = (() => {
  const file = new URL("tsconfig.json", root);
  if (!existsSync(file)) return new Map();
  const text = readFileSync(file, "utf8").replace(/^\s*\/\/.*$/gm, "");
  const paths = JSON.parse(text).compilerOptions.paths;
  return new Map(
    Object.entries(paths).map(([name, [target]]) => [
      name,
      pathToFileURL(fileURLToPath(new URL(target, root))).href,
    ]),
  );
})();

registerHooks({
  resolve(specifier, context, nextResolve) {
    const alias = aliases.get(specifier);
    if (alias !== undefined) return nextResolve(alias, context);
    if ((specifier.startsWith("./") || specifier.startsWith("../")) && specifier.endsWith(".js")) {
      const ts = new URL(`${specifier.slice(0, -3)}.ts`, context.parentURL);
      if (ts.protocol === "file:" && existsSync(fileURLToPath(ts))) {
        return nextResolve(ts.href, context);
      }
    }
    return nextResolve(specifier, context);
  },
});
