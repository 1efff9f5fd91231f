/**
 * Opens the Redis session store on demand. Its module, and ioredis with it,
 * is imported here and only when a Redis store is configured, so a server on
 * the in-memory store, and anything bundled from the client, never loads it.
 */

import { systemTimers } from "../common/timers.js";
import type { RedisStore, RedisStoreOptions } from "./redis-store.js";
import { parseRedisUrl } from "./redis-url.js";

/** A session store that knows whether its backend is reachable. */
export type HealthReportingStore = RedisStore;

/** What `./redis-store.js` exports (a type only: nothing is imported here). */
type RedisStoreModule = typeof import("./redis-store.js");

/** Options of {@link openRedisStore}. */
export interface OpenRedisStoreOptions extends RedisStoreOptions {
  /** How long to wait for Redis before giving up. */
  readonly connectTimeoutMs: number;
}

// A store that ignored its connect timeout must still not hold startup
// forever: past the timeout plus this much, the loader gives up itself.
const deadlineSlackMs = 2000;

/**
 * Loads the Redis store module and opens a store, within a bounded time.
 *
 * @throws Error naming the URL with its password replaced by `***`, and
 *   saying why it could not be opened; the text never holds the password.
 *
 * @example
 * ```ts
 * const store = await openRedisStore({ url: "redis://127.0.0.1:6379/0", connectTimeoutMs: 5000 });
 * const server = createBridgeServer({ sessionStore: store });
 * ```
 */
export async function openRedisStore(
  options: OpenRedisStoreOptions,
): Promise<HealthReportingStore> {
  const { redacted, password } = parseRedisUrl(options.url);
  const fail = (reason: string, cause: unknown): Error =>
    new Error(`cannot open the Redis store at ${redacted}: ${scrub(reason, password)}`, { cause });

  let mod: RedisStoreModule;
  try {
    mod = await loadRedisStoreModule();
  } catch (e) {
    throw fail(`its module cannot be loaded (${messageOf(e)})`, e);
  }

  // Through then(), so that a synchronous throw is reported like a rejection.
  const opening = Promise.resolve().then(() => mod.createRedisStore(options));
  const timeoutMs = options.connectTimeoutMs + deadlineSlackMs;
  const timers = options.timers ?? systemTimers;
  return new Promise((resolve, reject) => {
    let late = false;
    const timer = timers.setTimeout(() => {
      late = true;
      reject(
        fail(
          `not connected ${timeoutMs} ms after a connect timeout of ${options.connectTimeoutMs} ms`,
          undefined,
        ),
      );
    }, timeoutMs);
    opening.then(
      (store) => {
        timers.clearTimeout(timer);
        if (!late) {
          resolve(store);
          return;
        }
        store.close().catch((error: unknown) => {
          options.logger?.warn("closing a store that connected too late failed", { error });
        });
      },
      (e: unknown) => {
        timers.clearTimeout(timer);
        // The store's own message names the URL already: keep its reason only.
        const reason =
          e instanceof Error && e.name === "RedisConnectError" && "reason" in e
            ? String(e.reason)
            : messageOf(e);
        if (!late) reject(fail(reason, e));
      },
    );
  });
}

/**
 * Imports `./redis-store.js`. The specifier is a variable so that the
 * compiler does not resolve it (the module may not be in this build) and no
 * bundler pulls it, and ioredis, into a bundle of the server.
 */
async function loadRedisStoreModule(): Promise<RedisStoreModule> {
  const specifier: string = "./redis-store.js";
  const mod = (await import(specifier)) as Partial<RedisStoreModule>;
  if (typeof mod.createRedisStore !== "function") {
    throw new Error(`${specifier} does not export createRedisStore`);
  }
  return mod as RedisStoreModule;
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** One line, with the password (as written and decoded) replaced by `***`. */
function scrub(text: string, password: string): string {
  let out = text.replace(/\s*\n\s*/g, " ").trim();
  if (password !== "") {
    for (const secret of new Set([password, safeDecode(password)])) {
      out = out.split(secret).join("***");
    }
  }
  return out;
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    // parseRedisUrl already refused what does not decode; keep the text as is.
    return text;
  }
}
