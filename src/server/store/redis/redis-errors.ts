/**
 * What went wrong with Redis, in words a person can act on. ioredis's own
 * texts describe its internals ("Stream isn't writeable and
 * enableOfflineQueue options is false"); logs and start-up failures say
 * what happened and what to do instead, with Redis's own reply kept where
 * it is the clearest account (an error Redis itself sent).
 */

/** A readable account of `error`, a failure of an ioredis connection or call. */
export function describeRedisError(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  const code = (error as { code?: unknown } | null)?.code;
  if (code === "ECONNREFUSED" || /\bECONNREFUSED\b/.test(message)) {
    return "nothing accepts connections there (connection refused): is redis-server running, and is --store right?";
  }
  if (code === "ENOTFOUND" || code === "EAI_AGAIN" || /\bENOTFOUND\b|\bEAI_AGAIN\b/.test(message)) {
    return "its host name is not known (DNS lookup failed): check --store";
  }
  if (code === "ETIMEDOUT" || /\bETIMEDOUT\b/.test(message)) {
    return "no connection in time (connect timed out): check the address and any firewall between";
  }
  if (code === "ECONNRESET" || /\bECONNRESET\b|\bEPIPE\b/.test(message)) {
    return "Redis dropped the connection (reset)";
  }
  if (/enableOfflineQueue|Stream isn't writeable/.test(message)) {
    return "not connected to Redis (reconnecting)";
  }
  if (/^Connection is closed/.test(message)) {
    return "the connection to Redis is closed";
  }
  if (/^Command timed out/.test(message)) {
    return "Redis did not answer in time (is it overloaded or stopped?)";
  }
  if (/max retries per request|MaxRetriesPerRequest/i.test(message)) {
    return "Redis did not answer, even after a retry";
  }
  if (/^NOAUTH\b|^WRONGPASS\b/.test(message)) {
    return `Redis refused the credentials: check the user and password in --store (${message.split(" ")[0]})`;
  }
  if (/^LOADING\b/.test(message)) {
    return "Redis is still loading its data set; it answers once done";
  }
  if (/^READONLY\b/.test(message)) {
    return "this Redis is a read-only replica; point --store at the primary";
  }
  // A reply Redis sent (e.g. "OOM command not allowed …") says it best.
  return message;
}
