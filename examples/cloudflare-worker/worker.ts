import { createConnectTransport } from "@connectrpc/connect-web";
import { createSessionContext, workerFetch } from "unified-session-bridge";

export default {
  async fetch(request: Request, env: { BRIDGE_URL: string }): Promise<Response> {
    const ctx = await createSessionContext({
      transport: createConnectTransport({
        baseUrl: env.BRIDGE_URL,
        useBinaryFormat: true,
        fetch: workerFetch, // workerd rejects connect-web's redirect: "error"
      }),
      sessionId: request.headers.get("x-session") ?? undefined,
      watch: false, // a request-scoped Worker does not keep a stream open
    });
    const reply = await ctx.callTool("conversation_append", {
      role: "user",
      content: await request.text(),
    });
    await ctx.close();
    return Response.json(reply);
  },
};
