/**
 * Lets Node 24 run src/ from source: src/ imports its siblings with `.js`
 * specifiers (what tsc emits), so a relative `.js` import that does not
 * exist resolves to the `.ts` file beside it. Used with
 * --experimental-transform-types (src/gen has enums) by `npm run serve`.
 */
import { existsSync } from "node:fs";
import { registerHooks } from "node:module";
import { fileURLToPath } from "node:url";

registerHooks({
  resolve(specifier, context, nextResolve) {
    if ((specifier.startsWith("./") || specifier.startsWith("../")) && specifier.endsWith(".js")) {
      const ts = new URL(`${specifier.slice(0, -3)}.ts`, context.parentURL);
      if (ts.protocol === "file:" && existsSync(fileURLToPath(ts))) {
        return nextResolve(ts.href, context);
      }
    }
    return nextResolve(specifier, context);
  },
});
