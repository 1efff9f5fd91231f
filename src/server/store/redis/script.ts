/**
 * A Lua script of the Redis store, with its keys and arguments by name and
 * the decoder of its reply. The Lua reads names, not positions: the text
 * sent to Redis begins by binding each key to `KEYS[i]` and each argument
 * to `ARGV[i]`, in the order the definition lists them, and
 * {@link runScript} sends the keys and arguments it is given by name in
 * that same order, so no caller counts positions.
 */
import { createHash } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Cluster, Redis } from "ioredis";
import { delay, type ServerTimers } from "../../common/timers.js";

/** Every key the scripts touch, by the name the Lua knows it by. */
export interface ScriptKeys {
  /** The session's hash: `rev`, `exp`, `ttl`, `rec`, `bytes`, and `client`, `cmax`, `tools` when set. */
  readonly session: string;
  /** The session's variables: id → record. */
  readonly vars: string;
  /** The session's history: variable id → past versions. */
  readonly history: string;
  /** The session's data: key → entry. */
  readonly data: string;
  /** The session's dependency list. */
  readonly deps: string;
  /**
   * The session's change channel (sharded pub/sub, not a key: named like
   * the session's keys so that it is in their slot on a Redis Cluster).
   */
  readonly channel: string;
  /** The deployment's live sessions by expiry time (a sorted set). */
  readonly expiry: string;
  /** The deployment's change feed (a stream). */
  readonly feed: string;
  /** The number of the feed's last entry. */
  readonly feedSeq: string;
  /** The deployment's variable count. */
  readonly variableCount: string;
  /** The deployment's remote tools: `sessionId|name` → tool. */
  readonly tools: string;
  /** Remote tools per session: session id → count. */
  readonly toolCounts: string;
  /** Live sessions per client (field: the client) and their bytes (field: `bytes:` and the client). */
  readonly clients: string;
}

/**
 * Keys of the deployment's limits on a Redis Cluster, where the session
 * scripts cannot count them (they run on the slot of one group): the live
 * sessions and each client's sessions and bytes.
 */
export interface LimitKeys {
  /** The deployment's live sessions (field `sessions`). */
  readonly limits: string;
  /** One client's live sessions (field `n`) and their bytes (field `bytes`). */
  readonly quota: string;
}

/** The name of a script key. */
export type KeyName = keyof ScriptKeys | keyof LimitKeys;

/** Every key a script may bind, by name. */
export type AnyKeys = ScriptKeys & LimitKeys;

/** The deployment's keys, which no session owns. */
export type DeploymentKeys = Omit<
  ScriptKeys,
  "session" | "vars" | "history" | "data" | "deps" | "channel"
>;

/** Groups a deployment's keys are spread over on a Redis Cluster. */
export const CLUSTER_GROUPS = 16;

/**
 * Where a deployment keeps everything, under one prefix; {@link keySpace}
 * chooses the layout.
 *
 * On a single Redis primary there is one group: a session's own keys share
 * its `{id}` hash tag, and the deployment's keys (expiry index, feed,
 * counters, tools, clients) are one of each, which the session scripts
 * write together with the session's. On a Redis Cluster a script may touch
 * one slot only, so the deployment's keys are kept once per group, each
 * group under its own hash tag, and a session's keys carry its group's tag:
 * every script touches one slot, and the groups spread over the cluster's
 * primaries. What spans the deployment (sweeping, counting, the tool
 * registry, the feed) reads every group.
 */
export interface KeySpace {
  /** The deployment's keys, one set per group (one group on a single primary). */
  readonly groups: readonly DeploymentKeys[];
  /** The keys of the group that holds `sessionId`. */
  groupOf(sessionId: string): DeploymentKeys;
  /** The shared audit trail (a stream; no script touches it). */
  readonly audit: string;
  /**
   * On a Redis Cluster, the keys of the limits the session scripts cannot
   * count for `client` ("" for none); undefined on a single primary, where
   * the scripts count them atomically (the `clients` key).
   */
  readonly limitsOf: ((client: string) => LimitKeys) | undefined;
  /** Every script key, the session's own for `sessionId`. */
  of(sessionId: string): ScriptKeys;
}

/** Names of a group's keys after its prefix. */
function deploymentKeys(at: string): DeploymentKeys {
  return {
    expiry: `${at}sessions`,
    feed: `${at}feed`,
    feedSeq: `${at}feedseq`,
    variableCount: `${at}variables`,
    tools: `${at}tools`,
    toolCounts: `${at}toolsper`,
    clients: `${at}clients`,
  };
}

/**
 * The key space of the deployment whose keys begin with `prefix`, on a
 * single primary or (`clustered`) on a Redis Cluster. A single primary
 * keeps the layout it always had, so existing deployments keep their data.
 */
export function keySpace(prefix: string, clustered = false): KeySpace {
  if (!clustered) {
    const deployment = deploymentKeys(prefix);
    return {
      groups: [deployment],
      groupOf: () => deployment,
      audit: `${prefix}audit`,
      limitsOf: undefined,
      of(sessionId) {
        const tag = `${prefix}{${sessionId}}`;
        return {
          session: `${tag}:s`,
          vars: `${tag}:v`,
          history: `${tag}:h`,
          data: `${tag}:d`,
          deps: `${tag}:g`,
          channel: `${tag}:c`,
          ...deployment,
        };
      },
    };
  }
  const tags = Array.from({ length: CLUSTER_GROUPS }, (_, g) => `${prefix}{g${g}}`);
  const groups = tags.map((tag) => deploymentKeys(`${tag}:`));
  const indexOf = (sessionId: string) => fnv1a(sessionId) % CLUSTER_GROUPS;
  return {
    groups,
    groupOf: (sessionId) => groups[indexOf(sessionId)] as DeploymentKeys,
    audit: `${prefix}audit`,
    limitsOf: (client) => ({
      limits: `${prefix}{limits}`,
      quota: `${prefix}{client:${client}}`,
    }),
    of(sessionId) {
      const g = indexOf(sessionId);
      // "s:" keeps a session's keys apart from the group's own names.
      const key = `${tags[g]}s:${sessionId}`;
      return {
        session: `${key}:s`,
        vars: `${key}:v`,
        history: `${key}:h`,
        data: `${key}:d`,
        deps: `${key}:g`,
        channel: `${key}:c`,
        ...(groups[g] as DeploymentKeys),
      };
    },
  };
}

/** FNV-1a of a string's UTF-16 code units: cheap and spreads short ids evenly. */
function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/**
 * Lua functions several scripts share. `keys` and `args` are the names
 * the functions read besides their parameters: every script that includes
 * them must bind those names too ({@link defineScript} checks).
 */
export interface LuaFunctions {
  readonly lua: string;
  readonly keys: readonly KeyName[];
  readonly args: readonly string[];
  /** Functions these call, defined before them in every script that includes them. */
  readonly uses?: readonly LuaFunctions[];
}

/** A script ready to run: see {@link defineScript}. */
export interface Script<K extends KeyName, A extends string, R> {
  /** What logs and errors call it. */
  readonly name: string;
  readonly keys: readonly K[];
  readonly args: readonly A[];
  /** The whole text sent to Redis: the bindings, the shared functions, the body. */
  readonly lua: string;
  /** Its SHA-1, which EVALSHA names it by. */
  readonly sha: string;
  /** Turns the reply Redis sent into a named object; throws on one the script cannot send. */
  readonly decode: (reply: unknown) => R;
  /** Whether its reply acknowledges a write to a caller, so that durability applies to it. */
  readonly durable: boolean;
}

/** Definition of a script; see {@link defineScript}. */
export interface ScriptDefinition<K extends KeyName, A extends string, R> {
  readonly name: string;
  /** The keys it touches, bound in this order to KEYS. */
  readonly keys: readonly K[];
  /** Its arguments (strings), bound in this order to ARGV. */
  readonly args: readonly A[];
  /** Shared functions it calls (with those they use). */
  readonly functions?: readonly LuaFunctions[];
  readonly body: string;
  readonly decode: (reply: unknown) => R;
  /**
   * Whether its reply acknowledges a write to a caller: with
   * `--store-durability replicated` it is answered only once a Redis
   * replica has the write (default false).
   */
  readonly durable?: boolean;
}

/**
 * Makes a script of a definition.
 *
 * @throws Error when a shared function reads a name the script does not
 *   bind (at import: a test that loads the store finds it).
 */
export function defineScript<const K extends KeyName, const A extends string, R>(
  definition: ScriptDefinition<K, A, R>,
): Script<K, A, R> {
  const { name, keys, args, body, decode } = definition;
  const functions: LuaFunctions[] = [];
  const include = (f: LuaFunctions) => {
    if (functions.includes(f)) return;
    for (const used of f.uses ?? []) include(used);
    functions.push(f);
  };
  for (const f of definition.functions ?? []) include(f);
  const bound = new Set<string>([...keys, ...args]);
  for (const f of functions) {
    const missing = [...f.keys, ...f.args].filter((n) => !bound.has(n));
    if (missing.length > 0) {
      throw new Error(`script ${name} includes Lua that reads ${missing.join(", ")}, unbound`);
    }
  }
  const bind = (names: readonly string[], table: string) =>
    names.map((n, i) => `local ${n} = ${table}[${i + 1}]\n`).join("");
  const lua = `${bind(keys, "KEYS")}${bind(args, "ARGV")}${functions.map((f) => f.lua).join("")}${body}`;
  const sha = createHash("sha1").update(lua).digest("hex");
  return { name, keys, args, lua, sha, decode, durable: definition.durable ?? false };
}

/**
 * Runs a script and decodes its reply: EVALSHA with the script's KEYS then
 * ARGV, each in the order it binds them, and the whole script (EVAL) when
 * this Redis has not cached it yet (a new or restarted Redis).
 *
 * With `waitMs`, the script is followed, in the same pipeline and so on the
 * same primary, by `WAIT 1 waitMs`: the reply is decoded only once a Redis
 * replica has everything this connection wrote.
 *
 * A script refused because its slot is being migrated (Redis Cluster) is
 * sent again, for up to a second.
 *
 * @throws ConnectError UNAVAILABLE when no replica confirmed within `waitMs`.
 */
export async function runScript<K extends KeyName, A extends string, R>(
  redis: Redis | Cluster,
  script: Script<K, A, R>,
  keys: Pick<AnyKeys, K>,
  args: Readonly<Record<A, string>>,
  timers: ServerTimers,
  waitMs?: number,
): Promise<R> {
  // While a Redis Cluster migrates the slot of the script's keys, some of
  // them may have moved and others not: Redis refuses the script, without
  // running it, with TRYAGAIN until the migration of those keys is done.
  for (let attempt = 1; ; attempt++) {
    try {
      return await runOnce(redis, script, keys, args, waitMs);
    } catch (e) {
      if (
        !(e instanceof Error && e.message.startsWith("TRYAGAIN")) ||
        attempt >= TRY_AGAIN_ATTEMPTS
      ) {
        throw e;
      }
      await delay(timers, TRY_AGAIN_DELAY_MS);
    }
  }
}

/** How often, and how far apart, a script refused during a slot migration is sent again. */
const TRY_AGAIN_ATTEMPTS = 40;
const TRY_AGAIN_DELAY_MS = 25;

/** {@link runScript} without the retries of a slot migration. */
async function runOnce<K extends KeyName, A extends string, R>(
  redis: Redis | Cluster,
  script: Script<K, A, R>,
  keys: Pick<AnyKeys, K>,
  args: Readonly<Record<A, string>>,
  waitMs: number | undefined,
): Promise<R> {
  const argv: string[] = [];
  for (const k of script.keys) argv.push(keys[k]);
  for (const a of script.args) argv.push(args[a]);
  // (NOSCRIPT is the error code of Redis's reply.)
  const noScript = (e: unknown) => e instanceof Error && e.message.startsWith("NOSCRIPT");
  if (waitMs === undefined) {
    let reply: unknown;
    try {
      reply = await redis.evalsha(script.sha, script.keys.length, ...argv);
    } catch (e) {
      if (!noScript(e)) throw e;
      reply = await redis.eval(script.lua, script.keys.length, ...argv);
    }
    return script.decode(reply);
  }
  const send = async (whole: boolean) => {
    const pipeline = redis.pipeline();
    if (whole) pipeline.eval(script.lua, script.keys.length, ...argv);
    else pipeline.evalsha(script.sha, script.keys.length, ...argv);
    pipeline.call("WAIT", "1", String(waitMs));
    return (await pipeline.exec()) ?? [];
  };
  let replies = await send(false);
  if (noScript(replies[0]?.[0])) replies = await send(true);
  const [error, reply] = replies[0] ?? [new Error("no reply")];
  if (error) throw error;
  const [waitError, replicas] = replies[1] ?? [new Error("no reply to WAIT")];
  if (waitError) throw waitError;
  if (Number(replicas) < 1) {
    throw new ConnectError(
      `the write reached the session store's primary, but no Redis replica confirmed it within ${waitMs} ms (--store-durability replicated), so it could be lost if that primary fails; it may still be applied: read the session before retrying`,
      Code.Unavailable,
    );
  }
  return script.decode(reply);
}

/** The error a decoder throws for a reply its script cannot send. */
export function unexpectedReply(script: string, reply: unknown): Error {
  return new Error(
    `unexpected reply from the ${script} script: ${JSON.stringify(reply)?.slice(0, 200)}`,
  );
}
