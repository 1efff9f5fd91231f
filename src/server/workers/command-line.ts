/**
 * Splits a worker command line (`--worker-command "python3 grpc_server.py
 * --adapter my.Adapter"`) into a program and its arguments the way a POSIX
 * shell would for plain words and simple quoting, without running a shell:
 * no variables, globs, pipes or redirections are expanded, so what the
 * operator wrote is exactly what runs.
 */

/**
 * The words of `line`: separated by unquoted whitespace; `'…'` keeps its
 * text as is, `"…"` keeps it except `\"`, `\\`, `\$` and `` \` ``, a
 * backslash outside quotes escapes the next character. Throws on an
 * unterminated quote or a trailing backslash.
 *
 * @example
 * ```ts
 * splitCommandLine(`python3 "my worker.py" --name 'a b'`);
 * // ["python3", "my worker.py", "--name", "a b"]
 * ```
 */
export function splitCommandLine(line: string): string[] {
  const words: string[] = [];
  let word = "";
  // A word exists once anything (even an empty pair of quotes) was read.
  let inWord = false;
  let i = 0;
  while (i < line.length) {
    const c = line[i] as string;
    if (/\s/.test(c)) {
      if (inWord) words.push(word);
      word = "";
      inWord = false;
      i++;
      continue;
    }
    inWord = true;
    if (c === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) throw new Error("unterminated ' quote");
      word += line.slice(i + 1, end);
      i = end + 1;
    } else if (c === '"') {
      i++;
      for (;;) {
        if (i >= line.length) throw new Error('unterminated " quote');
        const d = line[i] as string;
        if (d === '"') break;
        const next = line[i + 1];
        if (d === "\\" && next !== undefined && '"\\$`'.includes(next)) {
          word += next;
          i += 2;
        } else {
          word += d;
          i++;
        }
      }
      i++;
    } else if (c === "\\") {
      const next = line[i + 1];
      if (next === undefined) throw new Error("trailing backslash");
      word += next;
      i += 2;
    } else {
      word += c;
      i++;
    }
  }
  if (inWord) words.push(word);
  return words;
}
