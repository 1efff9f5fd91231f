/**
 * docker-compose.yml: valid for Compose (`docker-compose config`, no
 * Docker engine needed), images pinned, Redis persistent, and the bridge
 * replicas' flags accepted by the bridge's own option parser.
 */

import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { composeConfig, composeFile, replicaConfig } from "./compose.js";

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

  it("runs at least two bridge replicas on the Redis store, configured as the CLI accepts", async () => {
    const { services } = await composeFile();
    expect(services.bridge?.deploy?.replicas).toBeGreaterThanOrEqual(2);
    const config = await replicaConfig();
    expect(config.store).toEqual({ kind: "redis", url: "redis://redis:6379" });
    // Reachable from Envoy and from a worker container.
    expect([config.host, config.workerHost, config.adminHost]).toEqual([
      "0.0.0.0",
      "0.0.0.0",
      "0.0.0.0",
    ]);
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
      if (name !== "envoy") expect(service.ports, name).toBeUndefined();
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
    // The bridges carry the demo page's spam tools; the production `bridge`
    // target (the CLI alone) takes the same command.
    expect(services.bridge?.build?.target).toBe("demo-bridge");
    expect(dockerfile).toMatch(/^FROM \S+ AS bridge$/m);
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
