/**
 * The pool's options of `unified-bridge serve`: the worker command split
 * like a shell would (never run by one), from flags and the environment.
 */
import { describe, expect, it } from "vitest";
import { parseServerConfig } from "../../src/server/config/config.js";
import type { ServerConfig } from "../../src/server/config/config-options.js";

const parse = (argv: string[], env: Record<string, string> = {}) =>
  parseServerConfig(argv, env) as ServerConfig;

describe("pool options", () => {
  it("has no pool unless a worker command is given", () => {
    expect(parse([])).toMatchObject({
      workerCommand: [],
      workerCount: 1,
      workerTools: [],
      workerHealthIntervalMs: 2000,
      workerMaxRestarts: 5,
    });
  });

  it("reads the command, count and tools from flags and the environment", () => {
    expect(
      parse([
        "--worker-command",
        `python3 "/opt/my app/grpc_server.py" --adapter 'a.B'`,
        "--worker-count",
        "3",
        "--worker-tool",
        "ping,add",
        "--worker-tool",
        "echo",
      ]),
    ).toMatchObject({
      workerCommand: ["python3", "/opt/my app/grpc_server.py", "--adapter", "a.B"],
      workerCount: 3,
      workerTools: ["ping", "add", "echo"],
    });
    expect(
      parse([], {
        UB_WORKER_COMMAND: "python3 grpc_server.py",
        UB_WORKER_COUNT: "2",
        UB_WORKER_TOOLS: "ping, add",
        UB_WORKER_HEALTH_INTERVAL_MS: "500",
      }),
    ).toMatchObject({
      workerCommand: ["python3", "grpc_server.py"],
      workerCount: 2,
      workerTools: ["ping", "add"],
      workerHealthIntervalMs: 500,
    });
  });

  it("says which option is wrong, and why", () => {
    expect(() => parse(["--worker-command", `python3 "grpc_server.py`])).toThrow(
      /--worker-command.*unterminated " quote/,
    );
    expect(() => parse(["--worker-count", "0"])).toThrow(/--worker-count.*out of range 1\.\.64/);
  });

  it("documents them in serve --help", () => {
    const help = (parseServerConfig(["--help"], {}) as { help: string }).help;
    for (const flag of [
      "--worker-command",
      "--worker-count",
      "--worker-tool",
      "--worker-health-interval-ms",
      "--worker-max-restarts",
    ]) {
      expect(help).toContain(flag);
    }
    expect(help).toContain("UB_WORKER_COMMAND");
  });
});
