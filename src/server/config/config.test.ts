import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import {
  defaultServerConfig,
  formatDefault,
  parseServerConfig,
  type ServerConfig,
} from "./config.js";
import { optionEntries } from "./config-options.js";

function parse(argv: string[], env: Record<string, string | undefined> = {}): ServerConfig {
  const result = parseServerConfig(argv, env);
  if ("help" in result) throw new Error("unexpected help");
  return result;
}

function help(): string {
  const result = parseServerConfig(["--help"], {});
  if (!("help" in result)) throw new Error("expected help");
  return result.help;
}

describe("parseServerConfig", () => {
  it("returns the defaults when nothing is given", () => {
    expect(parse([])).toEqual(defaultServerConfig);
    expect(Object.isFrozen(defaultServerConfig)).toBe(true);
    expect(Object.isFrozen(defaultServerConfig.workerAllow)).toBe(true);
  });

  it("reads UB_* environment variables", () => {
    const config = parse([], {
      UB_HOST: "0.0.0.0",
      UB_PORT: "8080",
      UB_CORS_ORIGINS: "http://localhost:5173, https://app.example.com",
      UB_SESSION_TTL: "60",
      UB_AUTO_CREATE_SESSIONS: "true",
      UB_MAX_SESSIONS: "5",
      UB_MAX_VARIABLES_PER_SESSION: "6",
      UB_MAX_VALUE_BYTES: "2MiB",
      UB_MAX_METADATA_ENTRIES: "7",
      UB_MAX_METADATA_BYTES: "1KiB",
      UB_HISTORY_LIMIT: "8",
      UB_WATCH_BUFFER_SIZE: "9",
      UB_MAX_REQUEST_BYTES: "8388608",
      UB_SHUTDOWN_GRACE_MS: "0",
      UB_LOG_LEVEL: "DEBUG",
      UB_STORE: "memory",
    });
    expect(config).toEqual({
      ...defaultServerConfig,
      host: "0.0.0.0",
      port: 8080,
      corsOrigins: ["http://localhost:5173", "https://app.example.com"],
      sessionTtlSeconds: 60,
      autoCreateSessions: true,
      maxSessions: 5,
      maxVariablesPerSession: 6,
      maxValueBytes: 2 * 1024 * 1024,
      maxMetadataEntries: 7,
      maxMetadataBytes: 1024,
      historyLimit: 8,
      watchBufferSize: 9,
      maxRequestBytes: 8 * 1024 * 1024,
      shutdownGraceMs: 0,
      logLevel: "debug",
      store: "memory",
    });
  });

  it("lets a flag win over its environment variable", () => {
    const env = { UB_PORT: "8080", UB_HOST: "0.0.0.0", UB_CORS_ORIGINS: "http://a.example" };
    const config = parse(["--port", "9090", "--cors-origin=http://b.example"], env);
    expect(config.port).toBe(9090);
    expect(config.host).toBe("0.0.0.0");
    expect(config.corsOrigins).toEqual(["http://b.example"]);
  });

  it("accepts --flag value and --flag=value", () => {
    expect(parse(["--max-sessions", "3"]).maxSessions).toBe(3);
    expect(parse(["--max-sessions=4"]).maxSessions).toBe(4);
  });

  it("collects repeated and comma-separated --cors-origin", () => {
    const config = parse([
      "--cors-origin",
      "http://localhost:5173",
      "--cors-origin=http://a.example,http://b.example:8080",
    ]);
    expect(config.corsOrigins).toEqual([
      "http://localhost:5173",
      "http://a.example",
      "http://b.example:8080",
    ]);
    expect(parse(["--cors-origin", "*"]).corsOrigins).toEqual(["*"]);
  });

  it("treats a bare boolean flag as true and accepts explicit values", () => {
    expect(parse(["--auto-create-sessions"]).autoCreateSessions).toBe(true);
    expect(parse(["--auto-create-sessions", "--port", "1"]).autoCreateSessions).toBe(true);
    expect(parse(["--auto-create-sessions=false"]).autoCreateSessions).toBe(false);
    expect(parse(["--auto-create-sessions", "false"]).autoCreateSessions).toBe(false);
    expect(
      parse(["--no-auto-create-sessions"], { UB_AUTO_CREATE_SESSIONS: "1" }).autoCreateSessions,
    ).toBe(false);
    expect(parse([], { UB_AUTO_CREATE_SESSIONS: "yes" }).autoCreateSessions).toBe(true);
  });

  it("treats empty environment variables as unset", () => {
    expect(parse([], { UB_PORT: "", UB_LOG_LEVEL: "  " })).toEqual(defaultServerConfig);
  });

  it("allows port 0 to pick a free port", () => {
    expect(parse(["--port", "0"]).port).toBe(0);
  });

  it("turns the worker and admin listeners off with off", () => {
    const config = parse(["--worker-port", "off"], { UB_ADMIN_PORT: "OFF" });
    expect(config.workerPort).toBeNull();
    expect(config.adminPort).toBeNull();
  });

  it("collects worker allowlist patterns and never shows the worker token", () => {
    const token = "q0VhL3s9Xk2mB7cR4tYw8ZpN1jF6dG5aE";
    const config = parse(["--worker-allow", "10.0.0.7:50100,*.workers.internal:*"], {
      UB_WORKER_TOKEN: token,
    });
    expect(config.workerAllow).toEqual(["10.0.0.7:50100", "*.workers.internal:*"]);
    expect(config.workerToken).toBe(token);
    expect(() => parse(["--worker-token", `${"x".repeat(31)}`])).toThrow(/at least 32/);
    expect(() => parse(["--worker-token", `${"x".repeat(31)}`])).not.toThrow(/x{31}/);
  });

  it.each([
    ["one character", "a".repeat(40)],
    ["two characters", "01".repeat(10) + "10".repeat(10)],
    ["a pattern repeated", "Tr0ub4dor&3x".repeat(3)],
    ["a run", "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"],
  ])("refuses a worker token made by hand (%s), saying how to make one", (_, weak) => {
    const refusal = () => parse(["--worker-token", weak]);
    expect(refusal).toThrow(/--worker-token: must not be easy to guess.*openssl rand -base64 32/);
    expect(refusal).not.toThrow(weak);
  });

  it("accepts tokens openssl rand makes", () => {
    for (let i = 0; i < 100; i++) {
      const base64 = randomBytes(32).toString("base64");
      const hex = randomBytes(16).toString("hex");
      expect(parse([], { UB_WORKER_TOKEN: base64 }).workerToken).toBe(base64);
      expect(parse([], { UB_WORKER_TOKEN: hex }).workerToken).toBe(hex);
    }
  });

  it("reads the worker token from --worker-token-file or UB_WORKER_TOKEN_FILE, newline trimmed", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "ub-config-"));
    try {
      const token = randomBytes(32).toString("base64");
      const file = path.join(dir, "token");
      writeFileSync(file, `${token}\n`);
      expect(parse(["--worker-token-file", file]).workerToken).toBe(token);
      expect(parse([], { UB_WORKER_TOKEN_FILE: file }).workerToken).toBe(token);
      writeFileSync(file, `${token}\r\n`);
      expect(parse(["--worker-token-file", file]).workerToken).toBe(token);

      expect(() => parse(["--worker-token-file", path.join(dir, "none")])).toThrow(
        /--worker-token-file: cannot read .*none \(ENOENT\); write one with openssl rand -base64 32 >/,
      );
      expect(() => parse([], { UB_WORKER_TOKEN_FILE: dir })).toThrow(
        /UB_WORKER_TOKEN_FILE: cannot read .* \(EISDIR\)/,
      );
      writeFileSync(file, "\n");
      expect(() => parse(["--worker-token-file", file])).toThrow(
        /--worker-token-file: .* is empty/,
      );
      writeFileSync(file, "x".repeat(5000));
      expect(() => parse(["--worker-token-file", file])).toThrow(/is over 4096 bytes/);
      writeFileSync(file, "b".repeat(40));
      expect(() => parse(["--worker-token-file", file])).toThrow(
        /--worker-token-file: must not be easy to guess/,
      );
      writeFileSync(file, token);
      const both = () => parse(["--worker-token-file", file], { UB_WORKER_TOKEN: token });
      expect(both).toThrow(
        "--worker-token / UB_WORKER_TOKEN and --worker-token-file / UB_WORKER_TOKEN_FILE are both set",
      );
      expect(both).not.toThrow(token);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.each([
    [["--port", "70000"], {}, /--port: 70000 is out of range 0\.\.65535/],
    [["--port", "80a"], {}, /--port: "80a" is not a whole number/],
    [[], { UB_PORT: "-1" }, /UB_PORT: "-1" is not a whole number/],
    [["--session-ttl", "0"], {}, /--session-ttl: 0 is out of range 1\.\./],
    [["--max-sessions", "1.5"], {}, /--max-sessions: "1.5" is not a whole number/],
    [
      ["--max-value-bytes", "1MB"],
      {},
      /--max-value-bytes: "1MB" is not a size; use bytes or a number with KiB, MiB or GiB/,
    ],
    [["--max-request-bytes", "8GiB"], {}, /--max-request-bytes: .* is out of range/],
    [["--log-level", "verbose"], {}, /--log-level: must be one of debug, info, warn, error/],
    [[], { UB_AUTO_CREATE_SESSIONS: "maybe" }, /UB_AUTO_CREATE_SESSIONS: "maybe" is not a boolean/],
    [
      ["--cors-origin", "http://localhost:5173/"],
      {},
      /--cors-origin: "http:\/\/localhost:5173\/" is not an origin; write scheme:\/\/host\[:port\]/,
    ],
    [
      [],
      { UB_CORS_ORIGINS: "localhost:5173" },
      /UB_CORS_ORIGINS: "localhost:5173" is not an origin/,
    ],
    [["--cors-origin", "ftp://files.example"], {}, /is not an origin/],
    [["--host", ""], {}, /--host: must not be empty/],
    [
      ["--store", "redis"],
      {},
      /--store: "redis" is not a URL; write redis:\/\/\[user:password@\]host/,
    ],
    [[], { UB_STORE: "postgres" }, /UB_STORE: "postgres" is not a URL; write redis:\/\//],
    [
      ["--store", "memry"],
      {},
      /--store: "memry" is no store: did you mean memory\? Write memory, a Redis server as redis:\/\/\[user:password@\]host\[:port\]\[\/db\], or a Redis Cluster as redis\+cluster:\/\//,
    ],
    [[], { UB_STORE: "Memroy" }, /UB_STORE: "Memroy" is no store: did you mean memory\?/],
    [["--store-key-prefix", "a b"], {}, /--store-key-prefix: must be 1 to 64 printable ASCII/],
    [[], { UB_STORE_KEY_PREFIX: "p".repeat(65) }, /UB_STORE_KEY_PREFIX: must be 1 to 64/],
    [["--store-key-prefix", "ключ:"], {}, /--store-key-prefix: must be 1 to 64 printable ASCII/],
    [["--store-connect-timeout-ms", "50"], {}, /--store-connect-timeout-ms: 50 is out of range/],
    [["--worker-token", "short"], {}, /--worker-token: must be at least 32 characters/],
    [["--worker-allow", "10.0.0.1"], {}, /--worker-allow: "10.0.0.1" is not host:port/],
    [["--worker-allow", "*.10.0.0.1:*"], {}, /puts a wildcard before an IP/],
    [
      ["--worker-port", "50051"],
      {},
      /--port \/ UB_PORT and --worker-port \/ UB_WORKER_PORT are both 50051/,
    ],
    [["--admin-port", "x"], {}, /--admin-port: "x" is not a whole number/],
  ] as const)("rejects %j %j with a clear message", (argv, env, message) => {
    expect(() => parseServerConfig([...argv], env)).toThrow(message);
  });

  it("takes a Redis store as a URL, in canonical form, with a key prefix", () => {
    expect(parse([]).store).toBe("memory");
    expect(parse(["--store", "MEMORY"]).store).toBe("memory");
    expect(parse(["--store", "redis://127.0.0.1"]).store).toEqual({
      kind: "redis",
      url: "redis://127.0.0.1:6379",
    });
    const config = parse([], {
      UB_STORE: "REDISS://app:s3cr%40t@redis.internal:6380/2",
      UB_STORE_KEY_PREFIX: "staging:bridge:",
      UB_STORE_CONNECT_TIMEOUT_MS: "1500",
    });
    // ioredis turns TLS on only for a lower-case rediss://.
    expect(config.store).toEqual({
      kind: "redis",
      url: "rediss://app:s3cr%40t@redis.internal:6380/2",
    });
    expect(config.storeKeyPrefix).toBe("staging:bridge:");
    expect(config.storeConnectTimeoutMs).toBe(1500);
    expect(parse(["--store=redis://:pw@[::1]:7000/0"]).store).toEqual({
      kind: "redis",
      url: "redis://:pw@[::1]:7000/0",
    });
    expect(parse(["--store", "redis://redis_1/"]).store).toEqual({
      kind: "redis",
      url: "redis://redis_1:6379",
    });
    expect(parse(["--store", "redis://h:1/2147483647"]).store).toEqual({
      kind: "redis",
      url: "redis://h:1/2147483647",
    });
    expect(parse(["--store", "memory"], { UB_STORE: "redis://h" }).store).toBe("memory");
  });

  it.each([
    [
      "http://127.0.0.1:6379",
      /scheme "http:" is not redis:, rediss:, redis\+cluster: or rediss\+cluster:/,
    ],
    ["127.0.0.1:6379", /write redis:\/\/\[user:password@\]host\[:port\]\[\/db\]/],
    ["redis://", /has no host/],
    ["redis://:6379", /has no host/],
    ["redis://127.0.0.1:0", /port "0" is not a number in 1\.\.65535/],
    ["redis://127.0.0.1:65536", /port "65536" is not a number in 1\.\.65535/],
    ["redis://127.0.0.1:", /port "" is not a number/],
    ["redis://127.0.0.1:63x9", /port "63x9"/],
    ["redis://127.0.0.1/16x", /path "\/16x" is not a database number/],
    ["redis://127.0.0.1/0/keys", /path "\/0\/keys" is not a database number/],
    ["redis://127.0.0.1/-1", /path "\/-1"/],
    ["redis://127.0.0.1/2147483648", /is not a database number/],
    ["redis://127.0.0.1?db=1", /"\?db=1": query and fragment are not accepted/],
    ["redis://127.0.0.1/0#x", /"#x": query and fragment are not accepted/],
    ["redis://::1:6379", /IPv6 address in brackets/],
    ["redis://[::1", /is not a bracketed IPv6 address/],
    ["redis://[10.0.0.1]:6379", /is not a bracketed IPv6 address/],
    ["redis://[::1]x", /is not :port/],
    ["redis://bad host", /host "bad host" is not a host name/],
    ["redis://-bad.example", /is not a host name/],
  ])("refuses --store %s, saying what is wrong", (url, message) => {
    expect(() => parse(["--store", url])).toThrow(message);
    expect(() => parse([], { UB_STORE: url })).toThrow(/^UB_STORE: /);
  });

  it.each([
    ["redis://alice@host", /has no password/],
    ["redis://alice:@host", /password before @ is empty/],
    ["redis://alice:hunter2/x@host", /percent-encoded/],
    ["redis://alice:hunter2?x@host", /percent-encoded/],
    ["redis://al:ice:hunter2 x@host", /percent-encoded/],
    ["redis://alice:hunter2%zz@host", /percent-encoded/],
    ["redis://alice:hunter2%ff@host", /percent-encoded UTF-8/],
    ["redis://alice:hunter2@host:99999", /port "99999"/],
    ["redis://alice:hunter2@host/db", /path "\/db"/],
    ["redis://alice:hunter2@host?password=x", /query and fragment/],
    ["hunter2", /is not a URL/],
    ["alice:hunter2@host", /write redis:\/\//],
  ])("refuses %s without repeating the password", (url, message) => {
    let error: unknown;
    try {
      parse(["--store", url]);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(Error);
    const text = (error as Error).message;
    expect(text).toMatch(message);
    expect(text).toMatch(/^--store: /);
    // "hunter2" alone is a bare word, the one input shown back in full.
    if (url !== "hunter2") expect(text).not.toContain("hunter2");
    expect(text).not.toContain("alice");
  });

  it("rejects unknown options, stray arguments, missing values and repeats", () => {
    expect(() => parse(["--prot", "1"])).toThrow("unknown option --prot (see --help)");
    expect(() => parse(["8080"])).toThrow('unexpected argument "8080"');
    expect(() => parse(["--port"])).toThrow("--port needs a value <n>");
    expect(() => parse(["--port", "--host", "x"])).toThrow("--port needs a value");
    expect(() => parse(["--port", "1", "--port", "2"])).toThrow("--port is given more than once");
    expect(() => parse(["--prot=1"])).toThrow("unknown option --prot (see --help)");
    expect(() => parse(["--no-port"])).toThrow("unknown option --no-port");
    expect(() => parse(["--no-auto-create-sessions=true"])).toThrow(
      "unknown option --no-auto-create-sessions",
    );
    expect(() => parse(["-p", "1"])).toThrow('unexpected argument "-p"; options start with --');
    expect(() => parse(["-vh"])).toThrow('unexpected argument "-vh"');
    expect(() => parse(["--", "--port"])).toThrow('unexpected argument "--"');
    expect(() => parse(["--auto-create-sessions", "maybe"])).toThrow('unexpected argument "maybe"');
    // A value may start with a single dash: it is then checked as a value.
    expect(() => parse(["--port", "-5"])).toThrow('--port: "-5" is not a whole number');
  });

  it("rejects a request limit below the value limit, naming both settings", () => {
    expect(() => parse(["--max-value-bytes", "4MiB", "--max-request-bytes", "1MiB"])).toThrow(
      /--max-request-bytes.*--max-value-bytes/,
    );
  });

  it("returns help for --help and -h", () => {
    expect(parseServerConfig(["--port", "1", "-h"], {})).toEqual({ help: help() });
  });
});

describe("serve --help", () => {
  it.each(optionEntries)("documents %s with its flag, variable and default", (key, option) => {
    const text = help();
    const entry = text.slice(text.indexOf(`  --${option.flag} ${option.placeholder}\n`));
    const block = entry.slice(0, entry.indexOf("\n  -", 3));
    expect(block).toContain(`\n      env ${option.env}, default ${formatDefault(option.default)}`);
    expect(option.default).toEqual(defaultServerConfig[key]);
    // Every word of the help text is there, wrapped.
    expect(block.replace(/\s+/g, " ")).toContain(option.help);
  });

  it("every flag it documents is accepted, and nothing else", () => {
    const flags = [...help().matchAll(/^ {2}--([a-z0-9-]+) /gm)].map((m) => m[1]);
    expect(flags).toEqual(optionEntries.map(([, o]) => o.flag));
    for (const flag of flags) {
      expect(() => parseServerConfig([`--${flag}=x`, "--help"], {})).not.toThrow();
    }
    expect(optionEntries.map(([key]) => key).sort()).toEqual(
      Object.keys(defaultServerConfig).sort(),
    );
  });

  it("shows a size default with its unit and never shows a secret", () => {
    expect(help()).toContain("env UB_MAX_VALUE_BYTES, default 1048576 (1 MiB)");
    expect(help()).toContain("env UB_WORKER_TOKEN, default none");
  });
});
