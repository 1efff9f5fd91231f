import { type DescMessage, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Limits } from "../limits/limits.js";

/**
 * Pages of name-ordered listings (ListVariables, GetExposedElixirTools and
 * what InitializeSession inlines): a tiny request must never make the
 * server build, or a client receive, a reply as large as a whole session or
 * tool registry. A page ends before the item that would take it over its
 * byte budget, so a default grpcio client (4 MiB receive limit) can read
 * every page; the token names the last item given, so pages neither repeat
 * nor skip an item that stays while the listing is followed.
 */

const KiB = 1024;
const MiB = 1024 * KiB;

/** Bytes of one page of ListVariables or GetExposedElixirTools, at most. */
export const PAGE_BYTES = 2 * MiB;

/**
 * Bytes of each listing InitializeSession inlines. Snakepit's Python
 * workers call InitializeSession before every tool call and never read
 * these fields, so they are kept to what a small session holds.
 */
export const INLINE_BYTES = 64 * KiB;

/** What a caller asks of a paged listing. */
export interface PageRequest {
  /** The most items; 0 = as many as fit in the bytes. */
  readonly pageSize: number;
  /** Empty for the first page. */
  readonly pageToken: string;
}

/** One page of a listing. */
export interface Page<T> {
  readonly items: T[];
  /** The items' encoded size, as `size` measured it. */
  readonly bytes: number;
  /** Empty on the last page. */
  readonly nextPageToken: string;
}

/** The byte budget of a page: `wanted`, or less when the reply limit is lower. */
export function pageBudget(limits: Limits, wanted: number): number {
  return Math.max(1, Math.min(wanted, limits.maxReplyBytes));
}

/**
 * Cuts the page a request asks for out of `sorted` (ordered by `name`,
 * names unique). `size` gives an item's encoded bytes; it is called only for
 * the items the page considers, so a page costs what it holds, not what
 * the listing holds. A page holds at least one item whatever its size, so
 * a listing always advances; with `mayBeEmpty` (a listing inlined in
 * another reply) an item over the budget is left to the token instead.
 */
export function pageOf<T>(
  sorted: readonly T[],
  name: (item: T) => string,
  size: (item: T) => number,
  request: PageRequest,
  budget: number,
  mayBeEmpty = false,
): Page<T> {
  const maxItems = checkPageSize(request.pageSize);
  const after = request.pageToken === "" ? undefined : decodePageToken(request.pageToken);
  let start = 0;
  if (after !== undefined) {
    // Binary search: the first item named after the token's.
    let hi = sorted.length;
    while (start < hi) {
      const mid = (start + hi) >>> 1;
      if (name(sorted[mid] as T) <= after) start = mid + 1;
      else hi = mid;
    }
  }
  const items: T[] = [];
  let bytes = 0;
  let i = start;
  for (; i < sorted.length && items.length < maxItems; i++) {
    const item = sorted[i] as T;
    const n = size(item);
    if ((items.length > 0 || mayBeEmpty) && bytes + n > budget) break;
    items.push(item);
    bytes += n;
  }
  const more = i < sorted.length;
  // Empty page: the token continues from where this one began.
  const last = items.at(-1);
  const from = last === undefined ? (after ?? "") : name(last);
  return { items, bytes, nextPageToken: more ? encodePageToken(from) : "" };
}

function checkPageSize(pageSize: number): number {
  if (pageSize < 0) {
    throw new ConnectError(
      `page_size must be 0 (as many as fit in a page) or positive, got ${pageSize}`,
      Code.InvalidArgument,
    );
  }
  return pageSize === 0 ? Number.POSITIVE_INFINITY : pageSize;
}

/**
 * Tokens are the last name given, in base64url behind a version prefix:
 * opaque enough that clients do not build them, and stateless, so any
 * replica can continue a listing another one began.
 */
const TOKEN_PREFIX = "n1.";
/** Longer than any token this server makes (names are at most 256 characters). */
const MAX_TOKEN = 512;
const BASE64URL = /^[A-Za-z0-9_-]*$/;

function encodePageToken(name: string): string {
  return TOKEN_PREFIX + Buffer.from(name, "utf8").toString("base64url");
}

function decodePageToken(token: string): string {
  const body = token.slice(TOKEN_PREFIX.length);
  if (token.length > MAX_TOKEN || !token.startsWith(TOKEN_PREFIX) || !BASE64URL.test(body)) {
    throw new ConnectError(
      "page_token is not one this server gave out: pass the next_page_token of the previous page, or an empty token for the first page",
      Code.InvalidArgument,
    );
  }
  return Buffer.from(body, "base64url").toString("utf8");
}

/**
 * Sizes items by the message each becomes, keeping the messages so that
 * the page's reply is built from them instead of converting twice.
 * `overhead` adds what the enclosing field costs per item (tag, length,
 * map key).
 */
export function measured<Desc extends DescMessage, R>(
  schema: Desc,
  toMessage: (item: R) => MessageShape<Desc>,
  overhead: (item: R) => number = () => 6,
): { size: (item: R) => number; message: (item: R) => MessageShape<Desc> } {
  const messages = new Map<R, MessageShape<Desc>>();
  return {
    size(item) {
      const message = toMessage(item);
      messages.set(item, message);
      return toBinary(schema, message).length + overhead(item);
    },
    message: (item) => messages.get(item) ?? toMessage(item),
  };
}
