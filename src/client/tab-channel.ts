/** A message between tabs of the same origin about one session. */
export type TabMessage =
  | { readonly kind: "variable"; readonly bytes: Uint8Array }
  | { readonly kind: "deleted"; readonly id: string };

/** Shares changes between tabs through BroadcastChannel, when the runtime has it. */
export interface TabChannel {
  post(message: TabMessage): void;
  close(): void;
}

/**
 * Opens the session's tab channel, or returns undefined where
 * BroadcastChannel does not exist (some Workers, old runtimes). Messages
 * that are not {@link TabMessage}s (another library on the same channel
 * name, an older release) are ignored.
 */
export function openTabChannel(
  sessionId: string,
  onMessage: (message: TabMessage) => void,
): TabChannel | undefined {
  if (typeof BroadcastChannel === "undefined") return undefined;
  const channel = new BroadcastChannel(`unified-bridge:${sessionId}`);
  channel.onmessage = (event: MessageEvent<unknown>) => {
    const data = event.data as Partial<TabMessage> | null;
    if (data?.kind === "variable" && data.bytes instanceof Uint8Array)
      onMessage(data as TabMessage);
    else if (data?.kind === "deleted" && typeof data.id === "string") onMessage(data as TabMessage);
  };
  return {
    post: (message) => channel.postMessage(message),
    close: () => channel.close(),
  };
}
