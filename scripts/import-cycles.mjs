// Finds import cycles among the TypeScript modules of the directories given
// (default: src), tests excluded. Every relative import counts, type-only
// ones included: `import … from`, `export … from`, `import "…"` and
// `import("…")`. A cycle is reported as a strongly connected group of
// modules, each listed with the imports that keep it in the group; the exit
// code is 1 when there is one.
//
//   node scripts/import-cycles.mjs src/server src/values
//
// Imports of modules outside the directories given are not followed, so a
// cycle is found only when all its modules are among them.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

const dirs = process.argv.slice(2);
if (dirs.length === 0) dirs.push("src");

const files = dirs.flatMap((dir) => modulesUnder(resolve(dir)));
const graph = new Map(files.map((file) => [file, importsOf(file)]));
const groups = stronglyConnected(graph).filter((group) => group.length > 1);

const shown = (file) => relative(process.cwd(), file);
for (const group of groups) {
  const members = new Set(group);
  console.log(`cycle among ${group.length} modules:`);
  for (const file of [...group].sort()) {
    const inside = (graph.get(file) ?? []).filter((target) => members.has(target));
    console.log(`  ${shown(file)} imports ${inside.map(shown).join(", ")}`);
  }
}
const scope = `${files.length} modules of ${dirs.join(", ")}`;
if (groups.length === 0) {
  console.log(`no import cycle among the ${scope}`);
} else {
  console.log(`${groups.length} import cycle${groups.length === 1 ? "" : "s"} among the ${scope}`);
  process.exitCode = 1;
}

/** The `.ts` files under `dir`, without tests and declaration files. */
function modulesUnder(dir) {
  const out = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...modulesUnder(path));
    else if (/(?<!\.test|\.d)\.ts$/.test(entry.name)) out.push(path);
  }
  return out;
}

/** The modules `file` imports by relative specifier, as absolute `.ts` paths. */
function importsOf(file) {
  const code = codeOf(readFileSync(file, "utf8"));
  const specifiers = [
    // import x from, import { a, type B } from, import type …, export … from, import "…"
    ...code.matchAll(/(?<![.\w$])(?:import|export)\s*(?:[\w$*{}\s,]*?\sfrom\s*)?(["'])(.+?)\1/g),
    // import("…"), in code or in a type (typeof import("…"))
    ...code.matchAll(/(?<![.\w$])import\s*\(\s*(["'])(.+?)\1\s*\)/g),
  ].map((m) => m[2]);
  const targets = new Set();
  for (const specifier of specifiers) {
    if (!specifier.startsWith("./") && !specifier.startsWith("../")) continue;
    const target = resolveModule(resolve(dirname(file), specifier));
    if (target !== undefined) targets.add(target);
  }
  return [...targets];
}

/** The `.ts` file a specifier names: `./x.js` is `./x.ts` (tsc's output for it names it so). */
function resolveModule(path) {
  const base = path.replace(/\.js$/, "");
  const candidates = [`${base}.ts`, base, join(base, "index.ts")];
  return candidates.find((candidate) => candidate.endsWith(".ts") && existsSync(candidate));
}

/**
 * The source as the import patterns read it: comments removed, and the text
 * of strings, template literals and regular expressions blanked, except the
 * strings that follow `from`, `import` or `import(`, so that an import in a
 * comment, a TSDoc example or a message is not taken for one. A `/` starts
 * a regular expression where a value is expected (not after a name, a
 * number or a closing bracket), the usual reading, which the sources here
 * never contradict.
 */
function codeOf(text) {
  let out = "";
  let i = 0;
  let last = ""; // the last character of code, for the regex-or-division question
  const templates = []; // brace depth of each `${` still open
  const skipEscaped = (stop) => {
    while (i < text.length && !stop(text[i])) i += text[i] === "\\" ? 2 : 1;
  };
  while (i < text.length) {
    const c = text[i];
    const next = text[i + 1];
    if (c === "/" && next === "/") {
      while (i < text.length && text[i] !== "\n") i++;
    } else if (c === "/" && next === "*") {
      const end = text.indexOf("*/", i + 2);
      i = end === -1 ? text.length : end + 2;
      out += " ";
    } else if (c === '"' || c === "'") {
      const start = i++;
      skipEscaped((ch) => ch === c || ch === "\n");
      i++;
      const specifier = /(?<![.\w$])(?:from|import)\s*(?:\(\s*)?$/.test(out.slice(-20));
      out += specifier ? text.slice(start, i) : `${c}${c}`;
      last = c;
    } else if (c === "`" || (c === "}" && templates.at(-1) === 0)) {
      if (c === "}") templates.pop();
      i++;
      skipEscaped((ch) => ch === "`" || ch === "$");
      while (text[i] === "$" && text[i + 1] !== "{") {
        i++;
        skipEscaped((ch) => ch === "`" || ch === "$");
      }
      if (text[i] === "$") {
        templates.push(0);
        out += c === "`" ? "`${" : "}${";
        i += 2;
      } else {
        out += c === "`" ? "``" : "}`";
        i++;
      }
      last = "`";
    } else if (c === "/" && regexMayStart(out, last)) {
      i++;
      let inClass = false;
      skipEscaped((ch) => {
        if (ch === "[") inClass = true;
        else if (ch === "]") inClass = false;
        return ch === "\n" || (!inClass && ch === "/");
      });
      i++;
      out += "/./";
      last = "/";
    } else {
      if (c === "{" && templates.length > 0) templates[templates.length - 1]++;
      if (c === "}" && templates.length > 0) templates[templates.length - 1]--;
      out += c;
      if (!/\s/.test(c)) last = c;
      i++;
    }
  }
  return out;
}

/** Whether a `/` after `code` (whose last non-space character is `last`) starts a regular expression. */
function regexMayStart(code, last) {
  if (/[)\]}`'"]/.test(last)) return false;
  if (!/[\w$]/.test(last)) return true;
  const word = /[\w$]+$/.exec(code.trimEnd())?.[0] ?? "";
  return /^(?:return|typeof|case|do|else|in|of|new|delete|void|throw|instanceof|yield|await)$/.test(
    word,
  );
}

/** Tarjan's strongly connected components of a graph given as adjacency lists. */
function stronglyConnected(graph) {
  const index = new Map();
  const low = new Map();
  const stack = [];
  const onStack = new Set();
  const groups = [];
  const visit = (node) => {
    index.set(node, index.size);
    low.set(node, index.get(node));
    stack.push(node);
    onStack.add(node);
    for (const target of graph.get(node) ?? []) {
      if (!graph.has(target)) continue;
      if (!index.has(target)) {
        visit(target);
        low.set(node, Math.min(low.get(node), low.get(target)));
      } else if (onStack.has(target)) {
        low.set(node, Math.min(low.get(node), index.get(target)));
      }
    }
    if (low.get(node) === index.get(node)) {
      const group = [];
      let member;
      do {
        member = stack.pop();
        onStack.delete(member);
        group.push(member);
      } while (member !== node);
      groups.push(group);
    }
  };
  for (const node of graph.keys()) if (!index.has(node)) visit(node);
  return groups;
}
