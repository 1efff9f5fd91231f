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
