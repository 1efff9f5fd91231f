import { Code, ConnectError } from "@connectrpc/connect";

/** One page of a listing as the bridge returns it. */
export interface ListingPage<T> {
  readonly items: readonly T[];
  /** Empty on the last page. */
  readonly nextPageToken: string;
}

/**
 * Follows a paged listing (ListVariables, GetExposedElixirTools) to its
 * end and returns every item, in the server's order. The bridge bounds each
 * page in bytes so that no reply exceeds what clients accept; callers of
 * the client library still get the whole listing in one call.
 *
 * A server that does not page (an older bridge) answers without a token:
 * one page, as before.
 */
export async function collectPages<T>(
  fetchPage: (pageToken: string) => Promise<ListingPage<T>>,
): Promise<T[]> {
  const all: T[] = [];
  const seen = new Set<string>();
  let token = "";
  do {
    const page = await fetchPage(token);
    all.push(...page.items);
    token = page.nextPageToken;
    // Tokens only move forward; one seen before would loop forever.
    if (seen.has(token)) {
      throw new ConnectError(
        "the server returned a page token it had returned before; the listing cannot advance",
        Code.DataLoss,
      );
    }
    seen.add(token);
  } while (token !== "");
  return all;
}
