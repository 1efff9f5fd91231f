/**
 * Session affinity for a proxy in front of several bridge replicas: every
 * call of a session carries a header naming it, on which a load balancer
 * hashes (envoy/envoy.yaml: ring hash on `x-session-id`), so one session's
 * calls and its watch stream stay on one replica while it is healthy.
 */
import { Code, ConnectError, type Transport } from "@connectrpc/connect";

/** The header the client sends with `affinityHeader: true`, and Envoy's config hashes on. */
export const defaultAffinityHeader = "x-session-id";

/**
 * Wraps `transport` so that every call, unary or streaming, carries
 * `name: key()` (nothing while `key()` is empty, e.g. before the server
 * has minted the session's id).
 *
 * @throws ConnectError (INVALID_ARGUMENT) when `name` is not a header name.
 */
export function withAffinityHeader(
  transport: Transport,
  name: string,
  key: () => string,
): Transport {
  // Checked here, once, rather than failing every call later.
  if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) {
    throw new ConnectError(
      `affinityHeader: "${name}" is not an HTTP header name (letters, digits and !#$%&'*+.^_\`|~-)`,
      Code.InvalidArgument,
    );
  }
  const withKey = (header: HeadersInit | undefined): HeadersInit | undefined => {
    const value = key();
    if (value === "") return header;
    const headers = new Headers(header);
    headers.set(name, value);
    return headers;
  };
  return {
    unary: (method, signal, timeoutMs, header, input, contextValues) =>
      transport.unary(method, signal, timeoutMs, withKey(header), input, contextValues),
    stream: (method, signal, timeoutMs, header, input, contextValues) =>
      transport.stream(method, signal, timeoutMs, withKey(header), input, contextValues),
  };
}
