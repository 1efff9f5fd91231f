import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { decodeValue, type VariableValue, validateValue } from "../values/index.js";
import type { LocalCopy } from "./local-copy.js";
import { collectPages } from "./paged-listing.js";
import type { ReadOptions } from "./schema.js";
import type { SessionRpc } from "./session-rpc.js";
import type { Peeked, VariableSnapshot } from "./variable-snapshot.js";

/** One entry of a variable's history. */
export interface HistoryEntry {
  readonly version: number;
  readonly value: VariableValue;
  readonly timestamp: number;
  readonly changedBy: string;
  readonly metadata: Readonly<Record<string, string>>;
}

/** The reads a {@link SessionContext} offers (besides `get` and `peek`). */
export interface ReadMethods {
  /** A variable's snapshot, by name or id. */
  getVariable(identifier: string, options?: ReadOptions): Promise<VariableSnapshot>;
  /** Every cached snapshot, without any call. */
  cached(): Peeked[];
  exists(identifier: string): Promise<boolean>;
  /** Variables whose names match a glob ('*', '?'). */
  list(pattern?: string): Promise<VariableSnapshot[]>;
  /** Many variables in one call (cache hits need none); NOT_FOUND if any is missing. */
  getMany(
    identifiers: readonly string[],
    options?: ReadOptions,
  ): Promise<Record<string, VariableSnapshot>>;
  history(identifier: string, options?: { limit?: number }): Promise<HistoryEntry[]>;
}

/** The reads of a SessionContext: cache first, one shared request per miss. */
export interface VariableReads extends ReadMethods {
  /** The confirmed cached entry (SessionContext.peek without pending values). */
  peek(identifier: string): Peeked | undefined;
  /** Asks the server; concurrent calls for the same identifier share one request. */
  fetchOne(identifier: string, bypassCache: boolean): Promise<VariableSnapshot>;
  /** SessionContext.get, its hot path: a variable's value, by name or id. */
  getValue(identifier: string, options?: ReadOptions): Promise<VariableValue>;
}

/**
 * Creates the reads. `revalidation` returns the batch re-read in flight, if
 * any: a hydrated (possibly stale) entry waits for it instead of paying a
 * call of its own.
 */
export function createVariableReads(
  rpc: SessionRpc,
  local: LocalCopy,
  revalidation: () => Promise<void> | undefined,
): VariableReads {
  const { client, sessionId, call } = rpc;
  const { cache, accept } = local;
  const inflight = new Map<string, Promise<VariableSnapshot>>();

  const fetchOne = (identifier: string, bypassCache: boolean): Promise<VariableSnapshot> => {
    const key = bypassCache ? `!${identifier}` : identifier;
    let pending = inflight.get(key);
    if (pending === undefined) {
      pending = client
        .getVariable({ sessionId, variableIdentifier: identifier, bypassCache }, call)
        .then((res) => {
          if (res.variable === undefined) {
            throw new ConnectError(
              `server returned no variable for '${identifier}'`,
              Code.Internal,
            );
          }
          return accept(res.variable, "server");
        })
        .finally(() => inflight.delete(key));
      inflight.set(key, pending);
    }
    return pending;
  };

  const getVariable = async (
    identifier: string,
    read: ReadOptions = {},
  ): Promise<VariableSnapshot> => {
    if (read.bypassCache !== true) {
      const hit = cache.fresh(identifier, read.maxAgeMs);
      if (hit !== undefined) return hit.variable.snapshot;
      const running = revalidation();
      if (running !== undefined && cache.peek(identifier)?.possiblyStale === true) {
        await running.catch(() => undefined);
        const after = cache.fresh(identifier, read.maxAgeMs);
        if (after !== undefined) return after.variable.snapshot;
      }
    }
    return fetchOne(identifier, read.bypassCache === true);
  };

  /**
   * The hot path of every read: a fresh hit resolves without entering an
   * async function, so a cached read costs one map lookup and one settled
   * promise.
   */
  const getValue = (identifier: string, read?: ReadOptions): Promise<VariableValue> => {
    if (read === undefined) {
      const hit = cache.fresh(identifier);
      if (hit !== undefined) return Promise.resolve(hit.variable.snapshot.value);
    }
    return getVariable(identifier, read).then((snapshot) => snapshot.value);
  };

  return {
    fetchOne,
    getVariable,
    getValue,

    peek: (identifier) => cache.peek(identifier)?.peeked,

    cached: () => [...cache.entries()].map((e) => e.peeked),

    async getMany(identifiers, read = {}) {
      const out: Record<string, VariableSnapshot> = {};
      const misses: string[] = [];
      for (const identifier of identifiers) {
        const hit = read.bypassCache === true ? undefined : cache.fresh(identifier, read.maxAgeMs);
        if (hit !== undefined) out[identifier] = hit.variable.snapshot;
        else misses.push(identifier);
      }
      if (misses.length === 0) return out;
      const res = await client.getVariables(
        {
          sessionId,
          variableIdentifiers: misses,
          includeMetadata: true,
          bypassCache: read.bypassCache === true,
        },
        call,
      );
      for (const [identifier, message] of Object.entries(res.variables)) {
        out[identifier] = accept(message, "server");
      }
      if (res.missingVariables.length > 0) {
        throw new ConnectError(
          `variables not found: ${res.missingVariables.join(", ")}`,
          Code.NotFound,
        );
      }
      return out;
    },

    async exists(identifier) {
      if (cache.fresh(identifier) !== undefined) return true;
      const res = await client.getVariables(
        { sessionId, variableIdentifiers: [identifier], includeMetadata: true },
        call,
      );
      const message = res.variables[identifier];
      if (message !== undefined) accept(message, "server");
      return message !== undefined;
    },

    async list(pattern = "") {
      // Every page: the bridge bounds each one in bytes.
      const messages = await collectPages(async (pageToken) => {
        const res = await client.listVariables({ sessionId, pattern, pageToken }, call);
        return { items: res.variables, nextPageToken: res.nextPageToken };
      });
      return messages.map((message) => accept(message, "server"));
    },

    async history(identifier, { limit = 0 } = {}) {
      const res = await client.getVariableHistory(
        { sessionId, variableIdentifier: identifier, limit },
        call,
      );
      return res.entries.map((entry) => {
        const decoded = decodeValue(
          entry.value,
          entry.binaryValue.length > 0 ? entry.binaryValue : undefined,
        );
        return {
          version: entry.version,
          value: validateValue(decoded.type, decoded.value),
          timestamp: entry.timestamp === undefined ? 0 : timestampMs(entry.timestamp),
          changedBy: entry.changedBy,
          metadata: entry.metadata,
        };
      });
    },
  };
}
