// The README's browser example (the part between the region markers), run
// by the page of `npm run example:browser` (main.ts), which
// test/examples.test.ts opens in Chromium.
import { createConnectTransport } from "@connectrpc/connect-web";
import {
  createSessionContext,
  type SessionContext,
  type VariableSnapshot,
} from "unified-session-bridge";
import { idbPersistence } from "unified-session-bridge/persist/idb";

/** Opens the page's session; `render` is called with every change. */
export async function browserExample(
  render: (name: string, snapshot: VariableSnapshot | undefined) => void,
): Promise<SessionContext> {
  // #region readme
  const ctx = await createSessionContext({
    // Binary format: values travel in protobuf Any, which JSON cannot carry.
    transport: createConnectTransport({ baseUrl: location.origin, useBinaryFormat: true }),
    sessionId: new URLSearchParams(location.search).get("session") ?? undefined,
    persistence: idbPersistence(), // last values at once after a reload
  });
  ctx.on("change", ({ name, snapshot }) => render(name, snapshot)); // this tab, other tabs, other clients
  // #endregion
  return ctx;
}
