import { Code, ConnectError, createContextValues, type HandlerContext } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { callerKey, callerResolver, clientKey, peerClientOf, requireWorker } from "./caller.js";

describe("clientKey", () => {
  it("groups IPv6 addresses by their /64 by default: one host can hold a whole /64", () => {
    expect(clientKey("2001:db8:1:2:3:4:5:6")).toBe("2001:db8:1:2::/64");
    expect(clientKey("2001:DB8:1:2::9")).toBe("2001:db8:1:2::/64");
    expect(clientKey("2001:db8:1:3::9")).toBe("2001:db8:1:3::/64");
    expect(clientKey("fe80::1%eth0")).toBe("fe80::/64");
  });

  it("keeps each IPv4 address its own client by default, and groups by a shorter prefix when told", () => {
    expect(clientKey("10.1.2.3")).toBe("10.1.2.3");
    expect(clientKey("::ffff:10.1.2.3")).toBe("10.1.2.3");
    expect(clientKey("10.1.2.3", { v4: 24, v6: 64 })).toBe("10.1.2.0/24");
    expect(clientKey("10.1.2.3", { v4: 8, v6: 64 })).toBe("10.0.0.0/8");
    expect(clientKey("255.255.255.255", { v4: 31, v6: 64 })).toBe("255.255.255.254/31");
  });

  it("masks IPv6 prefixes that end inside a group, and spells /128 in full", () => {
    expect(clientKey("2001:db8:abcd:12ff::1", { v4: 32, v6: 56 })).toBe("2001:db8:abcd:1200::/56");
    expect(clientKey("2001:db8::1", { v4: 32, v6: 128 })).toBe("2001:db8:0:0:0:0:0:1");
    expect(clientKey("64:ff9b::1.2.3.4", { v4: 32, v6: 96 })).toBe("64:ff9b::/96");
  });

  it("leaves text that is no address as it is (an empty peer stays empty)", () => {
    expect(clientKey("")).toBe("");
    expect(clientKey("not-an-ip")).toBe("not-an-ip");
  });
});

describe("wrong worker tokens", () => {
  const token = "q0VhL3s9Xk2mB7cR4tYw8ZpN1jF6dG5aE";
  const setup = (throttle: { maxClients?: number } = {}) => {
    let t = 0;
    const resolve = callerResolver({
      listener: "public",
      workerToken: token,
      trustedProxies: [],
      tokenThrottle: { now: () => t, ...throttle },
    });
    const call = (address: string, bearer: string) =>
      resolve({
        headers: { authorization: `Bearer ${bearer}` },
        socket: { remoteAddress: address },
      }).get(callerKey);
    return { call, advance: (ms: number) => (t += ms) };
  };

  it("after 10 within a minute, a client's tokens go unchecked for a minute; other clients are not held back", () => {
    const { call, advance } = setup();
    for (let i = 0; i < 10; i++) expect(call("10.0.0.1", `wrong${i}`).badToken).toBe(true);
    const held = call("10.0.0.1", token);
    expect(held.kind).toBe("public");
    expect(held.tokenThrottle).toEqual({ waitMs: 60_000, maxFailures: 10, windowMs: 60_000 });
    expect(call("10.0.0.2", token).kind).toBe("worker");
    const ctx = { values: createContextValues().set(callerKey, held) } as HandlerContext;
    const refusal = rejectionOf(() => requireWorker(ctx, "RegisterTools"));
    expect(refusal.code).toBe(Code.ResourceExhausted);
    expect(refusal.rawMessage).toMatch(/10 within 60 s.*wait 60 s/);
    advance(59_000);
    expect(call("10.0.0.1", token).tokenThrottle?.waitMs).toBe(1000);
    advance(1000);
    expect(call("10.0.0.1", token).kind).toBe("worker");
  });

  it("forgets failures older than the window, and the right token starts the count over", () => {
    const { call, advance } = setup();
    for (let i = 0; i < 9; i++) call("10.0.0.1", "wrong");
    advance(60_000);
    for (let i = 0; i < 9; i++) call("10.0.0.1", "wrong");
    expect(call("10.0.0.1", token).kind).toBe("worker");
    for (let i = 0; i < 9; i++) call("10.0.0.1", "wrong");
    expect(call("10.0.0.1", "wrong").tokenThrottle).toBeUndefined();
    expect(call("10.0.0.1", token).tokenThrottle).toBeDefined();
  });

  it("counts at most maxClients clients, forgetting the least recently seen", () => {
    const { call } = setup({ maxClients: 2 });
    for (let i = 0; i < 9; i++) call("10.0.0.1", "wrong");
    call("10.0.0.2", "wrong");
    call("10.0.0.3", "wrong");
    // 10.0.0.1 was forgotten: its tenth wrong token starts a new count.
    call("10.0.0.1", "wrong");
    expect(call("10.0.0.1", token).kind).toBe("worker");
  });
});

function rejectionOf(f: () => void): ConnectError {
  try {
    f();
  } catch (e) {
    return ConnectError.from(e);
  }
  throw new Error("did not throw");
}

describe("peerClientOf", () => {
  it("leaves a trusted proxy uncounted however its address is spelled, and groups the rest", () => {
    const peer = peerClientOf({ trustedProxies: ["2001:db8::1", "10.0.0.2"] });
    expect(peer("2001:DB8:0:0::1")).toBeUndefined();
    expect(peer("::ffff:10.0.0.2")).toBeUndefined();
    expect(peer("2001:db8::2")).toBe("2001:db8::/64");
    expect(peer("10.0.0.3")).toBe("10.0.0.3");
  });
});
