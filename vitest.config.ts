import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

const src = (path: string) => fileURLToPath(new URL(`./src/${path}`, import.meta.url));

export default defineConfig({
  resolve: {
    // The package's own name, as examples and users import it, resolves to
    // the sources (the published package maps it to dist/).
    alias: [
      { find: /^unified-bridge\/server$/, replacement: src("server/index.ts") },
      { find: /^unified-bridge\/persist\/idb$/, replacement: src("client/persist/idb.ts") },
      { find: /^unified-bridge\/values$/, replacement: src("values/index.ts") },
      { find: /^unified-bridge$/, replacement: src("client/index.ts") },
    ],
  },
  test: {
    include: ["src/**/*.test.ts", "test/**/*.test.ts"],
    testTimeout: 20_000,
    hookTimeout: 60_000,
  },
});
