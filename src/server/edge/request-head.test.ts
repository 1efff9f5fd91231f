import { describe, expect, it } from "vitest";
import { checkAuthority } from "./request-head.js";

const authorityOf = (authority: string | undefined) => {
  const checked = checkAuthority(authority, () => "127.0.0.1:1");
  return checked.ok ? checked.authority : `refused: ${checked.error.code}`;
};

describe("checkAuthority", () => {
  it("reads an unbracketed IPv6 address, with or without a port, as its literal", () => {
    // (`::1:8080` is itself an address: read as one.)
    expect(authorityOf("::1:8080")).toBe("[::1:8080]");
    expect(authorityOf("::1")).toBe("[::1]");
    expect(authorityOf("::ffff:1.2.3.4:443")).toBe("[::ffff:1.2.3.4]:443");
    expect(authorityOf("fe80::1:99999")).toBe("[fe80::1]:99999");
  });

  it("passes names and IPv4 addresses as they are, and falls back without one", () => {
    expect(authorityOf("127.0.0.1:50051")).toBe("127.0.0.1:50051");
    expect(authorityOf("bridge.example")).toBe("bridge.example");
    expect(authorityOf("[::1]:80")).toBe("[::1]:80");
    expect(authorityOf(undefined)).toBe("127.0.0.1:1");
  });

  it("refuses what is no host[:port]", () => {
    expect(authorityOf("a:b:c")).toBe("refused: 3");
    expect(authorityOf("host:80:80")).toBe("refused: 3");
  });
});
