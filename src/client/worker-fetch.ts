/**
 * A `fetch` for connect-web transports in Cloudflare Workers (workerd).
 *
 * connect-web calls fetch with `redirect: "error"` (an RPC must never
 * follow a redirect). workerd rejects that value while constructing the
 * Request ("error" won't be implemented since it does not make sense at the
 * edge), so every call would fail before reaching the network. This wrapper
 * asks for `redirect: "manual"` instead and turns a 3xx answer into the
 * same network error "error" would have produced, so behaviour matches the
 * browser. It also drops `mode` and `credentials`, which older workerd
 * versions reject as not implemented.
 *
 * @example
 * ```ts
 * const transport = createConnectTransport({
 *   baseUrl: env.BRIDGE_URL,
 *   useBinaryFormat: true,
 *   fetch: workerFetch,
 * });
 * ```
 */
export const workerFetch: typeof globalThis.fetch = async (input, init) => {
  const { mode: _mode, credentials: _credentials, ...rest } = init ?? {};
  const response = await globalThis.fetch(input, { ...rest, redirect: "manual" });
  if (response.status >= 300 && response.status < 400) {
    await response.body?.cancel();
    throw new TypeError(
      `the bridge answered with a redirect (${response.status}); RPCs do not follow redirects: point baseUrl at the final address`,
    );
  }
  return response;
};
