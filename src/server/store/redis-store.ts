/**
 * The Redis session store, for several bridge replicas serving the same
 * sessions. Its parts are in `./redis/`: the store itself (store.ts), its
 * connection and status (connection.ts), the committer, the change-feed
 * reader, the sweeper, the shared tools and audit trail, and the scripts
 * with their decoded replies. This module is what importers name (the
 * store loader imports it by this path, on demand).
 */
export { RedisConnectError } from "./redis/connection.js";
export {
  createRedisStore,
  type FeedAppended,
  type FeedRead,
  type RedisStore,
  type RedisStoreOptions,
} from "./redis/store.js";
