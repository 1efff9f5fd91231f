import type { RE2JS } from "re2js";

/**
 * The RE2 engine behind `pattern` constraints, loaded on first need.
 *
 * re2js is about 150 kB of minified JavaScript, nearly half of a browser
 * bundle of the client, and most sessions never declare a pattern. So the
 * values module never imports it statically: the server provides it at
 * start-up ({@link providePatternEngine}, from a module that imports it),
 * and a client loads it with a dynamic `import()` the first time a variable
 * with a pattern constraint is parsed. Until it has arrived, the client
 * leaves the pattern check to the server, which always makes it.
 */
export type PatternEngine = typeof RE2JS;

let engine: PatternEngine | undefined;
let loading: Promise<PatternEngine> | undefined;

/** The engine if it is loaded, else undefined (see {@link loadPatternEngine}). */
export function loadedPatternEngine(): PatternEngine | undefined {
  return engine;
}

/**
 * Loads the engine (once; later calls share the first). Await it before
 * parsing constraints when pattern checks must be exact from the first
 * value on, e.g. in a Node process that uses `unified-session-bridge/values` alone.
 */
export function loadPatternEngine(): Promise<PatternEngine> {
  if (engine !== undefined) return Promise.resolve(engine);
  loading ??= import("re2js").then(
    (m) => {
      engine ??= m.RE2JS;
      return engine;
    },
    (e: unknown) => {
      // Let a later parse try again (a chunk that failed to download).
      loading = undefined;
      throw e;
    },
  );
  return loading;
}

/** Makes `re2js`, imported statically by the caller, the engine at once. */
export function providePatternEngine(re2js: PatternEngine): void {
  engine ??= re2js;
}
