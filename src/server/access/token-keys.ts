/**
 * The configuration values of access: token signing keys (from flags, the
 * environment or a file) and the worker token's form, which must never be
 * taken for an access token.
 */
import { closeSync, openSync, readSync } from "node:fs";
import { list, token } from "../config/config-values.js";
import { isJws } from "./caller.js";

/**
 * Token signing keys: each a secret as the worker token is (at least 32
 * characters, not made by hand: `openssl rand -base64 32`), separated by
 * commas; the first signs.
 */
export function tokenKeys(raw: string): string[] {
  return list(raw, (key) => {
    token(key);
  });
}

/** The worker token: a {@link token} that is not in JWS form, so it is never taken for a JWT. */
export function workerToken(raw: string): string {
  const t = token(raw);
  if (isJws(t)) {
    throw new Error(
      "must not have the form of a JWT (three parts joined by dots); make one with openssl rand -base64 32",
    );
  }
  return t;
}

// A few keys of tens of bytes: reading more (a wrong path such as
// /dev/zero or a log file) would only hold memory for a refusal.
const maxKeyFileBytes = 16 * 1024;

/**
 * The keys of a token key file: one per line, the first signing; blank
 * lines and lines starting with # are skipped.
 *
 * @throws Error saying what is wrong, without quoting any key.
 */
export function readTokenKeyFile(file: string): string[] {
  const made = `write one with openssl rand -base64 32 > ${file}`;
  let text: string;
  let fd: number;
  try {
    fd = openSync(file, "r");
  } catch (e) {
    throw new Error(
      `cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? String(e)}); ${made}`,
    );
  }
  try {
    const buffer = Buffer.alloc(maxKeyFileBytes + 1);
    const length = readSync(fd, buffer, 0, buffer.length, null);
    if (length > maxKeyFileBytes) {
      throw new Error(
        `${file} is over ${maxKeyFileBytes} bytes; it must hold keys only, one per line`,
      );
    }
    text = buffer.toString("utf8", 0, length);
  } finally {
    closeSync(fd);
  }
  const keys: string[] = [];
  for (const [i, line] of text.split(/\r?\n/).entries()) {
    const key = line.trim();
    if (key === "" || key.startsWith("#")) continue;
    try {
      keys.push(token(key));
    } catch (e) {
      throw new Error(`${file} line ${i + 1}: ${(e as Error).message}`);
    }
  }
  if (keys.length === 0) throw new Error(`${file} holds no key; ${made}`);
  return keys;
}
