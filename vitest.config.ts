import { defineConfig } from "vitest/config";

export default defineConfig({
  resolve: {
    // The package's own name, as examples and users import it, resolves to
    // the sources through tsconfig.json's "paths", the one alias map (the
    // published package maps it to dist/ through "exports").
    tsconfigPaths: true,
  },
  test: {
    include: ["src/**/*.test.ts", "test/**/*.test.ts"],
    testTimeout: 20_000,
    hookTimeout: 60_000,
  },
});
