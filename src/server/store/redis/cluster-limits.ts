/**
 * The deployment's limits on a Redis Cluster: the live sessions
 * (`maxSessions`) and each client's sessions and bytes
 * (`--max-sessions-per-client`, `--max-bytes-per-client`).
 *
 * On a single primary the session scripts count these atomically with the
 * session's keys. On a Cluster a script runs on one slot, the session's
 * group, while these counts span the deployment, so they live in keys of
 * their own (the live sessions in one, each client's in its own slot) and
 * the store counts around the session scripts: a place is reserved before
 * the create script and given back when the session ends or was not
 * created, and a commit that grows a session reserves its growth first
 * (the commit script refuses to grow by more than was reserved). The
 * counts are exact while replicas run; a replica that dies between a
 * reservation and its script (or between an end and its release), or a
 * commit whose reply is lost, leaves one session, or bytes, counted until the
 * keys are reset.
 */
import { clientBytesReached, clientQuotaReached, sessionLimitReached } from "../errors.js";
import type { RedisConnection } from "./connection.js";
import { defineScript, type LimitKeys, unexpectedReply } from "./script.js";

/** Reserves a place among the deployment's `max` live sessions. */
const admitSessionScript = defineScript({
  name: "admit-session",
  keys: ["limits"],
  args: ["max"],
  body: `
local n = tonumber(redis.call('HGET', limits, 'sessions') or '0')
if n >= tonumber(max) then return {'full'} end
redis.call('HINCRBY', limits, 'sessions', 1)
return {'ok'}
`,
  decode: decodeAdmission("admit-session"),
});

/** Reserves a client's place for a session of `bytes` bytes, within `max` sessions and `maxBytes` ("0": no limit). */
const admitClientScript = defineScript({
  name: "admit-client",
  keys: ["quota"],
  args: ["max", "maxBytes", "bytes"],
  body: `
local f = redis.call('HMGET', quota, 'n', 'bytes')
local held = tonumber(f[1] or '0')
if held >= tonumber(max) then return {'quota', tostring(held)} end
local cmax = tonumber(maxBytes)
local bheld = tonumber(f[2] or '0')
local b = tonumber(bytes)
if cmax > 0 and (bheld >= cmax or bheld + b > cmax) then return {'clientbytes', tostring(bheld)} end
redis.call('HINCRBY', quota, 'n', 1)
if b > 0 then redis.call('HINCRBY', quota, 'bytes', bytes) end
return {'ok'}
`,
  decode: decodeAdmission("admit-client"),
});

/** Adds `bytes` to a client's bytes unless that takes them past `maxBytes` ("0": no limit). */
const reserveBytesScript = defineScript({
  name: "reserve-bytes",
  keys: ["quota"],
  args: ["maxBytes", "bytes"],
  body: `
local held = tonumber(redis.call('HGET', quota, 'bytes') or '0')
local cmax = tonumber(maxBytes)
if cmax > 0 and held + tonumber(bytes) > cmax then return {'clientbytes', tostring(held)} end
redis.call('HINCRBY', quota, 'bytes', bytes)
return {'ok'}
`,
  decode: decodeAdmission("reserve-bytes"),
});

/**
 * Gives back `sessions` sessions and adds `bytes` (negative: takes away) to
 * a count; an empty count goes. (`0 - n`, not `-n`: Lua's -0 reaches Redis
 * as "-0", which HINCRBY refuses as not an integer.)
 */
const countScript = defineScript({
  name: "limits-count",
  keys: ["quota"],
  args: ["field", "sessions", "bytes"],
  body: `
local n = redis.call('HINCRBY', quota, field, 0 - tonumber(sessions))
if n <= 0 then
  redis.call('DEL', quota)
elseif tonumber(bytes) ~= 0 and field == 'n' then
  if redis.call('HINCRBY', quota, 'bytes', bytes) < 0 then redis.call('HSET', quota, 'bytes', '0') end
end
return n
`,
  decode(reply) {
    if (typeof reply !== "number") throw unexpectedReply("limits-count", reply);
    return reply;
  },
});

type Admission =
  | { readonly result: "ok" | "full" }
  | { readonly result: "quota" | "clientbytes"; readonly held: number };

function decodeAdmission(name: string): (reply: unknown) => Admission {
  return (reply) => {
    if (Array.isArray(reply)) {
      const [result, held] = reply as unknown[];
      if (result === "ok" || result === "full") return { result };
      if ((result === "quota" || result === "clientbytes") && typeof held === "string") {
        return { result, held: Number(held) };
      }
    }
    throw unexpectedReply(name, reply);
  };
}

/** A new session's claim on the limits. */
export interface Claim {
  readonly maxSessions: number;
  /** Its client's quota (SessionInit.quota), if it counts against one. */
  readonly quota?:
    | { readonly client: string; readonly max: number; readonly maxBytes?: number }
    | undefined;
  readonly bytes: number;
}

/** See the module comment. */
export interface ClusterLimits {
  /**
   * Reserves a place for a new session.
   *
   * @throws ConnectError RESOURCE_EXHAUSTED naming the limit reached.
   */
  admit(claim: Claim): Promise<void>;
  /** Gives back a session's place: it ended, or was not created. `client` "" for none. */
  release(client: string, bytes: number): Promise<void>;
  /** Adds what a session grew by (negative: shrank) to its client's bytes. */
  grow(client: string, bytes: number): Promise<void>;
  /**
   * Adds `bytes` a session is about to grow by to its client's bytes,
   * unless that takes them past `maxBytes` (0: no limit); then answers the
   * bytes the client holds and adds nothing.
   */
  reserve(
    client: string,
    bytes: number,
    maxBytes: number,
  ): Promise<{ readonly ok: true } | { readonly ok: false; readonly held: number }>;
}

/** The limits of a deployment on a Redis Cluster; `keysOf` names their keys. */
export function createClusterLimits(
  connection: RedisConnection,
  keysOf: (client: string) => LimitKeys,
): ClusterLimits {
  const count = (key: string, field: string, sessions: number, bytes: number) =>
    connection.run(
      countScript,
      { quota: key },
      { field, sessions: String(sessions), bytes: String(bytes) },
    );
  return {
    async admit({ maxSessions, quota, bytes }) {
      const keys = keysOf(quota?.client ?? "");
      const session = await connection.run(admitSessionScript, keys, { max: String(maxSessions) });
      if (session.result === "full") throw sessionLimitReached(maxSessions);
      if (quota === undefined) return;
      let client: Admission;
      try {
        client = await connection.run(admitClientScript, keys, {
          max: String(quota.max),
          maxBytes: String(quota.maxBytes ?? 0),
          bytes: String(bytes),
        });
      } catch (e) {
        await count(keys.limits, "sessions", 1, 0).catch(() => {
          // The error that matters is the one thrown below; this place stays counted.
        });
        throw e;
      }
      if (client.result === "ok") return;
      await count(keys.limits, "sessions", 1, 0);
      if (client.result === "quota") throw clientQuotaReached(client.held, quota.max);
      if (client.result === "clientbytes") {
        throw clientBytesReached(client.held, bytes, quota.maxBytes ?? 0);
      }
    },
    async release(client, bytes) {
      const keys = keysOf(client);
      await count(keys.limits, "sessions", 1, 0);
      if (client !== "") await count(keys.quota, "n", 1, -bytes);
    },
    async grow(client, bytes) {
      if (client === "" || bytes === 0) return;
      await count(keysOf(client).quota, "n", 0, bytes);
    },
    async reserve(client, bytes, maxBytes) {
      const reply = await connection.run(reserveBytesScript, keysOf(client), {
        maxBytes: String(maxBytes),
        bytes: String(bytes),
      });
      return reply.result === "ok"
        ? { ok: true }
        : { ok: false, held: "held" in reply ? reply.held : 0 };
    },
  };
}
