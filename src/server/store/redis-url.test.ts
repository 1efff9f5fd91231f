import { describe, expect, it } from "vitest";
import { parseRedisUrl } from "./redis-url.js";

describe("parseRedisUrl", () => {
  it.each([
    ["redis://127.0.0.1", "redis://127.0.0.1:6379", "redis://127.0.0.1:6379", ""],
    [
      "  rediss://app:s3cr%40t@redis.internal:6380/2 ",
      "rediss://app:s3cr%40t@redis.internal:6380/2",
      "rediss://app:***@redis.internal:6380/2",
      "s3cr%40t",
    ],
    [
      "redis://:pw:with:colons@[::1]/0",
      "redis://:pw:with:colons@[::1]:6379/0",
      "redis://:***@[::1]:6379/0",
      "pw:with:colons",
    ],
    [
      "Redis://Cache.Example.:7000/",
      "redis://Cache.Example.:7000",
      "redis://Cache.Example.:7000",
      "",
    ],
  ])("%s is %s, shown as %s", (raw, url, redacted, password) => {
    expect(parseRedisUrl(raw)).toEqual({ url, redacted, password });
  });

  it("replaces the password and nothing else, whatever the password looks like", () => {
    for (const password of ["x", "redis", "127.0.0.1", "6379", "%2F%3F"]) {
      const { redacted, url } = parseRedisUrl(`redis://u:${password}@127.0.0.1:6379/1`);
      expect(url).toContain(`:${password}@`);
      expect(redacted).toBe("redis://u:***@127.0.0.1:6379/1");
    }
  });

  it("accepts the canonical form it produces", () => {
    const first = parseRedisUrl("REDISS://:a%20b@host/3");
    expect(parseRedisUrl(first.url)).toEqual(first);
  });
});

describe("parseRedisUrl for a Redis Cluster", () => {
  it("lists every node, with its port, and decodes the credentials for the cluster client", () => {
    const parsed = parseRedisUrl("Redis+Cluster://app:p%40ss@10.0.0.1:7000,redis-b,[::1]:7002");
    expect(parsed.url).toBe("redis+cluster://app:p%40ss@10.0.0.1:7000,redis-b:6379,[::1]:7002");
    expect(parsed.redacted).toBe("redis+cluster://app:***@10.0.0.1:7000,redis-b:6379,[::1]:7002");
    expect(parsed.cluster).toEqual({
      nodes: [
        { host: "10.0.0.1", port: 7000 },
        { host: "redis-b", port: 6379 },
        { host: "::1", port: 7002 },
      ],
      username: "app",
      password: "p@ss",
      tls: false,
    });
    expect(parseRedisUrl("rediss+cluster://h:1").cluster?.tls).toBe(true);
    expect(parseRedisUrl(parsed.url)).toEqual(parsed);
  });

  it.each([
    ["redis+cluster://h:7000/1", "database 0 only"],
    ["redis+cluster://h:7000,,h2", "has no host"],
    ["redis+cluster://h:7000,h2:99999", 'port "99999"'],
    ["cluster://h:7000", "redis+cluster:"],
  ])("refuses %s (%s)", (raw, message) => {
    expect(() => parseRedisUrl(raw)).toThrow(message);
  });
});
