import { defineConfig } from "vite";

/**
 * The demo's Vite config, used by `vite build demo` (static files into
 * demo/dist) and by demo/stack.ts, which adds the dev server's port and the
 * proxy to the bridge.
 */
export default defineConfig({
  root: import.meta.dirname,
  // Relative asset URLs: the built page works wherever it is served from.
  base: "./",
  clearScreen: false,
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
  },
  optimizeDeps: {
    // Known up front, so the dev server never re-optimizes (and reloads the
    // page) on the first visit.
    include: [
      "@bufbuild/protobuf",
      "@bufbuild/protobuf/codegenv2",
      "@bufbuild/protobuf/wkt",
      "@connectrpc/connect",
      "@connectrpc/connect-web",
      "idb-keyval",
      "re2js",
    ],
  },
});
