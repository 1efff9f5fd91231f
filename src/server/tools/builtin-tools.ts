import { Code, ConnectError } from "@connectrpc/connect";
import type { JsonValue } from "../../values/index.js";
import { utf8Length } from "../../values/utf8-length.js";
import { formatBytes } from "../common/message-text.js";
import type { ToolDefinition } from "./tool-definition.js";

/** A conversation message kept in session data. */
interface Message {
  role: string;
  content: string;
  at: number;
}

const CONVERSATION_KEY = "conversation_history";

/**
 * Appends a message to the session's conversation history and returns the
 * history. The read-append-trim happens in one store transaction, so
 * concurrent callers (a browser tab and a Python worker, say) never lose a
 * message. The history is session data: its JSON is held to the value limit
 * and counts in the session budget; a message that would break either is
 * refused and the history stays as it was.
 */
export const conversationAppendTool: ToolDefinition = {
  name: "conversation_append",
  description:
    "Appends a message to the session's conversation history (kept in session data) and returns the history, newest last.",
  parameters: [
    { name: "role", type: "string", required: true, description: "user, assistant, system, tool…" },
    { name: "content", type: "string", required: true, description: "The message text." },
    {
      name: "max_messages",
      type: "integer",
      default: 100,
      description: "Keep at most this many messages (oldest dropped).",
    },
  ],
  metadata: { category: "session", stateful: "true" },
  async handler(args, { session }) {
    const role = String(args.role);
    const content = String(args.content);
    const max = Number(args.max_messages);
    if (!Number.isInteger(max) || max < 1 || max > 10_000) {
      throw new Error("max_messages must be an integer between 1 and 10000");
    }
    const message = { role, content, at: Date.now() } satisfies Message as unknown as JsonValue;
    // Alone in the history, the message takes its JSON plus the brackets.
    const size = utf8Length(JSON.stringify(message)) + 2;
    if (size > session.maxDataBytes) {
      throw new ConnectError(
        `the message is ${formatBytes(size)} as JSON; a conversation may hold at most ${formatBytes(session.maxDataBytes)} (--max-value-bytes): send a shorter message`,
        Code.ResourceExhausted,
      );
    }
    let history: JsonValue;
    try {
      history = await session.updateData(CONVERSATION_KEY, (current) => {
        const messages = Array.isArray(current) ? [...current] : [];
        messages.push(message);
        return messages.slice(-max);
      });
    } catch (e) {
      if (!(e instanceof ConnectError) || e.code !== Code.ResourceExhausted) throw e;
      throw new ConnectError(
        `the conversation would exceed its limit: ${e.rawMessage}. Pass a lower max_messages (older messages are dropped) or start a new conversation in a new session`,
        e.code,
        undefined,
        undefined,
        e,
      );
    }
    const messages = Array.isArray(history) ? history : [];
    return { messages, count: messages.length };
  },
};

/** Returns the session's conversation history without changing it. */
export const conversationHistoryTool: ToolDefinition = {
  name: "conversation_history",
  description: "Returns the session's conversation history, newest last.",
  parameters: [
    {
      name: "last",
      type: "integer",
      default: 0,
      description: "Only the last N messages (0 = all).",
    },
  ],
  // Reads only: a viewer's token may call it (access_role, rpc-roles.ts).
  metadata: { category: "session", access_role: "viewer" },
  async handler(args, { session }) {
    const history = await session.getData(CONVERSATION_KEY);
    const messages = Array.isArray(history) ? history : [];
    const last = Number(args.last);
    const selected = last > 0 ? messages.slice(-last) : messages;
    return { messages: selected, count: selected.length };
  },
};

/**
 * Adds `delta` to a numeric variable atomically and returns the new value
 * and version: a read-modify-write no concurrent writer can interleave with,
 * in one round trip instead of a get plus a compare-and-swap loop.
 */
export const incrementVariableTool: ToolDefinition = {
  name: "increment_variable",
  description:
    "Atomically adds delta to an integer or float variable (constraints still apply) and returns its new value and version.",
  parameters: [
    { name: "name", type: "string", required: true, description: "Variable name or id." },
    { name: "delta", type: "number", default: 1, description: "Amount to add." },
  ],
  metadata: { category: "variables" },
  async handler(args, { session }) {
    const delta = Number(args.delta);
    const updated = await session.updateVariable(String(args.name), (current) => {
      if (typeof current.value !== "number") {
        throw new Error(`variable '${current.name}' is of type ${current.type}, not a number`);
      }
      return current.value + delta;
    });
    return { name: updated.name, value: updated.value, version: updated.version };
  },
};

/**
 * Streams the session's variables, one chunk per variable, then a final
 * chunk with the count: lets a worker copy a large session without one
 * huge response.
 */
export const exportVariablesTool: ToolDefinition = {
  name: "export_variables",
  description:
    "Streams the session's variables matching a glob (one chunk each: name, type, value, version); the final chunk holds the count.",
  parameters: [{ name: "pattern", type: "string", default: "*", description: "Glob over names." }],
  metadata: { category: "variables", streaming: "true", access_role: "viewer" },
  async *stream(args, { session, signal }) {
    const variables = await session.listVariables(String(args.pattern));
    for (const v of variables) {
      if (signal.aborted) break;
      yield { name: v.name, type: v.type, value: v.value, version: v.version };
    }
    return { count: variables.length };
  },
};

/** The tools every bridge server exposes unless told otherwise. */
export const builtinTools: readonly ToolDefinition[] = [
  conversationAppendTool,
  conversationHistoryTool,
  incrementVariableTool,
  exportVariablesTool,
];
