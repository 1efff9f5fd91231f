/**
 * Which request headers browsers may send cross-origin: the preflight
 * answer of a real bridge with the default list and with a configured one,
 * and the flag and variable that configure it.
 */
import http from "node:http";
import { afterEach, describe, expect, it } from "vitest";
import { parseServerConfig } from "../../src/server/index.js";
import { type RunningBridge, startBridge } from "../support/bridge.js";

const origin = "http://app.example";
const running: RunningBridge[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((b) => b.stop()));
});

async function bridge(corsAllowHeaders?: string[]): Promise<RunningBridge> {
  const b = await startBridge({
    corsOrigins: [origin],
    ...(corsAllowHeaders === undefined ? {} : { corsAllowHeaders }),
  });
  running.push(b);
  return b;
}

/** A browser's preflight for a POST sending `headers`; the allowed headers, lower case. */
function preflight(url: string, headers: string): Promise<{ status: number; allowed: string[] }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${url}/snakepit.bridge.BridgeService/Ping`, {
      method: "OPTIONS",
      agent: false,
      headers: {
        Origin: origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": headers,
      },
    });
    req.on("response", (res) => {
      res.resume();
      res.on("end", () =>
        resolve({
          status: res.statusCode ?? 0,
          allowed: String(res.headers["access-control-allow-headers"] ?? "")
            .toLowerCase()
            .split(/,\s*/)
            .filter((h) => h !== ""),
        }),
      );
    });
    req.on("error", reject);
    req.end();
  });
}

describe("CORS allowed request headers", () => {
  it("admits authorization and x-request-id by default, with the protocol headers", async () => {
    const b = await bridge();
    const auth = await preflight(b.url, "authorization,content-type");
    expect(auth.status).toBe(204);
    expect(auth.allowed).toEqual(expect.arrayContaining(["authorization", "content-type"]));
    const traced = await preflight(b.url, "x-request-id");
    expect(traced.allowed).toContain("x-request-id");
    // What connect-web, grpc-web and protobuf-ts clients send, and the
    // session-affinity header.
    expect(traced.allowed).toEqual(
      expect.arrayContaining([
        "x-session-id",
        "x-grpc-web",
        "x-user-agent",
        "grpc-timeout",
        "connect-protocol-version",
        "connect-timeout-ms",
      ]),
    );
  });

  it("answers with exactly the configured list", async () => {
    const b = await bridge(["content-type", "x-tenant"]);
    const pre = await preflight(b.url, "x-tenant");
    expect(pre.status).toBe(204);
    expect(pre.allowed).toEqual(["content-type", "x-tenant"]);
  });
});

describe("--cors-allow-headers", () => {
  it("takes a comma-separated list from the flag (repeatable) or UB_CORS_ALLOW_HEADERS", () => {
    const fromFlags = parseServerConfig(
      ["--cors-allow-headers", "Content-Type, X-Tenant", "--cors-allow-headers=authorization"],
      {},
    );
    expect(fromFlags).toMatchObject({
      corsAllowHeaders: ["content-type", "x-tenant", "authorization"],
    });
    const fromEnv = parseServerConfig([], { UB_CORS_ALLOW_HEADERS: "content-type,x-b3-traceid" });
    expect(fromEnv).toMatchObject({ corsAllowHeaders: ["content-type", "x-b3-traceid"] });
    const byDefault = parseServerConfig([], {});
    expect(byDefault).toMatchObject({
      corsAllowHeaders: expect.arrayContaining(["authorization", "x-request-id", "content-type"]),
    });
  });

  it("refuses a value that is not a header name", () => {
    expect(() => parseServerConfig(["--cors-allow-headers", "x tenant"], {})).toThrow(
      '--cors-allow-headers: "x tenant" is not a header name',
    );
  });
});
