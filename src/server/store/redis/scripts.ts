/**
 * The Redis store's scripts, each with the decoder of its reply. Each runs
 * atomically in Redis; none of them knows what a variable means:
 * validation, versions, CAS, locks and history are decided in TypeScript
 * (variable-ops) against a copy of the session, and a script only checks
 * that the copy was current (the session's revision), writes what the
 * transaction staged, publishes which variables changed (ids and versions,
 * never values) on the session's channel and refreshes the sliding TTL, in
 * one step. Session ends and tool registrations go on the feed, which
 * every replica reads.
 * Keys and arguments are bound by name (see script.ts); every argument is
 * a string.
 */
import { endSession, expireSession, publishCommit } from "./lua-functions.js";
import { defineScript, unexpectedReply } from "./script.js";

/** The session's keys and the deployment's that every session script binds, in KEYS order. */
const sessionScriptKeys = [
  "session",
  "vars",
  "history",
  "data",
  "deps",
  "expiry",
  "feed",
  "variableCount",
  "tools",
  "toolCounts",
  "clients",
  "feedSeq",
  "channel",
] as const;

/** A session's contents as {@link loadScript} returns them: stored texts, not decoded yet. */
export interface StoredSession {
  /** The session record (encodeSession). */
  readonly record: string;
  /** Variable id → record (encodeRecord). */
  readonly vars: readonly (readonly [string, string])[];
  /** Variable id → past versions (encodeHistory). */
  readonly history: readonly (readonly [string, string])[];
  /** Data key → entry (encodeData). */
  readonly data: readonly (readonly [string, string])[];
  /** The dependency list (encodeDependencies; "" for none). */
  readonly deps: string;
  readonly bytes: number;
}

/** What {@link loadScript} found. */
export type LoadReply =
  | { readonly result: "absent" }
  /** Due but not swept yet: the caller ends it. */
  | { readonly result: "expired" }
  /** The revision the caller holds is current. */
  | { readonly result: "same"; readonly rev: string; readonly expiresAt: number }
  | {
      readonly result: "full";
      readonly rev: string;
      readonly expiresAt: number;
      readonly stored: StoredSession;
      /** Its client whose bytes are counted outside the scripts (Redis Cluster). */
      readonly quota?: OutsideQuota;
    };

/** A session's client whose bytes are counted outside the scripts (Redis Cluster), with its limit (0: none). */
export interface OutsideQuota {
  readonly client: string;
  readonly maxBytes: number;
}

/**
 * Loads a session if it changed since `cachedRev` ("" for none) and
 * refreshes its sliding TTL (by at least a sixteenth of it, or 1 s, so
 * that a busy session is not rewritten on every read). `graceMs` is how
 * much longer its keys outlive its expiry.
 */
export const loadScript = defineScript({
  name: "load",
  keys: ["session", "vars", "history", "data", "deps", "expiry"],
  args: ["cachedRev", "now", "graceMs", "sessionId"],
  functions: [expireSession],
  body: `
local f = redis.call('HMGET', session, 'rev', 'exp', 'ttl')
if not f[1] then return false end
local exp, ttl = tonumber(f[2]), tonumber(f[3])
local t = tonumber(now)
if exp <= t then return {'expired'} end
local step = math.min(1000, ttl / 16)
if t + ttl - exp >= step then
  exp = t + ttl
  redis.call('HSET', session, 'exp', string.format('%.0f', exp))
  redis.call('ZADD', expiry, string.format('%.0f', exp), sessionId)
  expire_in(ttl + tonumber(graceMs))
end
if f[1] == cachedRev then return {'same', f[1], string.format('%.0f', exp)} end
return {'full', f[1], string.format('%.0f', exp), redis.call('HGET', session, 'rec'),
  redis.call('HGETALL', vars), redis.call('HGETALL', history), redis.call('HGETALL', data),
  redis.call('GET', deps) or '', redis.call('HGET', session, 'bytes') or '0',
  redis.call('HGET', session, 'qc') or '', redis.call('HGET', session, 'qcmax') or '0'}
`,
  decode(reply): LoadReply {
    if (reply === null) return { result: "absent" };
    if (!Array.isArray(reply)) throw unexpectedReply("load", reply);
    const [result, rev, exp, record, vars, history, data, deps, bytes, qc, qcmax] =
      reply as unknown[];
    if (result === "expired") return { result };
    if (typeof rev !== "string" || typeof exp !== "string") throw unexpectedReply("load", reply);
    const expiresAt = Number(exp);
    if (result === "same") return { result, rev, expiresAt };
    if (
      result !== "full" ||
      typeof record !== "string" ||
      typeof deps !== "string" ||
      typeof bytes !== "string"
    ) {
      throw unexpectedReply("load", reply);
    }
    const stored: StoredSession = {
      record,
      vars: pairs(vars, reply),
      history: pairs(history, reply),
      data: pairs(data, reply),
      deps,
      bytes: Number(bytes),
    };
    if (typeof qc === "string" && qc !== "" && typeof qcmax === "string") {
      return { result, rev, expiresAt, stored, quota: { client: qc, maxBytes: Number(qcmax) } };
    }
    return { result, rev, expiresAt, stored };
  },
});

/** A session the script ended, whose limits counted outside it (Redis Cluster) are to be given back. */
export interface EndedOutside {
  /** The client its limits are counted for ("" for none). */
  readonly client: string;
  readonly bytes: number;
}

/** What {@link createScript} did. */
export type CreateReply =
  | {
      readonly result: "ok";
      readonly rev: string;
      readonly expiresAt: number;
      /** An expired session of the same id it ended first. */
      readonly ended?: EndedOutside;
    }
  /** A live session has the id. */
  | { readonly result: "exists" }
  /** `maxSessions` are live. */
  | { readonly result: "full" }
  /** The client holds `held` sessions, its maximum. */
  | { readonly result: "quota"; readonly held: number }
  /** The client's sessions hold `held` bytes, and this one would take them past its maximum. */
  | { readonly result: "clientbytes"; readonly held: number };

/**
 * Creates a session unless a live one has the id (one that expired and
 * was not swept yet is ended first). `payload` is what its setup staged
 * (staging.ts) with its `ttl`; `changes` are its changes without values
 * ("[]" for none). `quotaClient` ("" for none) is counted against
 * `quotaMax` sessions and `quotaMaxBytes` bytes ("0" for no limit).
 * `limitsClient` ("" for none) is the client whose limits the caller
 * counts outside the script (Redis Cluster), kept in the session's `qc`
 * with its bytes limit `limitsMaxBytes` in `qcmax`.
 */
export const createScript = defineScript({
  name: "create",
  durable: true,
  keys: sessionScriptKeys,
  args: [
    "now",
    "graceMs",
    "sessionId",
    "replica",
    "maxSessions",
    "payload",
    "changes",
    "feedMaxLen",
    "quotaClient",
    "quotaMax",
    "feedMaxAgeMs",
    "quotaMaxBytes",
    "limitsClient",
    "limitsMaxBytes",
  ],
  functions: [expireSession, endSession, publishCommit],
  body: `
local t = tonumber(now)
local f = redis.call('HMGET', session, 'exp')
local ended = {}
if f[1] then
  if tonumber(f[1]) > t then return {'exists'} end
  local _, qc, b = end_session('expired')
  ended = {qc, b}
end
if redis.call('ZCARD', expiry) >= tonumber(maxSessions) then return {'full'} end
local p = cjson.decode(payload)
if quotaClient ~= '' then
  local held = tonumber(redis.call('HGET', clients, quotaClient) or '0')
  if held >= tonumber(quotaMax) then return {'quota', tostring(held)} end
  local cmax = tonumber(quotaMaxBytes)
  local bheld = tonumber(redis.call('HGET', clients, 'bytes:' .. quotaClient) or '0')
  local b = tonumber(p.bytes)
  if cmax > 0 and (bheld >= cmax or bheld + b > cmax) then return {'clientbytes', tostring(bheld)} end
  redis.call('HINCRBY', clients, quotaClient, 1)
  if b > 0 then redis.call('HINCRBY', clients, 'bytes:' .. quotaClient, string.format('%.0f', b)) end
  redis.call('HSET', session, 'client', quotaClient, 'cmax', string.format('%.0f', cmax))
end
local ttl = tonumber(p.ttl)
local exp = t + ttl
redis.call('HSET', session, 'rev', '1', 'exp', string.format('%.0f', exp), 'ttl', p.ttl, 'rec', p.rec, 'bytes', p.bytes)
for id, v in pairs(p.vset) do redis.call('HSET', vars, id, v) end
for id, v in pairs(p.hset) do redis.call('HSET', history, id, v) end
for k, v in pairs(p.dset) do redis.call('HSET', data, k, v) end
if type(p.deps) == 'string' then redis.call('SET', deps, p.deps) end
if limitsClient ~= '' then redis.call('HSET', session, 'qc', limitsClient, 'qcmax', limitsMaxBytes) end
expire_in(ttl + tonumber(graceMs))
redis.call('ZADD', expiry, string.format('%.0f', exp), sessionId)
if tonumber(p.nvar) ~= 0 then redis.call('INCRBY', variableCount, p.nvar) end
publish('1', changes)
return {'ok', '1', string.format('%.0f', exp), ended[1], ended[2]}
`,
  decode(reply): CreateReply {
    if (!Array.isArray(reply)) throw unexpectedReply("create", reply);
    const [result, a, b, c, d] = reply as unknown[];
    switch (result) {
      case "exists":
      case "full":
        return { result };
      case "quota":
      case "clientbytes":
        if (typeof a !== "string") break;
        return { result, held: Number(a) };
      case "ok":
        if (typeof a !== "string" || typeof b !== "string") break;
        if (typeof c === "string" && typeof d === "string") {
          return { result, rev: a, expiresAt: Number(b), ended: { client: c, bytes: Number(d) } };
        }
        return { result, rev: a, expiresAt: Number(b) };
    }
    throw unexpectedReply("create", reply);
  },
});

/** What {@link commitScript} did. */
export type CommitReply =
  | {
      readonly result: "ok";
      readonly rev: string;
      readonly expiresAt: number;
      /** The client whose limits are counted outside the script (`qc`; "" for none). */
      readonly limitsClient: string;
      /** How many bytes the session grew by (negative: shrank). */
      readonly grew: number;
    }
  | { readonly result: "absent" }
  | { readonly result: "expired" }
  /** Another commit made revision `rev` first. */
  | { readonly result: "conflict"; readonly rev: string }
  /**
   * The session grows by `grow` bytes, more than the caller reserved for
   * its client outside the script (Redis Cluster): reserve, then commit again.
   */
  | { readonly result: "reserve"; readonly quota: OutsideQuota; readonly grow: number }
  /** The session's client would hold more bytes than its `max`. */
  | {
      readonly result: "clientbytes";
      readonly held: number;
      readonly adding: number;
      readonly max: number;
    };

/**
 * Commits a transaction made against revision `expectedRev`. `payload` is
 * what it staged (staging.ts); `changes` its changes without values ("[]"
 * for none). On a Redis Cluster, a session whose client's bytes are
 * counted outside the script (`qc`) grows only by what the caller
 * `reserved` for it there ("0" for nothing): more is answered "reserve".
 */
export const commitScript = defineScript({
  name: "commit",
  durable: true,
  keys: [
    "session",
    "vars",
    "history",
    "data",
    "deps",
    "expiry",
    "feed",
    "variableCount",
    "clients",
    "feedSeq",
    "channel",
  ],
  args: [
    "expectedRev",
    "now",
    "graceMs",
    "sessionId",
    "replica",
    "payload",
    "changes",
    "feedMaxLen",
    "feedMaxAgeMs",
    "reserved",
  ],
  functions: [expireSession, publishCommit],
  body: `
local f = redis.call('HMGET', session, 'rev', 'exp', 'ttl', 'client', 'cmax', 'bytes', 'qc', 'qcmax')
if not f[1] then return false end
local t = tonumber(now)
if tonumber(f[2]) <= t then return {'expired'} end
if f[1] ~= expectedRev then return {'conflict', f[1]} end
local ttl = tonumber(f[3])
local p = cjson.decode(payload)
if f[7] and f[7] ~= '' then
  local grow = tonumber(p.bytes) - tonumber(f[6] or '0')
  if grow > tonumber(reserved) then
    return {'reserve', f[7], f[8] or '0', string.format('%.0f', grow)}
  end
end
if f[4] then
  local grow = tonumber(p.bytes) - tonumber(f[6] or '0')
  local field = 'bytes:' .. f[4]
  if grow > 0 then
    local held = tonumber(redis.call('HGET', clients, field) or '0')
    local cmax = tonumber(f[5] or '0')
    if cmax > 0 and held + grow > cmax then
      return {'clientbytes', tostring(held), string.format('%.0f', grow), f[5]}
    end
  end
  if grow ~= 0 and redis.call('HINCRBY', clients, field, string.format('%.0f', grow)) <= 0 then
    redis.call('HDEL', clients, field)
  end
end
for id, v in pairs(p.vset) do redis.call('HSET', vars, id, v) end
for _, id in ipairs(p.vdel) do redis.call('HDEL', vars, id) end
for id, v in pairs(p.hset) do redis.call('HSET', history, id, v) end
for _, id in ipairs(p.hdel) do redis.call('HDEL', history, id) end
for k, v in pairs(p.dset) do redis.call('HSET', data, k, v) end
for _, k in ipairs(p.ddel) do redis.call('HDEL', data, k) end
if type(p.deps) == 'string' then
  if p.deps == '[]' then redis.call('DEL', deps) else redis.call('SET', deps, p.deps) end
end
local rev = tonumber(f[1]) + 1
local exp = t + ttl
local fields = {'rev', string.format('%.0f', rev), 'exp', string.format('%.0f', exp), 'bytes', p.bytes}
if type(p.rec) == 'string' then table.insert(fields, 'rec'); table.insert(fields, p.rec) end
redis.call('HSET', session, unpack(fields))
expire_in(ttl + tonumber(graceMs))
redis.call('ZADD', expiry, string.format('%.0f', exp), sessionId)
if tonumber(p.nvar) ~= 0 then redis.call('INCRBY', variableCount, p.nvar) end
publish(string.format('%.0f', rev), changes)
local grew = tonumber(p.bytes) - tonumber(f[6] or '0')
return {'ok', string.format('%.0f', rev), string.format('%.0f', exp), f[7] or '', string.format('%.0f', grew)}
`,
  decode(reply): CommitReply {
    if (reply === null) return { result: "absent" };
    if (!Array.isArray(reply)) throw unexpectedReply("commit", reply);
    const [result, a, b, c, d] = reply as unknown[];
    switch (result) {
      case "expired":
        return { result };
      case "conflict":
        if (typeof a !== "string") break;
        return { result, rev: a };
      case "clientbytes":
        if (typeof a !== "string" || typeof b !== "string" || typeof c !== "string") break;
        return { result, held: Number(a), adding: Number(b), max: Number(c) };
      case "reserve":
        if (typeof a !== "string" || typeof b !== "string" || typeof c !== "string") break;
        return { result, quota: { client: a, maxBytes: Number(b) }, grow: Number(c) };
      case "ok":
        if (typeof a !== "string" || typeof b !== "string") break;
        if (typeof c !== "string" || typeof d !== "string") break;
        return { result, rev: a, expiresAt: Number(b), limitsClient: c, grew: Number(d) };
    }
    throw unexpectedReply("commit", reply);
  },
});

/** What {@link endScript} did: `variables` is what the session held. */
export type EndReply =
  | { readonly result: "ended"; readonly variables: number; readonly outside: EndedOutside }
  | { readonly result: "none" };

/**
 * Ends a session: for a cleanup always, for expiry only if it is due by
 * `dueBy` ("" for a cleanup). The result is "none" when it is absent or
 * not due.
 */
export const endScript = defineScript({
  name: "end",
  durable: true,
  keys: sessionScriptKeys,
  args: ["sessionId", "reason", "feedMaxLen", "dueBy", "feedMaxAgeMs"],
  functions: [endSession],
  body: `
local f = redis.call('HMGET', session, 'exp')
if not f[1] then
  redis.call('ZREM', expiry, sessionId)
  return false
end
if dueBy ~= '' and tonumber(f[1]) > tonumber(dueBy) then return false end
local n, qc, b = end_session(reason)
return {n, qc, b}
`,
  decode(reply): EndReply {
    if (reply === null) return { result: "none" };
    if (!Array.isArray(reply)) throw unexpectedReply("end", reply);
    const [n, client, bytes] = reply as unknown[];
    if (typeof n !== "number" || typeof client !== "string" || typeof bytes !== "string") {
      throw unexpectedReply("end", reply);
    }
    return { result: "ended", variables: n, outside: { client, bytes: Number(bytes) } };
  },
});

/** A flat HGETALL reply as [field, value] pairs. */
function pairs(flat: unknown, reply: unknown): [string, string][] {
  if (!Array.isArray(flat)) throw unexpectedReply("load", reply);
  const out: [string, string][] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const field: unknown = flat[i];
    const value: unknown = flat[i + 1];
    if (typeof field !== "string" || typeof value !== "string")
      throw unexpectedReply("load", reply);
    out.push([field, value]);
  }
  return out;
}
