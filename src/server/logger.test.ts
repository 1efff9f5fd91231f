import { describe, expect, it } from "vitest";
import { createLogger, type LoggerOptions, redactSessionId, silentLogger } from "./logger.js";

function capture(options: Omit<LoggerOptions, "sink" | "now"> = {}) {
  const lines: string[] = [];
  const logger = createLogger({
    ...options,
    sink: { write: (chunk: string) => lines.push(chunk) },
    now: () => new Date("2025-01-02T03:04:05.678Z"),
  });
  const parsed = () => lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  return { logger, lines, parsed };
}

describe("createLogger", () => {
  it("writes one JSON object per line with time, level and msg first", () => {
    const { logger, lines } = capture();
    logger.info("listening", { url: "http://127.0.0.1:50051", port: 50051 });
    expect(lines).toEqual([
      '{"time":"2025-01-02T03:04:05.678Z","level":"info","msg":"listening","url":"http://127.0.0.1:50051","port":50051}\n',
    ]);
  });

  it("drops lines below the configured level", () => {
    const { logger, parsed } = capture({ level: "warn" });
    logger.debug("d");
    logger.info("i");
    logger.warn("w");
    logger.error("e");
    expect(parsed().map((l) => l.level)).toEqual(["warn", "error"]);
    expect(logger.isLevelEnabled("info")).toBe(false);
    expect(logger.isLevelEnabled("error")).toBe(true);
  });

  it("defaults to info", () => {
    const { logger, parsed } = capture();
    logger.debug("hidden");
    logger.info("shown");
    expect(parsed().map((l) => l.msg)).toEqual(["shown"]);
  });

  it("child loggers add their fields, and call-site fields win", () => {
    const { logger, parsed } = capture({ fields: { service: "bridge" } });
    const child = logger.child({ rpc: "Ping", attempt: 1 });
    child.info("done", { attempt: 2 });
    expect(parsed()[0]).toMatchObject({ service: "bridge", rpc: "Ping", attempt: 2, msg: "done" });
  });

  it("serializes errors with name, message, code and cause", () => {
    const { logger, parsed } = capture();
    const cause = new Error("socket closed");
    const error = Object.assign(new Error("listen failed", { cause }), { code: "EADDRINUSE" });
    logger.error("startup", { error });
    const logged = parsed()[0]?.error as Record<string, unknown>;
    expect(logged).toMatchObject({
      name: "Error",
      message: "listen failed",
      code: "EADDRINUSE",
      cause: { message: "socket closed" },
    });
    expect(logged.stack).toContain("listen failed");
  });

  it("never lets fields overwrite the envelope", () => {
    const { logger, parsed } = capture();
    logger.info("real", { msg: "fake", level: "error" });
    expect(parsed()[0]).toMatchObject({
      level: "info",
      msg: "real",
      "field.msg": "fake",
      "field.level": "error",
    });
  });

  it("keeps the event when fields cannot be serialized", () => {
    const { logger, parsed } = capture();
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    logger.warn("odd", { cyclic, big: 1n });
    const line = parsed()[0];
    expect(line).toMatchObject({ level: "warn", msg: "odd" });
    expect(String(line?.logError)).toContain("not serializable");
  });

  it("writes bigints as strings", () => {
    const { logger, parsed } = capture();
    logger.info("n", { version: 9007199254740993n });
    expect(parsed()[0]?.version).toBe("9007199254740993");
  });
});

describe("silentLogger", () => {
  it("accepts every call and writes nothing", () => {
    silentLogger.child({ a: 1 }).error("nothing", { b: 2 });
    expect(silentLogger.isLevelEnabled("error")).toBe(false);
  });
});

describe("redactSessionId", () => {
  it("keeps only the first 6 characters of a session id", () => {
    const id = "3f2a9c41-7d0e-4b8a-9c55-0e1f2a3b4c5d";
    expect(redactSessionId(id)).toBe("3f2a9c…");
  });

  it("reveals at most half of a short id", () => {
    expect(redactSessionId("session-1")).toBe("sess…");
    expect(redactSessionId("ab")).toBe("a…");
    expect(redactSessionId("")).toBe("…");
  });

  it("never puts a whole session id into a log line", () => {
    const { logger, lines } = capture();
    const ids = ["s", "s1", "abcdef", "abcdefg", "0123456789ab", crypto.randomUUID()];
    for (const id of ids) logger.info("session created", { session: redactSessionId(id) });
    ids.forEach((id, i) => {
      expect(lines[i]).not.toContain(`"${id}"`);
    });
  });

  it("does not split a surrogate pair", () => {
    expect(redactSessionId("😀😀😀😀😀😀😀😀😀😀😀😀")).toBe("😀😀😀😀😀😀…");
  });
});
