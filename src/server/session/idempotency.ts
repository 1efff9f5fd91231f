import { hash } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import type { JsonValue } from "../../values/index.js";
import { utf8Length } from "../../values/utf8-length.js";
import { clip } from "../common/message-text.js";
import type { SessionTransaction, SessionView, VariableRecord } from "../store/session-store.js";

/**
 * Idempotency keys of writes: a write that carries a key is applied at most
 * once per session; a repeated key gets the first call's result (or its
 * refusal) without writing again. So a client whose connection failed after
 * sending can retry with the same key, and the write counts once.
 *
 * What a key was answered with is kept as a session data entry under a
 * reserved prefix, written by the same transaction as the write itself: the
 * stores already commit a session's data with its variables in one step
 * (one script on Redis), so a key is never recorded without its write nor a
 * write without its key, every replica sharing the store sees it, and it
 * counts in the session's bytes and ends with the session.
 */

/**
 * Most keys a session remembers; the oldest are forgotten first, 32 at a
 * time (so at least the last 225 are always remembered).
 */
export const IDEMPOTENCY_KEYS_PER_SESSION = 256;
/** How long a key is remembered after its write. */
export const IDEMPOTENCY_WINDOW_MS = 10 * 60_000;
/** Longest key accepted. */
export const MAX_IDEMPOTENCY_KEY = 128;
/**
 * Session data keys starting with this hold remembered writes; server-side
 * tools may not write them (VariableOps.setData refuses).
 */
export const IDEMPOTENCY_DATA_PREFIX = "~idem:";
/** Longest refusal message kept: a replayed refusal is clipped to it. */
const MAX_REMEMBERED_MESSAGE = 256;

const KEY = /^[A-Za-z0-9_.:-]+$/;

/**
 * Refusals that leave the session as it was and that a retry would be
 * answered with again: remembering them makes a retry see the first answer
 * even when the session has changed since. Capacity refusals (the budget,
 * the memory limit) and store failures are not remembered: nothing was
 * written, so a later retry may apply.
 */
const REMEMBERED_REFUSALS = new Set<Code>([
  Code.InvalidArgument,
  Code.NotFound,
  Code.AlreadyExists,
  Code.FailedPrecondition,
  Code.Aborted,
  Code.OutOfRange,
]);

/** A write's key and what identifies the request it came with. */
export interface WriteKey {
  readonly key: string;
  readonly fingerprint: string;
}

/** What a session remembers of one keyed write. */
interface Remembered {
  /** When the write was answered (epoch ms). */
  readonly t: number;
  /** The request's fingerprint. */
  readonly f: string;
  /** The result's summary, when the write was applied. */
  readonly ok?: JsonValue;
  /** The refusal's code and message, when it was refused. */
  readonly code?: number;
  readonly msg?: string;
}

/** How one kind of write is remembered and answered again. */
export interface KeyedWrite<T> {
  /** What of the result to keep: enough to answer the same again. */
  summary(result: T): JsonValue;
  /** The first result, rebuilt from its summary and the session as it is. */
  replay(view: SessionView, summary: JsonValue): T;
}

/**
 * The key of a write request and its fingerprint, or undefined without a
 * key. Refuses a key that is too long or has other characters with
 * INVALID_ARGUMENT. The fingerprint covers the RPC and every field but the
 * session id and the key, with map entries in key order, so the same
 * request sent again matches whatever order its maps were written in.
 */
export function writeKeyOf(
  rpc: string,
  request: { readonly idempotencyKey: string; readonly sessionId: string },
): WriteKey | undefined {
  const key = request.idempotencyKey;
  if (key === "") return undefined;
  if (key.length > MAX_IDEMPOTENCY_KEY || !KEY.test(key)) {
    throw new ConnectError(
      `idempotency_key ${clip(JSON.stringify(key), 40)} is not valid: use 1 to ${MAX_IDEMPOTENCY_KEY} characters of A-Z, a-z, 0-9, '_', '-', '.' and ':' (a UUID fits)`,
      Code.InvalidArgument,
    );
  }
  const { idempotencyKey: _key, sessionId: _session, ...fields } = request;
  const fingerprint = hash("sha256", `${rpc}\n${canonical(fields)}`, "base64url");
  return { key, fingerprint: fingerprint.slice(0, 22) };
}

/**
 * Runs a write once per key: `transact` is the session's transaction
 * (BridgeCore.transact), `apply` the write. Without a key it is just
 * `transact(apply)`.
 */
export async function once<T>(
  transact: <R>(fn: (tx: SessionTransaction) => R) => Promise<R>,
  now: () => number,
  writeKey: WriteKey | undefined,
  write: KeyedWrite<T>,
  apply: (tx: SessionTransaction) => T,
): Promise<T> {
  if (writeKey === undefined) return transact(apply);
  // The error the write itself threw in the callback's latest run (the
  // store may run it again: only that run counts). A failure the store
  // raised on its own (contention, a byte limit), or an answer from memory
  // (a replayed refusal, a reused key), is not a refusal to remember.
  let refusal: unknown;
  try {
    return await transact((tx) => {
      refusal = undefined;
      const seen = recall(tx, writeKey, now());
      if (seen !== undefined) {
        if (seen.code !== undefined) {
          throw new ConnectError(seen.msg ?? "", seen.code as Code);
        }
        return write.replay(tx, seen.ok ?? null);
      }
      let result: T;
      try {
        result = apply(tx);
      } catch (e) {
        refusal = e;
        throw e;
      }
      remember(
        tx,
        writeKey,
        { t: now(), f: writeKey.fingerprint, ok: write.summary(result) },
        now(),
      );
      return result;
    });
  } catch (e) {
    if (e !== refusal || !(e instanceof ConnectError) || !REMEMBERED_REFUSALS.has(e.code)) throw e;
    const remembered: Remembered = {
      t: now(),
      f: writeKey.fingerprint,
      code: e.code,
      msg: clip(e.rawMessage, MAX_REMEMBERED_MESSAGE),
    };
    // The refusal wrote nothing, so it is remembered on its own; when that
    // fails (the session ended, the store is away) the caller still gets
    // the refusal, and a retry is decided again: nothing can apply twice.
    await transact((tx) => {
      if (recall(tx, writeKey, now()) === undefined) remember(tx, writeKey, remembered, now());
    }).catch(() => undefined);
    throw e;
  }
}

/**
 * The variable `id` as it was at `version`: the current record, or the
 * record with the value of its retained history entry. Undefined when the
 * variable is gone or the version no longer retained (the reply then leaves
 * the variable out, and clients read it again).
 */
export function recordAt(
  view: SessionView,
  id: string,
  version: number,
): VariableRecord | undefined {
  const current = view.variable(id);
  if (current === undefined) return undefined;
  if (current.version === version) return current;
  const entry = view.history(current.id).find((e) => e.version === version);
  if (entry === undefined) return undefined;
  return {
    ...current,
    value: entry.value,
    version,
    updatedAt: entry.timestamp,
    changedBy: entry.changedBy,
    changeMetadata: entry.metadata,
  };
}

/** What the session remembers of the key, refusing a reuse for another request. */
function recall(view: SessionView, writeKey: WriteKey, t: number): Remembered | undefined {
  const seen = view.data(IDEMPOTENCY_DATA_PREFIX + writeKey.key) as Remembered | undefined;
  if (seen === undefined || seen.t + IDEMPOTENCY_WINDOW_MS <= t) return undefined;
  if (seen.f !== writeKey.fingerprint) {
    throw new ConnectError(
      `idempotency key ${JSON.stringify(writeKey.key)} reused for a different write: make a new key for each write, and reuse one only to retry the same request`,
      Code.InvalidArgument,
    );
  }
  return seen;
}

/**
 * How many of the oldest keys one pruning forgets at once: a session
 * remembers at least its last {@link IDEMPOTENCY_KEYS_PER_SESSION} − 32 + 1
 * keys and at most {@link IDEMPOTENCY_KEYS_PER_SESSION}, and a pass over
 * its keys happens once every 32 keyed writes instead of on each.
 */
const PRUNE_BATCH = 32;

/**
 * The data entry counting a session's remembered keys ('#' is not a key
 * character, so no key can be named like it).
 */
const COUNT_KEY = `${IDEMPOTENCY_DATA_PREFIX}#`;

/**
 * Records a key. While the session remembers fewer than
 * {@link IDEMPOTENCY_KEYS_PER_SESSION} keys this costs two small data
 * entries (the key's and the count's); at the cap, one pass forgets every
 * expired key and the {@link PRUNE_BATCH} oldest. (Expired keys are
 * ignored by {@link recall} until then: they only wait to be pruned.)
 */
function remember(tx: SessionTransaction, writeKey: WriteKey, entry: Remembered, t: number) {
  const dataKey = IDEMPOTENCY_DATA_PREFIX + writeKey.key;
  const known = tx.data(dataKey) !== undefined;
  let count = (tx.data(COUNT_KEY) as number | undefined) ?? 0;
  if (!known && count >= IDEMPOTENCY_KEYS_PER_SESSION) count = prune(tx, t);
  tx.setData(dataKey, entry as unknown as JsonValue, utf8Length(dataKey + JSON.stringify(entry)));
  if (!known) count++;
  tx.setData(COUNT_KEY, count, COUNT_KEY.length + 8);
}

/** Forgets expired keys and the oldest {@link PRUNE_BATCH}; returns how many are left. */
function prune(tx: SessionTransaction, t: number): number {
  const kept: [string, number][] = [];
  for (const dataKey of [...tx.dataKeys()]) {
    if (!dataKey.startsWith(IDEMPOTENCY_DATA_PREFIX) || dataKey === COUNT_KEY) continue;
    const seen = tx.data(dataKey) as Remembered | undefined;
    if (seen === undefined) continue;
    if (seen.t + IDEMPOTENCY_WINDOW_MS <= t) tx.setData(dataKey, undefined, 0);
    else kept.push([dataKey, seen.t]);
  }
  const over = kept.length - (IDEMPOTENCY_KEYS_PER_SESSION - PRUNE_BATCH);
  if (over <= 0) return kept.length;
  kept.sort((a, b) => a[1] - b[1]);
  for (const [dataKey] of kept.slice(0, over)) tx.setData(dataKey, undefined, 0);
  return kept.length - over;
}

/**
 * JSON with object keys in order, bytes as base64: the same request, the
 * same text. The text is what `JSON.stringify` makes with a replacer that
 * sorts keys and drops message bookkeeping (`$typeName`, `$unknown`), and
 * must stay so (remembered fingerprints outlive a restart or an upgrade);
 * it is written out directly, since a replacer call per value was most of
 * a keyed SetVariables' fingerprint.
 */
export function canonical(value: unknown): string {
  return canonicalOf(value, "") ?? "undefined";
}

/**
 * `value`, the member `key` of its parent, as JSON.stringify with that
 * replacer writes it; undefined where it leaves the member out.
 */
function canonicalOf(value: unknown, key: string): string | undefined {
  let v = value;
  // JSON.stringify calls toJSON before the replacer sees the value (a
  // Buffer, a Uint8Array too, is written as its toJSON object).
  if (typeof v === "object" && v !== null && typeof (v as Jsonable).toJSON === "function") {
    v = (v as Jsonable).toJSON(key);
  }
  if (typeof v === "string") return quoted(v);
  if (typeof v !== "object") return JSON.stringify(v);
  if (v === null) return "null";
  if (v instanceof Uint8Array) {
    return `"${Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64")}"`;
  }
  if (Array.isArray(v)) {
    let text = "[";
    for (let i = 0; i < v.length; i++) {
      if (i > 0) text += ",";
      text += canonicalOf(v[i], String(i)) ?? "null";
    }
    return `${text}]`;
  }
  let text = "{";
  let first = true;
  for (const k of Object.keys(v).sort()) {
    // Message bookkeeping ($typeName, $unknown) is not part of the request.
    if (k.startsWith("$")) continue;
    const member = canonicalOf((v as Record<string, unknown>)[k], k);
    if (member === undefined) continue;
    text += `${first ? "" : ","}${quoted(k)}:${member}`;
    first = false;
  }
  return `${text}}`;
}

/** Printable ASCII but '"' and '\\': a JSON string of these is the text in quotes. */
const PLAIN = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

/** A string as JSON.stringify writes it, without its call where nothing needs escaping. */
function quoted(s: string): string {
  return PLAIN.test(s) ? `"${s}"` : JSON.stringify(s);
}

/** A value with its own JSON form. */
interface Jsonable {
  toJSON(key: string): unknown;
}
