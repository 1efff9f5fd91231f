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
  it("writes one JSON object per line with level, time, the fields and msg", () => {
    const { logger, lines } = capture();
    logger.info("listening", { url: "http://127.0.0.1:50051", port: 50051 });
    logger.warn("no fields");
    expect(lines).toEqual([
      '{"level":"info","time":"2025-01-02T03:04:05.678Z","url":"http://127.0.0.1:50051","port":50051,"msg":"listening"}\n',
      '{"level":"warn","time":"2025-01-02T03:04:05.678Z","msg":"no fields"}\n',
    ]);
  });

  it("writes a message as given, with no format directives applied", () => {
    const { logger, parsed } = capture();
    logger.info("100% %s %d done", { n: 1 });
    expect(parsed()[0]?.msg).toBe("100% %s %d done");
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
    const { logger, lines, parsed } = capture();
    logger.info("real", { msg: "fake", level: "error", time: "then" });
    logger.child({ msg: "bound" }).info("real too");
    expect(parsed()[0]).toEqual({
      level: "info",
      time: "2025-01-02T03:04:05.678Z",
      msg: "real",
      "field.msg": "fake",
      "field.level": "error",
      "field.time": "then",
    });
    expect(parsed()[1]).toMatchObject({ msg: "real too", "field.msg": "bound" });
    // Each key once: a log shipper reading the first of two keys sees the right one too.
    for (const line of lines) expect(line.match(/"msg":/g)).toHaveLength(1);
  });

  it("keeps the event when fields cannot be serialized as JSON", () => {
    const { logger, parsed } = capture();
    const cyclic: Record<string, unknown> = { name: "loop" };
    cyclic.self = cyclic;
    logger.warn("odd", { cyclic, big: 1n });
    expect(parsed()[0]).toMatchObject({
      level: "warn",
      msg: "odd",
      cyclic: { name: "loop", self: "[Circular]" },
      big: "1",
    });
  });

  it("writes each line whole and synchronously to the sink", () => {
    const { logger, lines } = capture();
    logger.info("one");
    expect(lines).toHaveLength(1);
    logger.error("two", { error: new Error("x") });
    expect(lines).toHaveLength(2);
    expect(lines.every((l) => l.endsWith("}\n") && l.indexOf("\n") === l.length - 1)).toBe(true);
  });

  it("writes bigints as strings", () => {
    const { logger, parsed } = capture();
    logger.info("n", { version: 9007199254740993n, versions: [1n, 2n] });
    expect(parsed()[0]).toMatchObject({ version: "9007199254740993", versions: ["1", "2"] });
  });

  it("serializes a list of errors", () => {
    const { logger, parsed } = capture();
    logger.error("several failed", { errors: [new Error("a"), new TypeError("b")] });
    expect(parsed()[0]?.errors).toMatchObject([
      { name: "Error", message: "a" },
      { name: "TypeError", message: "b" },
    ]);
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

  it("is applied by the logger to session fields a call site passed whole", () => {
    const { logger, lines, parsed } = capture({ level: "debug" });
    const id = crypto.randomUUID();
    logger.info("a", { session: id });
    logger.warn("b", { sessionId: id, tool: "echo" });
    logger.error("c", { session_id: id });
    logger.child({ sessionId: id }).debug("d");
    expect(lines).toHaveLength(4);
    for (const line of lines) expect(line).not.toContain(id.slice(0, 7));
    expect(parsed().map((l) => l.session ?? l.sessionId ?? l.session_id)).toEqual(
      Array(4).fill(redactSessionId(id)),
    );
    // Not shortened twice, and markers stay readable.
    logger.info("e", { session: redactSessionId(id) });
    logger.info("f", { session: "(global)" });
    logger.info("g", { sessionId: 42 });
    expect(
      parsed()
        .slice(4)
        .map((l) => l.session ?? l.sessionId),
    ).toEqual([redactSessionId(id), "(global)", "[Redacted]"]);
  });

  it("does not split a surrogate pair", () => {
    expect(redactSessionId("😀😀😀😀😀😀😀😀😀😀😀😀")).toBe("😀😀😀😀😀😀…");
  });
});
