/**
 * The script that records remote tools, with the decoder of its reply
 * (see scripts.ts for what scripts are).
 */
import { appendToFeed } from "./lua-functions.js";
import { defineScript, unexpectedReply } from "./script.js";

/** What {@link toolsScript} did. */
export type ToolsReply =
  | { readonly result: "ok" }
  /** The session is gone. */
  | { readonly result: "nosession" }
  /** Another worker holds `name` in that scope or globally. */
  | { readonly result: "taken"; readonly name: string }
  /** The deployment holds `held` remote tools; these would exceed `maxTools`. */
  | { readonly result: "full"; readonly held: number }
  /** The session holds `held` remote tools; these would exceed `maxPerSession`. */
  | { readonly result: "sessionfull"; readonly held: number };

/**
 * Records one worker's (`owner`'s) remote tools, all in one scope (the
 * session `sessionId`, or global for ""), all or none: a name another
 * worker holds in that scope or globally is refused, and so are counts
 * beyond the limits. `toolsJson` is a JSON array of `{name, doc}`. For a
 * global registration, `session` may be any key (it is not read).
 * `heldElsewhere` is how many tools the deployment holds outside `tools`
 * (the other groups' on a Redis Cluster, "0" on a single primary).
 */
export const toolsScript = defineScript({
  name: "tools",
  durable: true,
  keys: ["session", "tools", "toolCounts", "feed", "feedSeq"],
  args: [
    "sessionId",
    "owner",
    "maxTools",
    "maxPerSession",
    "feedMaxLen",
    "replica",
    "toolsJson",
    "feedMaxAgeMs",
    "heldElsewhere",
  ],
  functions: [appendToFeed],
  body: `
local sid = sessionId
if sid ~= '' and redis.call('EXISTS', session) == 0 then return {'nosession'} end
local list = cjson.decode(toolsJson)
local added = 0
local fresh = {}
for _, t in ipairs(list) do
  local own = redis.call('HGET', tools, sid .. '|' .. t.name)
  local global = redis.call('HGET', tools, '|' .. t.name)
  for _, e in ipairs({own or false, global or false}) do
    if e and cjson.decode(e).workerId ~= owner then return {'taken', t.name} end
  end
  if not own then
    added = added + 1
    table.insert(fresh, t.name)
  end
end
local held = redis.call('HLEN', tools) + tonumber(heldElsewhere)
if held + added > tonumber(maxTools) then return {'full', tostring(held)} end
if sid ~= '' then
  local n = tonumber(redis.call('HGET', toolCounts, sid) or '0')
  if n + added > tonumber(maxPerSession) then return {'sessionfull', tostring(n)} end
  if added > 0 then
    redis.call('HINCRBY', toolCounts, sid, added)
    local names = cjson.decode(redis.call('HGET', session, 'tools') or '[]')
    for _, name in ipairs(fresh) do table.insert(names, name) end
    redis.call('HSET', session, 'tools', cjson.encode(names))
  end
end
for _, t in ipairs(list) do redis.call('HSET', tools, sid .. '|' .. t.name, t.doc) end
append('t', 'tools', 'sid', sid, 'r', replica, 'ev', toolsJson)
return {'ok'}
`,
  decode(reply): ToolsReply {
    if (!Array.isArray(reply)) throw unexpectedReply("tools", reply);
    const [result, a] = reply as unknown[];
    switch (result) {
      case "ok":
      case "nosession":
        return { result };
      case "taken":
        if (typeof a !== "string") break;
        return { result, name: a };
      case "full":
      case "sessionfull":
        if (typeof a !== "string") break;
        return { result, held: Number(a) };
    }
    throw unexpectedReply("tools", reply);
  },
});
