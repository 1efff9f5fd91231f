import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { AccessDeniedSchema, AccessRole } from "../gen/snakepit/bridge/bridge_pb.js";
import { AccessError, asAccessError } from "./access-error.js";
import { createTokenSource, tokenClaims } from "./access-token.js";
import type { TimerProvider } from "./timers.js";

const b64 = (o: unknown) =>
  btoa(JSON.stringify(o)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const jwt = (claims: unknown) => `${b64({ alg: "HS256" })}.${b64(claims)}.sig`;

describe("tokenClaims", () => {
  it("reads a token's session, role and expiry, and nothing from what is not a token", () => {
    expect(tokenClaims(jwt({ sid: "s1", role: "tuner", exp: 1_700_000_000 }))).toEqual({
      sessionId: "s1",
      role: "tuner",
      expiresAt: 1_700_000_000_000,
    });
    const none = { sessionId: undefined, role: undefined, expiresAt: undefined };
    for (const bad of ["", "garbage", "a.!!!.c", jwt("text"), jwt({ role: "admin", sid: 7 })]) {
      expect(tokenClaims(bad)).toEqual(none);
    }
  });
});

describe("createTokenSource", () => {
  const timers = (now: () => number): TimerProvider => ({
    now,
    setTimeout: () => 0,
    clearTimeout: () => {},
  });

  it("adopts the answered owner token only when the app gives none", async () => {
    const own = createTokenSource({ refreshBeforeMs: 0, timers: timers(() => 0) });
    own.adopt(jwt({ sid: "s", role: "owner" }));
    expect(tokenClaims((await own.current()) ?? "").role).toBe("owner");
    const given = createTokenSource({ token: "t", refreshBeforeMs: 0, timers: timers(() => 0) });
    given.adopt(jwt({ sid: "s", role: "owner" }));
    expect(await given.current()).toBe("t");
  });

  it("fetches again once less than the margin is left, one fetch for concurrent callers", async () => {
    let now = 0;
    let fetches = 0;
    const source = createTokenSource({
      getToken: async () => jwt({ sid: "s", role: "viewer", exp: 100 + fetches++ }),
      refreshBeforeMs: 10_000,
      timers: timers(() => now),
    });
    const [a, b] = await Promise.all([source.current(), source.current()]);
    expect([a === b, fetches]).toEqual([true, 1]);
    now = 89_000; // 11 s left
    await source.current();
    expect(fetches).toBe(1);
    now = 91_000; // 9 s left
    await Promise.all([source.current(), source.current()]);
    expect(fetches).toBe(2);
  });
});

describe("asAccessError", () => {
  it("types a refusal with an AccessDenied detail, and nothing else", () => {
    const refused = new ConnectError("no", Code.PermissionDenied, undefined, [
      {
        desc: AccessDeniedSchema,
        value: { requiredRole: AccessRole.EDITOR, grantedRole: AccessRole.VIEWER, method: "M" },
      },
    ]);
    const typed = asAccessError(refused);
    expect(typed).toBeInstanceOf(AccessError);
    expect(typed).toBeInstanceOf(ConnectError);
    expect(typed).toMatchObject({ requiredRole: "editor", grantedRole: "viewer", method: "M" });
    expect(ConnectError.from(typed)).toBe(typed);
    const plain = new ConnectError("tool not allowed", Code.PermissionDenied);
    expect(asAccessError(plain)).toBe(plain);
    expect(plain).not.toBeInstanceOf(AccessError);
  });
});
