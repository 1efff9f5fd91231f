/**
 * The remote tools of every replica, kept in Redis: a worker's
 * registration on one replica is checked once for all of them (ownership
 * and counts, atomically, by the tools script) and reaches the other
 * replicas through the change feed.
 *
 * On a Redis Cluster a session's tools are kept in its group (script.ts)
 * and global ones in the first group; the tools script checks what its
 * group holds atomically, and what the other groups hold (their count, and
 * a global tool of the same name) as read just before it: two workers
 * registering at the same moment in different groups may together pass
 * `--max-tools`, or take a session tool and a global tool of one name.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { SharedTool, SharedToolDirectory } from "../../tools/shared-tools.js";
import { sessionEndedBeforeTools } from "../errors.js";
import type { RedisConnection } from "./connection.js";
import type { FeedWrites } from "./feed-writes.js";
import type { DeploymentKeys, KeySpace } from "./script.js";
import { toolsScript } from "./tools-script.js";

/** Options of {@link createSharedTools}. */
export interface SharedToolsOptions {
  readonly connection: RedisConnection;
  readonly keys: KeySpace;
  readonly feedWrites: FeedWrites;
  readonly replica: string;
  readonly feedMaxLen: string;
  readonly feedMaxAgeMs: string;
}

/** The directory, and what the feed reader and close() call. */
export interface SharedTools {
  readonly directory: SharedToolDirectory;
  /** Tells subscribers what another replica registered. */
  publish(tools: readonly SharedTool[]): void;
  /** Drops every subscriber. */
  clear(): void;
}

/** Creates the shared tool directory of a Redis store. */
export function createSharedTools(options: SharedToolsOptions): SharedTools {
  const { connection, keys, feedWrites, replica } = options;
  const listeners = new Set<(tools: readonly SharedTool[]) => void>();
  const directory: SharedToolDirectory = {
    async register(sessionId, tools, workerId, limits) {
      const sid = sessionId ?? "";
      const list = JSON.stringify(tools.map((t) => ({ name: t.name, doc: JSON.stringify(t) })));
      const first = keys.groups[0] as DeploymentKeys;
      const group = sid === "" ? first : keys.groupOf(sid);
      let heldElsewhere = 0;
      if (keys.groups.length > 1) {
        const others = keys.groups.filter((g) => g !== group);
        const [counts, globals] = await connection.call(() =>
          Promise.all([
            Promise.all(others.map((g) => connection.commands.hlen(g.tools))),
            group === first
              ? []
              : connection.commands.hmget(first.tools, ...tools.map((t) => `|${t.name}`)),
          ]),
        );
        heldElsewhere = counts.reduce((a, b) => a + b, 0);
        for (const [i, doc] of globals.entries()) {
          if (doc !== null && (JSON.parse(doc) as SharedTool).workerId !== workerId) {
            throw taken(tools[i]?.name ?? "");
          }
        }
      }
      const reply = await connection.run(
        toolsScript,
        {
          // A global registration reads no session: any key of its group does.
          session: sid === "" ? group.tools : keys.of(sid).session,
          tools: group.tools,
          toolCounts: group.toolCounts,
          feed: group.feed,
          feedSeq: group.feedSeq,
        },
        {
          sessionId: sid,
          owner: workerId,
          maxTools: String(limits.maxTools),
          maxPerSession: String(limits.maxToolsPerSession),
          feedMaxLen: options.feedMaxLen,
          replica,
          toolsJson: list,
          feedMaxAgeMs: options.feedMaxAgeMs,
          heldElsewhere: String(heldElsewhere),
        },
      );
      switch (reply.result) {
        case "ok":
          feedWrites.countTools(sid, replica, list);
          return;
        case "nosession":
          throw sessionEndedBeforeTools();
        case "taken":
          throw taken(reply.name);
        case "full":
          throw new ConnectError(
            `the bridge holds ${reply.held} remote tools; these would exceed the limit of ${limits.maxTools} (--max-tools)`,
            Code.ResourceExhausted,
          );
        case "sessionfull":
          throw new ConnectError(
            `the session holds ${reply.held} tools; more would exceed the limit of ${limits.maxToolsPerSession} (--max-tools-per-session)`,
            Code.ResourceExhausted,
          );
      }
    },
    async list() {
      const all = await connection.call(() =>
        Promise.all(keys.groups.map((g) => connection.commands.hgetall(g.tools))),
      );
      return all.flatMap((group) =>
        Object.values(group).map((doc) => JSON.parse(doc) as SharedTool),
      );
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => {
        listeners.delete(listener);
      };
    },
  };
  return {
    directory,
    publish(tools) {
      for (const listener of listeners) listener(tools);
    },
    clear() {
      listeners.clear();
    },
  };
}

function taken(name: string): ConnectError {
  return new ConnectError(
    `tool name '${name}' is registered by another worker; choose another name`,
    Code.AlreadyExists,
  );
}
