import { describe, expect, it } from "vitest";
import { clientKey } from "./caller.js";

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
