/**
 * SessionContext with access tokens, against a real bridge in tokens
 * mode: the owner token kept from creation, share tokens minted and opened
 * with, typed refusals naming the missing role, and tokens fetched again
 * before they expire.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  AccessError,
  createSessionContext,
  type SessionContext,
  type SessionContextOptions,
  tokenClaims,
} from "../../src/client/index.js";
import { AccessRole } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { newKey } from "../support/access.js";
import { type RunningBridge, startBridge } from "../support/bridge.js";
import { rejectionOf } from "../support/errors.js";
import { until } from "../support/wait.js";

let bridge: RunningBridge;
const open: SessionContext[] = [];
beforeAll(async () => {
  bridge = await startBridge({ access: "tokens", tokenKeys: [newKey()] });
});
afterAll(() => bridge?.stop());
afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.close()));
});

async function context(options: Partial<SessionContextOptions> = {}): Promise<SessionContext> {
  const ctx = await createSessionContext({ transport: bridge.transport(), ...options });
  open.push(ctx);
  return ctx;
}

describe("a context on a bridge that needs tokens", () => {
  it("keeps the owner token of the session it created and sends it on every call", async () => {
    const ctx = await context();
    expect(ctx.created).toBe(true);
    expect(ctx.accessRole).toBe("owner");
    expect(tokenClaims(ctx.accessToken ?? "").sessionId).toBe(ctx.sessionId);
    await ctx.register("temperature", "float", 0.5);
    await ctx.set("temperature", 0.9);
    await until(() => ctx.cache.live, "the watch stream");
    expect(await ctx.get("temperature", { bypassCache: true })).toBe(0.9);
  });

  it("opens the session of a viewer token, reads and watches it, and refuses writes with a typed error", async () => {
    const owner = await context();
    await owner.register("temperature", "float", 0.5);
    const share = await owner.mintToken({ role: "viewer", ttlSeconds: 600 });
    expect(share.role).toBe("viewer");
    expect(share.expiresAt - Date.now()).toBeGreaterThan(590_000);
    // No session id needed: the token names it.
    const viewer = await context({ token: share.token });
    expect([viewer.sessionId, viewer.created, viewer.accessRole]).toEqual([
      owner.sessionId,
      false,
      "viewer",
    ]);
    expect(await viewer.get("temperature")).toBe(0.5);
    await until(() => viewer.cache.live, "the viewer's watch stream");
    await owner.set("temperature", 0.7);
    await until(() => viewer.peek("temperature")?.snapshot.value === 0.7, "the pushed change");
    const refused = await rejectionOf(viewer.set("temperature", 1), Code.PermissionDenied);
    expect(refused).toBeInstanceOf(AccessError);
    expect(refused).toMatchObject({
      requiredRole: "editor",
      grantedRole: "viewer",
      method: "SetVariable",
    });
    const mint = await rejectionOf(viewer.mintToken({ role: "viewer" }));
    expect((mint as AccessError).requiredRole).toBe("owner");
    await rejectionOf(viewer.close({ cleanup: true }), Code.PermissionDenied);
    expect(await owner.get("temperature", { bypassCache: true })).toBe(0.7);
  });

  it("reports a missing token as an AccessError naming the role the call needed", async () => {
    const owner = await context();
    await owner.register("n", "integer", 1);
    // A token of another session, given with this session's id.
    const other = await context();
    const wrong = await rejectionOf(
      context({ sessionId: owner.sessionId, token: other.accessToken ?? "" }),
      Code.PermissionDenied,
    );
    expect(wrong).toBeInstanceOf(AccessError);
    const none = await rejectionOf(
      bridge.client().getVariable({ sessionId: owner.sessionId, variableIdentifier: "n" }),
      Code.Unauthenticated,
    );
    expect(none.rawMessage).toMatch(/needs an access token/);
    // A typed error is still a ConnectError, and no other error is typed.
    expect(wrong).toBeInstanceOf(ConnectError);
    expect(none).not.toBeInstanceOf(AccessError);
    expect(new ConnectError("x", Code.PermissionDenied)).not.toBeInstanceOf(AccessError);
  });

  it("fetches a getToken token again shortly before it expires, one fetch for concurrent calls", async () => {
    const owner = await context();
    await owner.register("n", "integer", 1);
    const worker = bridge.workerClient();
    let fetches = 0;
    let clock = Date.now();
    const getToken = async () => {
      fetches++;
      const { token } = await worker.mintToken({
        sessionId: owner.sessionId,
        role: AccessRole.EDITOR,
        // (A different lifetime each time: two tokens minted within a
        // second would otherwise be the same.)
        ttlSeconds: 120 + fetches,
      });
      return token;
    };
    const timers = {
      now: () => clock,
      setTimeout: (fn: () => void, ms: number) => setTimeout(fn, ms),
      clearTimeout: (h: unknown) => clearTimeout(h as ReturnType<typeof setTimeout>),
    };
    const ctx = await context({ getToken, watch: false, timers, refreshTokenBeforeMs: 30_000 });
    expect(ctx.sessionId).toBe(owner.sessionId);
    const first = ctx.accessToken;
    expect(fetches).toBe(1);
    await Promise.all([ctx.set("n", 2), ctx.get("n", { bypassCache: true })]);
    expect(fetches).toBe(1);
    // 100 s later 20 s are left, under the 30 s margin: fetched again, once.
    clock += 100_000;
    await Promise.all([ctx.set("n", 3), ctx.getMany(["n"], { bypassCache: true })]);
    expect(fetches).toBe(2);
    expect(ctx.accessToken).not.toBe(first);
    expect(ctx.accessRole).toBe("editor");
  });

  it("fails a call whose getToken fails, as UNAUTHENTICATED with the reason", async () => {
    const owner = await context();
    let fail = false;
    const getToken = async () => {
      if (fail) throw new Error("the sign-in expired");
      return owner.accessToken ?? "";
    };
    const ctx = await context({ getToken, watch: false, refreshTokenBeforeMs: 10 ** 12 });
    fail = true;
    const error = await rejectionOf(ctx.listTools(), Code.Unauthenticated);
    expect(error.rawMessage).toMatch(/getToken failed: the sign-in expired/);
  });
});
