import { Code, ConnectError } from "@connectrpc/connect";
import { utf8Length } from "../../values/utf8-length.js";
import { quote } from "../common/message-text.js";

const MiB = 1024 * 1024;

/**
 * Server limits: what any one caller can make the server hold. Each field
 * but the name length, which is fixed, is the server option of the same
 * name (group "limits" in `config-options.ts`, where its flag, its
 * environment variable and its full meaning are), with its default from
 * {@link defaultLimits}.
 */
export interface Limits {
  /** Live sessions one public client may have created (`--max-sessions-per-client`). */
  readonly maxSessionsPerClient: number;
  /** Longest session lifetime a client may ask for, in seconds (`--max-session-ttl`). */
  readonly maxSessionTtlSeconds: number;
  /** Sessions held at once (`--max-sessions`). */
  readonly maxSessions: number;
  /** Variables per session (`--max-variables-per-session`). */
  readonly maxVariablesPerSession: number;
  /** Largest encoded variable value, in bytes (`--max-value-bytes`). */
  readonly maxValueBytes: number;
  /** Metadata entries per session or variable (`--max-metadata-entries`). */
  readonly maxMetadataEntries: number;
  /** Metadata bytes per session or variable (`--max-metadata-bytes`). */
  readonly maxMetadataBytes: number;
  /** Versions kept per variable (`--history-limit`). */
  readonly historyLimit: number;
  /** Bytes of past values kept per variable (`--history-max-bytes`). */
  readonly historyMaxBytes: number;
  /** Bytes one session may hold (`--max-session-bytes`). */
  readonly maxSessionBytes: number;
  /** Bytes the live sessions of one public client may hold together (`--max-bytes-per-client`). */
  readonly maxBytesPerClient: number;
  /** Watch streams open on one session (`--max-watchers-per-session`). */
  readonly maxWatchersPerSession: number;
  /** Watch streams one public client may have open (`--max-watchers-per-client`). */
  readonly maxWatchersPerClient: number;
  /** Watch streams open across all sessions (`--max-watchers`). */
  readonly maxWatchers: number;
  /** Session-scoped tools one session may hold (`--max-tools-per-session`). */
  readonly maxToolsPerSession: number;
  /** Remote tools registered by workers (`--max-tools`). */
  readonly maxTools: number;
  /** Size of one tool registration, in bytes (`--max-tool-bytes`). */
  readonly maxToolBytes: number;
  /** Tool calls of one session running at once (`--max-tool-calls-per-session`). */
  readonly maxToolCallsPerSession: number;
  /** Calls of expensive tools running at once; 0: one per CPU (`--max-expensive-tool-calls`). */
  readonly maxExpensiveToolCalls: number;
  /** Calls of expensive tools one public client may have waiting (`--max-queued-expensive-calls-per-client`). */
  readonly maxQueuedExpensiveCallsPerClient: number;
  /** Calls of remote tools one public client may have in flight (`--max-forwarded-calls-per-client`). */
  readonly maxForwardedCallsPerClient: number;
  /** Largest reply message, in bytes (`--max-reply-bytes`). */
  readonly maxReplyBytes: number;
  /** Smallest reply compressed, in bytes (`--compress-min-bytes`). */
  readonly compressMinBytes: number;
  /** Longest variable name (fixed). */
  readonly maxNameLength: number;
}

/** The limits of a server not told otherwise: the defaults of their options. */
export const defaultLimits: Limits = Object.freeze({
  maxSessionsPerClient: 256,
  maxSessionTtlSeconds: 7200,
  maxSessions: 10_000,
  maxVariablesPerSession: 1000,
  maxValueBytes: MiB,
  maxMetadataEntries: 32,
  maxMetadataBytes: 4096,
  historyLimit: 100,
  historyMaxBytes: MiB,
  maxSessionBytes: 16 * MiB,
  maxBytesPerClient: 256 * MiB,
  maxWatchersPerSession: 1024,
  maxWatchersPerClient: 1024,
  maxWatchers: 10_000,
  maxToolsPerSession: 64,
  maxTools: 1024,
  maxToolBytes: 16 * 1024,
  maxToolCallsPerSession: 16,
  maxExpensiveToolCalls: 0,
  maxQueuedExpensiveCallsPerClient: 8,
  maxForwardedCallsPerClient: 8,
  maxReplyBytes: 16 * MiB,
  compressMinBytes: 64 * 1024,
  maxNameLength: 128,
});

/** The limits among `source`'s fields (e.g. a server config), defaults for the rest. */
export function limitsFrom(source: Partial<Record<keyof Limits, unknown>>): Limits {
  const limits: Record<string, number> = { ...defaultLimits };
  for (const key of Object.keys(defaultLimits) as (keyof Limits)[]) {
    const value = source[key];
    if (typeof value === "number") limits[key] = value;
  }
  return limits as unknown as Limits;
}

const NAME = /^[A-Za-z_][A-Za-z0-9_.-]*$/;

/**
 * Checks a variable name: starts with a letter or '_', then letters, digits,
 * '_', '.', '-'. Names never contain ':', which is what tells them apart
 * from variable ids.
 */
export function checkVariableName(name: string, limits: Limits): void {
  if (name === "") {
    throw new ConnectError("variable name is required", Code.InvalidArgument);
  }
  if (name.length > limits.maxNameLength) {
    throw new ConnectError(
      `variable name ${quote(name, 40)} is ${name.length} characters long; the limit is ${limits.maxNameLength}`,
      Code.InvalidArgument,
    );
  }
  if (!NAME.test(name)) {
    throw new ConnectError(
      `variable name ${quote(name)} is invalid: use letters, digits, '_', '.' and '-', starting with a letter or '_'`,
      Code.InvalidArgument,
    );
  }
}

/** Checks a metadata map against the entry and byte limits. */
export function checkMetadata(
  metadata: Readonly<Record<string, string>>,
  limits: Limits,
  subject: string,
): void {
  const entries = Object.keys(metadata).length;
  const bytes = metadataBytes(metadata);
  if (entries > limits.maxMetadataEntries) {
    throw new ConnectError(
      `${subject}: metadata has ${entries} entries; the limit is ${limits.maxMetadataEntries}`,
      Code.ResourceExhausted,
    );
  }
  if (bytes > limits.maxMetadataBytes) {
    throw new ConnectError(
      `${subject}: metadata is ${bytes} bytes; the limit is ${limits.maxMetadataBytes}`,
      Code.ResourceExhausted,
    );
  }
}

/** Bytes of all keys and values of a metadata map, as UTF-8. */
export function metadataBytes(metadata: Readonly<Record<string, string>>): number {
  let bytes = 0;
  for (const key in metadata) bytes += utf8Length(key) + utf8Length(metadata[key] as string);
  return bytes;
}
