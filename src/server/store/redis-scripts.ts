/**
 * The Redis store's scripts. Each runs atomically in Redis; none of them
 * knows what a variable means: validation, versions, CAS, locks and history
 * are decided in TypeScript (variable-ops) against a copy of the session,
 * and a script only checks that the copy was current (the session's
 * revision), writes what the transaction staged, appends which variables
 * changed (ids and versions, never values) to the feed and refreshes the
 * sliding TTL, in one step.
 *
 * Keys, in this order for every script: the session hash (`rev`, `exp`,
 * `ttl`, `rec`, `bytes`), its variables, history and data hashes, its
 * dependency list, then the deployment's expiry index (a sorted set of
 * session ids by expiry), its change feed (a stream), its variable count,
 * its remote tools (a hash of `sessionId|name` to the tool), the count
 * of remote tools per session, the count of live sessions per client
 * (field: the client) with the bytes they hold (field: `bytes:` and the
 * client) and the number of the feed's last entry. The session's keys
 * share the `{id}` hash tag.
 */

/**
 * Lua shared by the scripts that write to the change feed: appends an
 * entry numbered one more than the last (field `n`, from the counter key),
 * then trims the feed by length and by age, so that what the feed holds is
 * bounded however fast or slowly it is written. Both trims are approximate
 * (`~`: whole stream nodes), which keeps them cheap. The age is measured on
 * Redis's clock, the one the entry ids are made of. The numbers let a
 * reader see that a trim took entries it had not read: Redis 7.0 records
 * no trace of a trim (its max-deleted-entry-id follows XDEL only).
 */
const appendToFeed = `
local function append(key, counter, maxLen, maxAgeMs, ...)
  local n = redis.call('INCR', counter)
  redis.call('XADD', key, 'MAXLEN', '~', maxLen, '*', 'n', tostring(n), ...)
  local t = redis.call('TIME')
  local oldest = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(maxAgeMs)
  if oldest > 0 then redis.call('XTRIM', key, 'MINID', '~', string.format('%.0f', oldest)) end
end
`;

/**
 * Lua shared by the scripts that end a session: it no longer counts
 * against the client that created it, neither as a session nor in bytes.
 */
const releaseClient = `
local function release(clients, s)
  local f = redis.call('HMGET', s, 'client', 'bytes')
  local client = f[1]
  if not client then return end
  if redis.call('HINCRBY', clients, client, -1) <= 0 then redis.call('HDEL', clients, client) end
  local b = tonumber(f[2] or '0')
  if b > 0 and redis.call('HINCRBY', clients, 'bytes:' .. client, -b) <= 0 then
    redis.call('HDEL', clients, 'bytes:' .. client)
  end
end
`;

/** The script definitions, for ioredis `defineCommand`. */
export const scripts = {
  /**
   * Loads a session if it changed since `cachedRev` and refreshes its TTL.
   * ARGV: cachedRev, now, graceMs, sessionId.
   * Returns nil (absent), {"expired"}, {"same", rev, exp} or
   * {"full", rev, exp, rec, vars, history, data, deps, bytes}.
   */
  ubLoad: {
    numberOfKeys: 12,
    lua: `
local s = KEYS[1]
local f = redis.call('HMGET', s, 'rev', 'exp', 'ttl')
if not f[1] then return false end
local rev, exp, ttl = tonumber(f[1]), tonumber(f[2]), tonumber(f[3])
local now = tonumber(ARGV[2])
if exp <= now then return {'expired'} end
local step = math.min(1000, ttl / 16)
if now + ttl - exp >= step then
  exp = now + ttl
  redis.call('HSET', s, 'exp', string.format('%.0f', exp))
  redis.call('ZADD', KEYS[6], string.format('%.0f', exp), ARGV[4])
  for i = 1, 5 do redis.call('PEXPIRE', KEYS[i], string.format('%.0f', ttl + tonumber(ARGV[3]))) end
end
if f[1] == ARGV[1] then return {'same', f[1], string.format('%.0f', exp)} end
return {'full', f[1], string.format('%.0f', exp), redis.call('HGET', s, 'rec'),
  redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3]), redis.call('HGETALL', KEYS[4]),
  redis.call('GET', KEYS[5]) or '', redis.call('HGET', s, 'bytes') or '0'}
`,
  },

  /**
   * Creates a session unless a live one has the id.
   * ARGV: now, graceMs, sessionId, replica, maxSessions, payload, changes
   * (without values), feedMaxLen, client ("" for none), maxPerClient,
   * feedMaxAgeMs, maxBytesPerClient (0 for none).
   * Returns {"exists"}, {"full"}, {"quota", held}, {"clientbytes", held} or
   * {"ok", rev, exp}.
   */
  ubCreate: {
    numberOfKeys: 12,
    lua: `${appendToFeed}${releaseClient}
local s = KEYS[1]
local now = tonumber(ARGV[1])
local f = redis.call('HMGET', s, 'exp')
if f[1] then
  if tonumber(f[1]) > now then return {'exists'} end
  release(KEYS[11], s)
  local n = redis.call('HLEN', KEYS[2])
  local tools = redis.call('HGET', s, 'tools')
  if tools then
    for _, name in ipairs(cjson.decode(tools)) do redis.call('HDEL', KEYS[9], ARGV[3] .. '|' .. name) end
    redis.call('HDEL', KEYS[10], ARGV[3])
  end
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
  redis.call('ZREM', KEYS[6], ARGV[3])
  if n > 0 then redis.call('INCRBY', KEYS[8], -n) end
  append(KEYS[7], KEYS[12], ARGV[8], ARGV[11], 't', 'e', 'sid', ARGV[3], 'why', 'expired')
end
if redis.call('ZCARD', KEYS[6]) >= tonumber(ARGV[5]) then return {'full'} end
local p = cjson.decode(ARGV[6])
if ARGV[9] ~= '' then
  local held = tonumber(redis.call('HGET', KEYS[11], ARGV[9]) or '0')
  if held >= tonumber(ARGV[10]) then return {'quota', tostring(held)} end
  local cmax = tonumber(ARGV[12] or '0')
  local bheld = tonumber(redis.call('HGET', KEYS[11], 'bytes:' .. ARGV[9]) or '0')
  local b = tonumber(p.bytes)
  if cmax > 0 and (bheld >= cmax or bheld + b > cmax) then return {'clientbytes', tostring(bheld)} end
  redis.call('HINCRBY', KEYS[11], ARGV[9], 1)
  if b > 0 then redis.call('HINCRBY', KEYS[11], 'bytes:' .. ARGV[9], string.format('%.0f', b)) end
  redis.call('HSET', s, 'client', ARGV[9], 'cmax', string.format('%.0f', cmax))
end
local ttl = tonumber(p.ttl)
local exp = now + ttl
redis.call('HSET', s, 'rev', '1', 'exp', string.format('%.0f', exp), 'ttl', p.ttl, 'rec', p.rec, 'bytes', p.bytes)
for id, v in pairs(p.vset) do redis.call('HSET', KEYS[2], id, v) end
for id, v in pairs(p.hset) do redis.call('HSET', KEYS[3], id, v) end
for k, v in pairs(p.dset) do redis.call('HSET', KEYS[4], k, v) end
if type(p.deps) == 'string' then redis.call('SET', KEYS[5], p.deps) end
for i = 1, 5 do redis.call('PEXPIRE', KEYS[i], string.format('%.0f', ttl + tonumber(ARGV[2]))) end
redis.call('ZADD', KEYS[6], string.format('%.0f', exp), ARGV[3])
if tonumber(p.nvar) ~= 0 then redis.call('INCRBY', KEYS[8], p.nvar) end
if ARGV[7] ~= '[]' then
  append(KEYS[7], KEYS[12], ARGV[8], ARGV[11], 't', 'c', 'sid', ARGV[3], 'rev', '1', 'r', ARGV[4], 'ev', ARGV[7])
end
return {'ok', '1', string.format('%.0f', exp)}
`,
  },

  /**
   * Commits a transaction made against revision `expectedRev`.
   * ARGV: expectedRev, now, graceMs, sessionId, replica, payload, changes
   * (without values), feedMaxLen, feedMaxAgeMs.
   * Returns nil (absent), {"expired"}, {"conflict", rev},
   * {"clientbytes", held, adding, max} (the session's client would hold
   * more than it may) or {"ok", rev, exp}.
   */
  ubCommit: {
    numberOfKeys: 12,
    lua: `${appendToFeed}
local s = KEYS[1]
local f = redis.call('HMGET', s, 'rev', 'exp', 'ttl', 'client', 'cmax', 'bytes')
if not f[1] then return false end
local now = tonumber(ARGV[2])
if tonumber(f[2]) <= now then return {'expired'} end
if f[1] ~= ARGV[1] then return {'conflict', f[1]} end
local ttl = tonumber(f[3])
local p = cjson.decode(ARGV[6])
if f[4] then
  local grow = tonumber(p.bytes) - tonumber(f[6] or '0')
  local field = 'bytes:' .. f[4]
  if grow > 0 then
    local held = tonumber(redis.call('HGET', KEYS[11], field) or '0')
    local cmax = tonumber(f[5] or '0')
    if cmax > 0 and held + grow > cmax then
      return {'clientbytes', tostring(held), string.format('%.0f', grow), f[5]}
    end
  end
  if grow ~= 0 and redis.call('HINCRBY', KEYS[11], field, string.format('%.0f', grow)) <= 0 then
    redis.call('HDEL', KEYS[11], field)
  end
end
for id, v in pairs(p.vset) do redis.call('HSET', KEYS[2], id, v) end
for _, id in ipairs(p.vdel) do redis.call('HDEL', KEYS[2], id) end
for id, v in pairs(p.hset) do redis.call('HSET', KEYS[3], id, v) end
for _, id in ipairs(p.hdel) do redis.call('HDEL', KEYS[3], id) end
for k, v in pairs(p.dset) do redis.call('HSET', KEYS[4], k, v) end
for _, k in ipairs(p.ddel) do redis.call('HDEL', KEYS[4], k) end
if type(p.deps) == 'string' then
  if p.deps == '[]' then redis.call('DEL', KEYS[5]) else redis.call('SET', KEYS[5], p.deps) end
end
local rev = tonumber(f[1]) + 1
local exp = now + ttl
local fields = {'rev', string.format('%.0f', rev), 'exp', string.format('%.0f', exp), 'bytes', p.bytes}
if type(p.rec) == 'string' then table.insert(fields, 'rec'); table.insert(fields, p.rec) end
redis.call('HSET', s, unpack(fields))
for i = 1, 5 do redis.call('PEXPIRE', KEYS[i], string.format('%.0f', ttl + tonumber(ARGV[3]))) end
redis.call('ZADD', KEYS[6], string.format('%.0f', exp), ARGV[4])
if tonumber(p.nvar) ~= 0 then redis.call('INCRBY', KEYS[8], p.nvar) end
if ARGV[7] ~= '[]' then
  append(KEYS[7], KEYS[12], ARGV[8], ARGV[9], 't', 'c', 'sid', ARGV[4], 'rev', string.format('%.0f', rev), 'r', ARGV[5], 'ev', ARGV[7])
end
return {'ok', string.format('%.0f', rev), string.format('%.0f', exp)}
`,
  },

  /**
   * Ends a session: for a cleanup always, for expiry only if it is due.
   * ARGV: sessionId, reason, feedMaxLen, dueBy ("" for a cleanup), feedMaxAgeMs.
   * Returns nil (absent or not due) or the number of variables it held.
   */
  ubEnd: {
    numberOfKeys: 12,
    lua: `${appendToFeed}${releaseClient}
local s = KEYS[1]
local f = redis.call('HMGET', s, 'exp')
if not f[1] then
  redis.call('ZREM', KEYS[6], ARGV[1])
  return false
end
if ARGV[4] ~= '' and tonumber(f[1]) > tonumber(ARGV[4]) then return false end
local n = redis.call('HLEN', KEYS[2])
local tools = redis.call('HGET', s, 'tools')
if tools then
  for _, name in ipairs(cjson.decode(tools)) do redis.call('HDEL', KEYS[9], ARGV[1] .. '|' .. name) end
  redis.call('HDEL', KEYS[10], ARGV[1])
end
release(KEYS[11], s)
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('ZREM', KEYS[6], ARGV[1])
if n > 0 then redis.call('INCRBY', KEYS[8], -n) end
append(KEYS[7], KEYS[12], ARGV[3], ARGV[5], 't', 'e', 'sid', ARGV[1], 'why', ARGV[2])
return n
`,
  },

  /**
   * Records one worker's remote tools, all in one scope (a session or
   * global), all or none: a name another worker holds in that scope or
   * globally is refused, and so are counts beyond the limits.
   * KEYS: the session hash (or any key for a global registration), the
   * tools hash, the per-session counts, the feed, the feed's counter.
   * ARGV: sessionId ("" = global), owner, maxTools, maxPerSession,
   * feedMaxLen, replica, tools (a JSON array of {name, doc}), feedMaxAgeMs.
   * Returns {"ok"}, {"nosession"}, {"taken", name}, {"full", held} or
   * {"sessionfull", held}.
   */
  ubTools: {
    numberOfKeys: 5,
    lua: `${appendToFeed}
local sid = ARGV[1]
if sid ~= '' and redis.call('EXISTS', KEYS[1]) == 0 then return {'nosession'} end
local list = cjson.decode(ARGV[7])
local added = 0
local fresh = {}
for _, t in ipairs(list) do
  local own = redis.call('HGET', KEYS[2], sid .. '|' .. t.name)
  local global = redis.call('HGET', KEYS[2], '|' .. t.name)
  for _, e in ipairs({own or false, global or false}) do
    if e and cjson.decode(e).workerId ~= ARGV[2] then return {'taken', t.name} end
  end
  if not own then
    added = added + 1
    table.insert(fresh, t.name)
  end
end
local held = redis.call('HLEN', KEYS[2])
if held + added > tonumber(ARGV[3]) then return {'full', tostring(held)} end
if sid ~= '' then
  local n = tonumber(redis.call('HGET', KEYS[3], sid) or '0')
  if n + added > tonumber(ARGV[4]) then return {'sessionfull', tostring(n)} end
  if added > 0 then
    redis.call('HINCRBY', KEYS[3], sid, added)
    local names = cjson.decode(redis.call('HGET', KEYS[1], 'tools') or '[]')
    for _, name in ipairs(fresh) do table.insert(names, name) end
    redis.call('HSET', KEYS[1], 'tools', cjson.encode(names))
  end
end
for _, t in ipairs(list) do redis.call('HSET', KEYS[2], sid .. '|' .. t.name, t.doc) end
append(KEYS[4], KEYS[5], ARGV[5], ARGV[8], 't', 'tools', 'sid', sid, 'r', ARGV[6], 'ev', ARGV[7])
return {'ok'}
`,
  },
} as const;
