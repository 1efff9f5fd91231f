/**
 * Lua functions the scripts share. Each reads keys and arguments by the
 * names the scripts bind (script.ts), listed beside it, besides its
 * parameters.
 */
import type { LuaFunctions } from "./script.js";

/**
 * Appends an entry to the feed, numbered one more than the last (field
 * `n`, from `feedSeq`), then trims the feed by length and by age, so that
 * what the feed holds is bounded however fast or slowly it is written.
 * Both trims are approximate (`~`: whole stream nodes), which keeps them
 * cheap. The age is measured on Redis's clock, the one the entry ids are
 * made of. The numbers let a reader see that a trim took entries it had
 * not read: Redis 7.0 records no trace of a trim (its
 * max-deleted-entry-id follows XDEL only).
 */
export const appendToFeed: LuaFunctions = {
  keys: ["feed", "feedSeq"],
  args: ["feedMaxLen", "feedMaxAgeMs"],
  lua: `
local function append(...)
  local n = redis.call('INCR', feedSeq)
  redis.call('XADD', feed, 'MAXLEN', '~', feedMaxLen, '*', 'n', tostring(n), ...)
  local t = redis.call('TIME')
  local oldest = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(feedMaxAgeMs)
  if oldest > 0 then redis.call('XTRIM', feed, 'MINID', '~', string.format('%.0f', oldest)) end
end
`,
};

/**
 * Publishes a commit on the session's channel: its revision, the replica
 * that made it and its changes without values ("[]" for none), one line
 * each. Every commit is published, those without changes too, so that the
 * revisions a follower gets are consecutive and a missed one is seen.
 */
export const publishCommit: LuaFunctions = {
  keys: ["channel"],
  args: ["replica"],
  lua: `
local function publish(rev, changes)
  redis.call('SPUBLISH', channel, rev .. '\\n' .. replica .. '\\n' .. changes)
end
`,
};

/** Makes the session's own keys expire `ms` milliseconds from now. */
export const expireSession: LuaFunctions = {
  keys: ["session", "vars", "history", "data", "deps"],
  args: [],
  lua: `
local function expire_in(ms)
  local px = string.format('%.0f', ms)
  for _, key in ipairs({session, vars, history, data, deps}) do redis.call('PEXPIRE', key, px) end
end
`,
};

/**
 * Ends the session `sessionId` for `why` ("cleanup" or "expired"): its
 * keys and remote tools go, it no longer counts against its client
 * (neither as a session nor in bytes), in the expiry index or in the
 * variable count, and the feed says it ended (with its last revision,
 * the last its channel published). Returns the number of
 * variables it held, then the client its limits are counted for outside
 * the script (field `qc`, Redis Cluster; "" for none) and its bytes, which
 * the caller gives back to that client.
 */
export const endSession: LuaFunctions = {
  keys: [
    "session",
    "vars",
    "history",
    "data",
    "deps",
    "expiry",
    "variableCount",
    "tools",
    "toolCounts",
    "clients",
  ],
  args: ["sessionId"],
  uses: [appendToFeed],
  lua: `
local function end_session(why)
  local n = redis.call('HLEN', vars)
  local names = redis.call('HGET', session, 'tools')
  if names then
    for _, name in ipairs(cjson.decode(names)) do redis.call('HDEL', tools, sessionId .. '|' .. name) end
    redis.call('HDEL', toolCounts, sessionId)
  end
  local f = redis.call('HMGET', session, 'client', 'bytes', 'qc', 'rev')
  local client = f[1]
  if client then
    if redis.call('HINCRBY', clients, client, -1) <= 0 then redis.call('HDEL', clients, client) end
    local b = tonumber(f[2] or '0')
    if b > 0 and redis.call('HINCRBY', clients, 'bytes:' .. client, -b) <= 0 then
      redis.call('HDEL', clients, 'bytes:' .. client)
    end
  end
  redis.call('DEL', session, vars, history, data, deps)
  redis.call('ZREM', expiry, sessionId)
  if n > 0 then redis.call('INCRBY', variableCount, -n) end
  append('t', 'e', 'sid', sessionId, 'why', why, 'rev', f[4] or '0')
  return n, f[3] or '', f[2] or '0'
end
`,
};
