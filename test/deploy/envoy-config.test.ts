/**
 * envoy/envoy.yaml, read as Envoy reads it: strictly, against Envoy's own
 * API descriptors (see envoy-api.ts), then what it says checked against the
 * bridge it fronts: the protocol's every RPC, the client's headers, the
 * bridge's timeouts and listeners, and the compose services it names.
 * No Envoy binary runs here.
 */
import { readFile } from "node:fs/promises";
import { cors } from "@connectrpc/connect";
import { beforeAll, describe, expect, it } from "vitest";
import { defaultAffinityHeader } from "../../src/client/affinity-header.js";
import { Health } from "../../src/gen/grpc/health/v1/health_pb.js";
import { BridgeService } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { defaultCorsAllowHeaders } from "../../src/server/edge/http-front.js";
import { composeFile, replicaConfig } from "./compose.js";
import { at, type EnvoyApi, list, loadEnvoyApi, seconds } from "./envoy-api.js";
import { selectRoute } from "./envoy-routes.js";

const configPath = new URL("../../envoy/envoy.yaml", import.meta.url);

/**
 * The bridge's default keepalive period on quiet watch streams
 * (WatchVariables): every idle timeout on a watch's way must be longer.
 */
const defaultWatchKeepaliveSeconds = 30;

/** The replicas' keepalive period: their `watchKeepaliveMs` where the config has one. */
async function watchKeepaliveSeconds(): Promise<number> {
  const replica = await replicaConfig();
  return "watchKeepaliveMs" in replica
    ? Number(replica.watchKeepaliveMs) / 1000
    : defaultWatchKeepaliveSeconds;
}

/** RPCs only workers may call (the service refuses them to public callers with requireWorker). */
const workerOnly = new Set(["RegisterTools"]);

/** How each protocol's requests look to Envoy's router. */
const protocolRequests = {
  "grpc-web": { "content-type": "application/grpc-web+proto", "x-grpc-web": "1" },
  "grpc-web-text": { "content-type": "application/grpc-web-text", "x-grpc-web": "1" },
  "connect unary": { "content-type": "application/proto", "connect-protocol-version": "1" },
  "connect stream": { "content-type": "application/connect+proto" },
  grpc: { "content-type": "application/grpc", te: "trailers" },
} as const;

let api: EnvoyApi;
let text: string;
let config: unknown;

beforeAll(async () => {
  text = await readFile(configPath, "utf8");
  api = await loadEnvoyApi(text);
  config = api.parse(text);
}, 60_000);

const localRateLimitType =
  "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";

const listener = () => list(config, "staticResources", "listeners")[0];
const networkFilters = () => list(listener(), "filterChains", 0, "filters");
const hcm = () => at(networkFilters().at(-1), "typedConfig");
const virtualHost = () => list(hcm(), "routeConfig", "virtualHosts")[0];
const cluster = (name: string) =>
  list(config, "staticResources", "clusters").find((c) => at(c, "name") === name);
const headerList = (value: unknown) =>
  String(value)
    .split(",")
    .map((h) => h.trim().toLowerCase());

describe("envoy.yaml is a valid Envoy v3 bootstrap", () => {
  it("parses strictly against Envoy's API", () => {
    expect(at(config, "staticResources", "listeners", 0, "name")).toBe("public");
  });

  it("refuses an unknown field, a wrong enum value and an unresolvable @type", () => {
    const broken = [
      ["stat_prefix: public\n", "stat_prefix: public\n                stat_prefx: typo\n"],
      ["codec_type: AUTO", "codec_type: HTTP4"],
      ["cors.v3.Cors\n", "cors.v3.Corz\n"],
      ["lb_policy: RING_HASH", "lb_policy: RING_HASH\n      lb_polcy: MAGLEV"],
      ["local_rate_limit_per_downstream_connection:", "local_rate_limit_per_connection:"],
      ["denominator: HUNDRED", "denominator: PERCENT"],
      ["downstream_connections.v3.DownstreamConnectionsConfig", "downstream_connections.v3.Config"],
    ] as const;
    for (const [from, to] of broken) {
      expect(text).toContain(from);
      expect(() => api.parse(text.replace(from, to)), to).toThrow();
    }
  });
});

describe("the public listener", () => {
  it("limits connections, then runs gRPC-Web, CORS, the rate limits and the router, in that order", () => {
    expect(networkFilters().map((f) => at(f, "name"))).toEqual([
      "envoy.filters.network.connection_limit",
      "envoy.filters.network.http_connection_manager",
    ]);
    expect(Number(at(networkFilters()[0], "typedConfig", "maxConnections"))).toBeGreaterThan(0);
    const filters = list(hcm(), "httpFilters");
    expect(filters.map((f) => at(f, "name"))).toEqual([
      "envoy.filters.http.grpc_web",
      "envoy.filters.http.cors",
      "envoy.filters.http.local_ratelimit.per_connection",
      "envoy.filters.http.local_ratelimit.global",
      "envoy.filters.http.router",
    ]);
    // A refusal of the rate limits passes back through gRPC-Web and CORS,
    // so a browser reads it as a gRPC status, not as a CORS failure.
    expect(filters.map((f) => at(f, "typedConfig", "@type"))).toEqual([
      "type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWeb",
      "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors",
      localRateLimitType,
      localRateLimitType,
      "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
    ]);
  });

  it("routes every RPC of the protocol to the bridges, over every protocol, but RegisterTools", () => {
    expect(BridgeService.methods.length).toBeGreaterThan(20);
    for (const method of BridgeService.methods) {
      for (const [protocol, headers] of Object.entries(protocolRequests)) {
        for (const path of [
          `/${BridgeService.typeName}/${method.name}`,
          `/${BridgeService.typeName}/${method.name}?x=1`,
        ]) {
          const route = selectRoute(virtualHost(), { path, headers });
          const where = `${protocol} ${path}`;
          if (workerOnly.has(method.name)) {
            expect(at(route, "route"), where).toBeUndefined();
            expect([403, 404], where).toContain(at(route, "directResponse", "status"));
          } else {
            expect(at(route, "route", "cluster"), where).toBe("bridge");
          }
        }
      }
    }
    // grpc.health.v1 is for probes on the bridges' own network, not the edge.
    for (const method of Health.methods) {
      const path = `/${Health.typeName}/${method.name}`;
      const route = selectRoute(virtualHost(), { path, headers: protocolRequests.grpc });
      expect(at(route, "route", "cluster"), path).not.toBe("bridge");
    }
    // Anything else is the demo's static files.
    expect(at(selectRoute(virtualHost(), { path: "/", headers: {} }), "route", "cluster")).toBe(
      "web",
    );
  });

  it("matches paths as the bridge reads them: normalized, no escaped slashes", () => {
    expect(at(hcm(), "normalizePath")).toBe(true);
    expect(at(hcm(), "mergeSlashes")).toBe(true);
    expect(at(hcm(), "pathWithEscapedSlashesAction")).toBe("REJECT_REQUEST");
    expect(at(hcm(), "useRemoteAddress")).toBe(true);
  });

  it("keeps streams open: no route timeout, idle timeouts longer than the watch keepalive", async () => {
    const keepalive = await watchKeepaliveSeconds();
    expect(keepalive).toBeGreaterThan(0);
    const rpc = at(
      selectRoute(virtualHost(), {
        path: "/snakepit.bridge.BridgeService/WatchVariables",
        headers: {},
      }),
      "route",
    );
    expect(at(rpc, "timeout")).toBe("0s");
    expect(seconds(at(rpc, "idleTimeout"))).toBeGreaterThan(2 * keepalive);
    expect(seconds(at(hcm(), "streamIdleTimeout"))).toBeGreaterThan(2 * keepalive);
    const maxStream = seconds(at(rpc, "maxStreamDuration", "maxStreamDuration"));
    expect(maxStream).toBeGreaterThan(10 * keepalive);
    expect(seconds(at(hcm(), "requestHeadersTimeout"))).toBeGreaterThan(0);
  });

  it("hashes on the header the client sends, and retries only calls that reached no bridge", () => {
    const rpc = at(
      selectRoute(virtualHost(), { path: "/snakepit.bridge.BridgeService/Ping", headers: {} }),
      "route",
    );
    expect(list(rpc, "hashPolicy")).toEqual([{ header: { headerName: defaultAffinityHeader } }]);
    expect(headerList(at(rpc, "retryPolicy", "retryOn")).sort()).toEqual([
      "connect-failure",
      "refused-stream",
    ]);
    expect(at(rpc, "retryPolicy", "retryHostPredicate", 0, "name")).toBe(
      "envoy.retry_host_predicates.previous_hosts",
    );
  });

  it("answers CORS for configured origins with every header the clients send and read", () => {
    const policy = at(virtualHost(), "typedPerFilterConfig", "envoy.filters.http.cors");
    expect(at(policy, "@type")).toBe(
      "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
    );
    const origins = list(policy, "allowOriginStringMatch");
    expect(origins.length).toBeGreaterThan(0);
    for (const o of origins) {
      // Exact origins only: a pattern would let any page read replies.
      expect(Object.keys(o as object)).toEqual(["exact"]);
      expect(new URL(String(at(o, "exact"))).origin).toBe(at(o, "exact"));
    }
    const allowed = headerList(at(policy, "allowHeaders"));
    // What the bridge admits itself when called cross-origin directly, and more.
    for (const h of [
      ...defaultCorsAllowHeaders,
      ...cors.allowedHeaders,
      defaultAffinityHeader,
      "authorization",
      "x-request-id",
      "x-grpc-web",
      "x-user-agent",
      "grpc-timeout",
      "connect-timeout-ms",
    ]) {
      expect(allowed).toContain(h.toLowerCase());
    }
    const exposed = headerList(at(policy, "exposeHeaders"));
    for (const h of [
      ...cors.exposedHeaders,
      "grpc-status",
      "grpc-message",
      "grpc-status-details-bin",
    ])
      expect(exposed).toContain(h.toLowerCase());
    const methods = headerList(at(policy, "allowMethods"));
    for (const m of cors.allowedMethods) expect(methods).toContain(m.toLowerCase());
  });

  it("logs every request as JSON, without the session header", () => {
    const log = list(hcm(), "accessLog")[0];
    const format = at(log, "typedConfig", "logFormat", "jsonFormat") as Record<string, string>;
    expect(Object.keys(format)).toEqual(expect.arrayContaining(["path", "status", "grpc_status"]));
    expect(JSON.stringify(format).toLowerCase()).not.toContain(defaultAffinityHeader);
  });
});

/** Requests a second a token bucket lets through once its burst is spent, and its burst. */
function bucketRate(bucket: unknown): { perSecond: number; burst: number } {
  const interval = seconds(at(bucket, "fillInterval"));
  // Envoy refuses a fill interval under 50 ms (the proto's rules are not
  // enforced by the parser, so they are checked here).
  expect(interval).toBeGreaterThanOrEqual(0.05);
  const perFill = Number(at(bucket, "tokensPerFill") ?? 1);
  const burst = Number(at(bucket, "maxTokens"));
  expect(perFill).toBeGreaterThan(0);
  expect(burst).toBeGreaterThanOrEqual(perFill);
  return { perSecond: perFill / interval, burst };
}

/** A RuntimeFractionalPercent's default as a percentage (proto JSON omits HUNDRED, the zero value). */
function percent(fraction: unknown): number {
  const value = at(fraction, "defaultValue");
  const denominator = at(value, "denominator") ?? "HUNDRED";
  const scale = { HUNDRED: 100, TEN_THOUSAND: 10_000, MILLION: 1_000_000 }[String(denominator)];
  return (100 * Number(at(value, "numerator") ?? 0)) / Number(scale);
}

describe("rate and connection limits at the edge", () => {
  const rateLimits = () =>
    list(hcm(), "httpFilters").filter((f) => at(f, "typedConfig", "@type") === localRateLimitType);

  it("enforces request rate limits on every request: one bucket per connection, one for all", async () => {
    const replica = await replicaConfig();
    const limits = rateLimits().map((f) => at(f, "typedConfig"));
    expect(limits).toHaveLength(2);
    for (const limit of limits) {
      expect(String(at(limit, "statPrefix"))).not.toBe("");
      // Enabled and enforced default to 0%: a filter without both at 100%
      // only counts.
      expect(percent(at(limit, "filterEnabled")), JSON.stringify(limit)).toBe(100);
      expect(percent(at(limit, "filterEnforced")), JSON.stringify(limit)).toBe(100);
      // gRPC callers read RESOURCE_EXHAUSTED, as for the bridge's own limits.
      expect(at(limit, "rateLimitedAsResourceExhausted")).toBe(true);
      // Applied to every request, not only to listed descriptors.
      expect(list(limit, "descriptors")).toEqual([]);
      expect(at(limit, "alwaysConsumeDefaultTokenBucket")).not.toBe(false);
    }
    const perConnection = limits.filter((l) => at(l, "localRateLimitPerDownstreamConnection"));
    const global = limits.filter((l) => !at(l, "localRateLimitPerDownstreamConnection"));
    expect([perConnection.length, global.length]).toEqual([1, 1]);
    const connection = bucketRate(at(perConnection[0], "tokenBucket"));
    const all = bucketRate(at(global[0], "tokenBucket"));
    // One connection gets a small share of the whole, so one client needs
    // many connections (each counted, below) to use up everyone's budget.
    expect(connection.perSecond * 10).toBeLessThanOrEqual(all.perSecond);
    expect(connection.burst * 10).toBeLessThanOrEqual(all.burst);
    // A connection's burst fits in the streams it may have open at once.
    expect(connection.burst).toBeLessThanOrEqual(replica.maxStreamsPerConnection);
  });

  it("limits connections: accepted per second, open on the listener and in the whole process", async () => {
    const replica = await replicaConfig();
    const accept = list(listener(), "listenerFilters");
    expect(accept.map((f) => at(f, "name"))).toEqual(["envoy.filters.listener.local_ratelimit"]);
    const rate = bucketRate(at(accept[0], "typedConfig", "tokenBucket"));
    const open = Number(at(networkFilters()[0], "typedConfig", "maxConnections"));
    expect(rate.burst).toBeLessThan(open);
    const monitors = list(config, "overloadManager", "resourceMonitors");
    const downstream = monitors.find(
      (m) => at(m, "name") === "envoy.resource_monitors.global_downstream_max_connections",
    );
    const processMax = Number(at(downstream, "typedConfig", "maxActiveDownstreamConnections"));
    expect(processMax).toBeGreaterThanOrEqual(open);
    // What Envoy holds open upstream stays within what each replica accepts.
    const upstream = Number(
      at(list(cluster("bridge"), "circuitBreakers", "thresholds")[0], "maxConnections"),
    );
    expect(upstream).toBeLessThanOrEqual(replica.maxConnections);
  });
});

describe("the bridge cluster", () => {
  it("speaks HTTP/2 to the bridges with limits they accept", async () => {
    const replica = await replicaConfig();
    const bridge = cluster("bridge");
    const options = at(
      bridge,
      "typedExtensionProtocolOptions",
      "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    );
    const h2 = at(options, "explicitHttpConfig", "http2ProtocolOptions");
    expect(h2).toBeDefined();
    expect(Number(at(h2, "maxConcurrentStreams"))).toBeLessThanOrEqual(
      replica.maxStreamsPerConnection,
    );
    // Envoy closes an idle upstream connection before the bridge would.
    expect(seconds(at(options, "commonHttpProtocolOptions", "idleTimeout")) * 1000).toBeLessThan(
      replica.idleTimeoutMs,
    );
    const limits = list(bridge, "circuitBreakers", "thresholds")[0];
    expect(Number(at(limits, "maxConnections"))).toBeLessThanOrEqual(replica.maxConnections);
    expect(Number(at(limits, "maxRequests"))).toBeGreaterThan(0);
    expect(["RING_HASH", "MAGLEV"]).toContain(at(bridge, "lbPolicy"));
  });

  it("reaches every replica of the compose service on its public port, and probes /healthz on its admin port", async () => {
    const replica = await replicaConfig();
    const compose = await composeFile();
    const endpoints = list(cluster("bridge"), "loadAssignment", "endpoints", 0, "lbEndpoints");
    expect(endpoints).toHaveLength(1);
    const endpoint = at(endpoints[0], "endpoint");
    expect(at(cluster("bridge"), "type")).toBe("STRICT_DNS");
    expect(Object.keys(compose.services)).toContain(
      at(endpoint, "address", "socketAddress", "address"),
    );
    expect(at(endpoint, "address", "socketAddress", "portValue")).toBe(replica.port);
    expect(replica.host).toBe("0.0.0.0");
    const check = list(cluster("bridge"), "healthChecks")[0];
    expect(at(check, "httpHealthCheck", "path")).toBe("/healthz");
    expect(at(endpoint, "healthCheckConfig", "portValue")).toBe(replica.adminPort);
    expect(replica.adminHost).toBe("0.0.0.0");
    expect(seconds(at(check, "interval")) * Number(at(check, "unhealthyThreshold"))).toBeLessThan(
      replica.shutdownGraceMs / 1000,
    );
  });

  it("serves the page from the compose web service", async () => {
    const compose = await composeFile();
    const web = at(cluster("web"), "loadAssignment", "endpoints", 0, "lbEndpoints", 0, "endpoint");
    expect(Object.keys(compose.services)).toContain(at(web, "address", "socketAddress", "address"));
  });
});
