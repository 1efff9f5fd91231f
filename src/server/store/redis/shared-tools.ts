/**
 * The remote tools of every replica, kept in Redis: a worker's
 * registration on one replica is checked once for all of them (ownership
 * and counts, atomically, by the tools script) and reaches the other
 * replicas through the change feed.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { sessionEndedBeforeTools } from "../../errors.js";
import type { SharedTool, SharedToolDirectory } from "../../tools/shared-tools.js";
import type { RedisConnection } from "./connection.js";
import type { FeedWrites } from "./feed-writes.js";
import type { KeySpace } from "./script.js";
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
      const { deployment } = keys;
      const reply = await connection.run(
        toolsScript,
        {
          // A global registration reads no session: any key of the deployment does.
          session: sid === "" ? deployment.tools : keys.of(sid).session,
          tools: deployment.tools,
          toolCounts: deployment.toolCounts,
          feed: deployment.feed,
          feedSeq: deployment.feedSeq,
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
        },
      );
      switch (reply.result) {
        case "ok":
          feedWrites.countTools(sid, replica, list);
          return;
        case "nosession":
          throw sessionEndedBeforeTools();
        case "taken":
          throw new ConnectError(
            `tool name '${reply.name}' is registered by another worker; choose another name`,
            Code.AlreadyExists,
          );
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
      const all = await connection.call(() => connection.commands.hgetall(keys.deployment.tools));
      return Object.values(all).map((doc) => JSON.parse(doc) as SharedTool);
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
