/**
 * The server checks every `pattern` constraint exactly, from its first
 * request on: importing this module gives the values module re2js at once
 * instead of the lazy load a browser client makes (see
 * values/pattern-engine.ts). Imported for that effect by the modules that
 * parse constraints (variable-ops, variable-batch), so no server path can
 * reach a pattern before the engine.
 */
import { RE2JS } from "re2js";
import { providePatternEngine } from "../../values/pattern-engine.js";

providePatternEngine(RE2JS);
