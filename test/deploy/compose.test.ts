/**
 * docker-compose.yml: valid for Compose (`docker-compose config`, no
 * Docker engine needed), images pinned, Redis persistent, and the bridge
 * replicas' flags accepted by the bridge's own option parser.
 */

import { execFile } from "node:child_process";
import { access, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { defaultServerConfig } from "../../src/server/config/config.js";
import { waitFor } from "../support/wait.js";
import { composeConfig, composeFile, onNetwork, replicaConfig } from "./compose.js";

const execFileAsync = promisify(execFile);

/** `name:tag` with a version number in the tag (never latest, never a bare major). */
const pinned = /^[a-z0-9./-]+:v?\d+\.\d+\.\d+[\w.-]*$/;

describe("docker-compose.yml", () => {
  it("is valid for docker-compose config", async () => {
    const { code, stderr } = await composeConfig(["-q"]);
    expect(stderr).toBe("");
    expect(code).toBe(0);
  });

  it("is checked for real: a broken copy fails docker-compose config", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "ub-compose-"));
    try {
      const text = await readFile(new URL("../../docker-compose.yml", import.meta.url), "utf8");
      const file = path.join(dir, "docker-compose.yml");
      await writeFile(file, text.replace("    deploy:\n", "    deplyo:\n"));
      const { code, stderr } = await composeConfig(["-q"], file);
      expect(code).not.toBe(0);
      expect(stderr).toMatch(/deplyo/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("pins every image by version", async () => {
    const { services } = await composeFile();
    for (const [name, service] of Object.entries(services)) {
      expect(service.image, name).toBeDefined();
      // Built ones carry the project's version; pulled ones their release.
      expect(service.image, name).toMatch(pinned);
    }
    expect(services.redis?.image).toMatch(/^redis:/);
    expect(services.envoy?.image).toMatch(/^envoyproxy\/envoy:v1\./);
  });

  it("runs Redis with an append-only file on a volume", async () => {
    const redis = (await composeFile()).services.redis;
    const command = redis?.command ?? [];
    expect(command[command.indexOf("--appendonly") + 1]).toBe("yes");
    expect(JSON.stringify(redis?.volumes)).toContain("/data");
  });

  it("bounds Redis's memory and never evicts: redis-server itself reports the compose settings", async () => {
    const command = (await composeFile()).services.redis?.command ?? [];
    expect(command[0]).toBe("redis-server");
    // The compose flags as Redis reads them, on a socket in a directory of
    // our own (the file's --appendonly then writes there, not in /data).
    const dir = await mkdtemp(path.join(tmpdir(), "ub-compose-redis-"));
    const socket = path.join(dir, "redis.sock");
    const child = execFile("/usr/bin/redis-server", [
      ...command.slice(1),
      "--port",
      "0",
      "--unixsocket",
      socket,
      "--dir",
      dir,
    ]);
    try {
      await waitFor(() => access(socket));
      const client = new Redis({ path: socket });
      try {
        const maxmemory = Number((await client.config("GET", "maxmemory"))[1]);
        const policy = (await client.config("GET", "maxmemory-policy"))[1];
        // A bound, and one that refuses writes at it instead of dropping
        // sessions: volatile-* and allkeys-* would evict session keys.
        expect(maxmemory).toBeGreaterThanOrEqual(64 * 1024 * 1024);
        expect(policy).toBe("noeviction");
      } finally {
        client.disconnect();
      }
    } finally {
      child.kill("SIGKILL");
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("runs at least two bridge replicas on the Redis store, configured as the CLI accepts", async () => {
    const { services } = await composeFile();
    expect(services.bridge?.deploy?.replicas).toBeGreaterThanOrEqual(2);
    const config = await replicaConfig();
    expect(config.store).toEqual({ kind: "redis", url: "redis://redis:6379" });
    // Every public call needs an access token, signed with the operator's key.
    expect(config.access).toBe("tokens");
    expect(services.bridge?.environment).toHaveProperty("UB_TOKEN_KEY");
    // Public and admin listeners reachable from Envoy; the worker listener
    // is bound by the entrypoint (compose-bridge.test.ts), never to all.
    expect([config.host, config.adminHost]).toEqual(["0.0.0.0", "0.0.0.0"]);
    expect(config.workerHost).not.toBe("0.0.0.0");
    // Envoy's fixed address is the proxy whose x-forwarded-for the bridges believe.
    expect(config.trustedProxies).toEqual([services.envoy?.networks?.backend?.ipv4_address]);
    // A rolling update lets the bridge drain before Compose kills it.
    const grace = Number.parseInt(services.bridge?.stop_grace_period ?? "10", 10);
    expect(grace * 1000).toBeGreaterThan(config.shutdownGraceMs);
    expect(services.bridge?.init).toBe(true);
  });

  it("mounts envoy/envoy.yaml into Envoy and publishes only Envoy's listener", async () => {
    const { services } = await composeFile();
    expect(JSON.stringify(services.envoy?.volumes)).toMatch(
      /envoy\/envoy\.yaml.*\/etc\/envoy\/envoy\.yaml/,
    );
    expect(services.envoy?.command).toEqual(
      expect.arrayContaining(["-c", "/etc/envoy/envoy.yaml"]),
    );
    for (const [name, service] of Object.entries(services)) {
      if (name === "envoy") continue;
      if (name === "demo-envoy") {
        // The opt-in demo's front: on the host's loopback only.
        expect(service.profiles, name).toEqual(["demo"]);
        expect(service.ports, name).toEqual([expect.stringMatching(/^127\.0\.0\.1:\d+:8080/)]);
      } else {
        expect(service.ports, name).toBeUndefined();
      }
    }
  });

  it("runs the plain bridge with the default limits; the demo's tools only in the opt-in demo profile", async () => {
    const { services } = await composeFile();
    expect(services.bridge?.build?.target).toBe("bridge");
    expect(services.bridge?.profiles).toBeUndefined();
    for (const [name, service] of Object.entries(services)) {
      if (service.build?.target === "demo-bridge") expect(service.profiles, name).toEqual(["demo"]);
    }
    // The demo's bridge and its Envoy are opt-in: nothing the default
    // `up` starts depends on them.
    expect(services["demo-bridge"]?.profiles).toEqual(["demo"]);
    expect(services["demo-envoy"]?.profiles).toEqual(["demo"]);
    // No limit raised above the CLI's defaults, and only the server mints
    // new session ids for public callers.
    const config = await replicaConfig();
    for (const key of [
      "maxRequestBytes",
      "maxReplyBytes",
      "maxSessionBytes",
      "maxValueBytes",
      "maxSessions",
      "maxSessionsPerClient",
      "maxConnections",
      "maxStreamsPerConnection",
      "maxToolCallsPerSession",
    ] as const) {
      expect(config[key], key).toBeLessThanOrEqual(defaultServerConfig[key]);
    }
    expect(config.clientSessionIds).toBe(false);
    expect(config.autoCreateSessions).toBe(false);
  });

  it("lets only the bridges and the Python worker reach the worker listener, and only the bridges reach Redis", async () => {
    const file = await composeFile();
    const { services, networks = {} } = file;
    const bridgeNetworks = Object.keys(services.bridge?.networks ?? {});
    // The worker listener is bound to the bridge's address on one network.
    const prefix = services.bridge?.environment?.WORKER_NETWORK_PREFIX ?? "";
    const workerNetworks = Object.entries(networks).filter(([, n]) =>
      (n?.ipam?.config ?? []).some((c) => `${c.subnet}`.startsWith(prefix)),
    );
    expect(prefix).toMatch(/^\d+\.\d+\.\d+\.$/);
    expect(workerNetworks).toHaveLength(1);
    const [workers, workersNetwork] = workerNetworks[0] as [string, (typeof networks)[string]];
    expect(workersNetwork?.ipam?.config?.[0]?.subnet).toBe(`${prefix}0/24`);
    expect(bridgeNetworks).toContain(workers);
    expect(workersNetwork?.internal).toBe(true);
    expect(onNetwork(file, workers)).toEqual(["bridge", "worker"]);
    // The worker registers there and serves its tools there.
    expect(services.worker?.command).toEqual(
      expect.arrayContaining(["--bridge", "bridge:50052", "--advertise", "worker:50100"]),
    );
    // Envoy reaches the bridges' public and admin ports, on another network.
    expect(
      Object.keys(services.envoy?.networks ?? {}).some((n) => bridgeNetworks.includes(n)),
    ).toBe(true);
    // Redis (no password) shares an internal network with the bridges alone.
    for (const network of Object.keys(services.redis?.networks ?? {})) {
      expect(onNetwork(file, network), network).toEqual(["bridge", "redis"]);
      expect(networks[network]?.internal, network).toBe(true);
    }
    // The demo's Envoy sees only the demo's bridge under the name `bridge`.
    for (const network of Object.keys(services["demo-envoy"]?.networks ?? {})) {
      const peers = onNetwork(file, network).filter((n) => n !== "demo-envoy");
      expect(peers, network).not.toContain("bridge");
      expect(peers, network).not.toContain("redis");
      expect(services["demo-bridge"]?.networks?.[network]?.aliases, network).toContain("bridge");
    }
  });

  it("builds the bridge, the page and the optional Python worker from the Dockerfile", async () => {
    const { services } = await composeFile();
    const dockerfile = await readFile(new URL("../../Dockerfile", import.meta.url), "utf8");
    for (const name of ["bridge", "web", "worker"]) {
      const target = services[name]?.build?.target;
      expect(target, name).toBeDefined();
      expect(dockerfile).toMatch(new RegExp(`^FROM \\S+ AS ${target}$`, "m"));
    }
    // The demo profile's bridge carries the demo page's spam tools.
    expect(services["demo-bridge"]?.build?.target).toBe("demo-bridge");
    expect(dockerfile).toMatch(/^FROM \S+ AS demo-bridge$/m);
    expect(services.worker?.profiles).toEqual(["worker"]);
    const command = services.worker?.command ?? [];
    // It registers on the worker listener, at an address the bridges allow.
    const config = await replicaConfig();
    expect(command[command.indexOf("--bridge") + 1]).toBe(`bridge:${config.workerPort}`);
    expect(config.workerAllow).toContain(command[command.indexOf("--advertise") + 1]);
  });

  it("runs the Python worker with flags its own parser accepts", async () => {
    const { services } = await composeFile();
    const command = (services.worker?.command ?? []) as string[];
    const script = fileURLToPath(new URL("../../demo/python/spam_worker.py", import.meta.url));
    // Debian's python3 (grpcio, scikit-learn) as in the image; --help lists every flag argparse accepts.
    // Stubs generated as the image's python-worker stage does.
    const gen = await mkdtemp(path.join(tmpdir(), "ub-worker-gen-"));
    try {
      const proto = fileURLToPath(new URL("../../proto", import.meta.url));
      await execFileAsync("protoc", [
        `-I${proto}`,
        `--python_out=${gen}`,
        `--grpc_python_out=${gen}`,
        "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin",
        path.join(proto, "snakepit/bridge/bridge.proto"),
      ]);
      const { stdout } = await execFileAsync("/usr/bin/python3", [script, "--help"], {
        env: { ...process.env, PYTHONPATH: gen },
      });
      for (const flag of command.filter((arg) => arg.startsWith("--"))) {
        expect(stdout, flag).toContain(flag);
      }
    } finally {
      await rm(gen, { recursive: true, force: true });
    }
    expect(command).toContain("--private-network");
  });
});
