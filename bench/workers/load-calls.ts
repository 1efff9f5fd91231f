/**
 * Closed-loop load generator: `concurrency` callers, each issuing its next
 * call as soon as the previous one returns, against the bridge (GetVariable,
 * SetVariable, GetVariables), the echo service (Ping) or Redis (GET, SET).
 * Runs in its own process so that client work never runs on the server's
 * event loop (the two still share the machine's cores).
 *
 * Connections persist between runs (one HTTP/2 connection per target for
 * gRPC, a keep-alive pool for HTTP/1.1, one Redis connection), as a real
 * client's would.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import type { Any } from "@bufbuild/protobuf/wkt";
import { type Client, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { Redis } from "ioredis";
import { encodeValue } from "unified-session-bridge/values";
import { serveRequests } from "../support/child-processes.ts";
import {
  BatchGetVariablesRequestSchema,
  BridgeService,
  GetVariableRequestSchema,
  PingRequestSchema,
  SetVariableRequestSchema,
} from "../support/internals.ts";
import { createRawConnect, createRawGrpc, type RawRpc } from "../support/raw-rpc.ts";
import { percentile } from "../support/stats.ts";

/** What one call does. */
export type CallOp = "echo" | "get" | "set" | "get-many" | "redis-get" | "redis-set";

/**
 * The RPC protocols measured: gRPC over h2c, and Connect with binary
 * messages over HTTP/1.1 (Connect's JSON cannot carry variable values: the
 * Any type URLs are not in a JSON type registry).
 */
export type RpcProtocol = "grpc" | "connect";

/**
 * Which client issues RPCs: connect-node's (what an application uses), or
 * the lean one of `support/raw-rpc.ts` (to load the server, not the client).
 */
export type RpcClientKind = "connect-node" | "raw";

/** One measurement. */
export interface LoadRun {
  readonly type: "run";
  readonly op: CallOp;
  /** Base URL for RPC ops. */
  readonly url?: string;
  readonly protocol?: RpcProtocol;
  /** Default connect-node. */
  readonly client?: RpcClientKind;
  /** Port of the Redis server for redis ops. */
  readonly redisPort?: number;
  readonly sessionId?: string;
  /** The variable (get/set), the variables (get-many), or the Redis key. */
  readonly identifiers: readonly string[];
  readonly concurrency: number;
  /** Calls before the window opens (JIT, connection set-up). */
  readonly warmupMs: number;
  readonly durationMs: number;
}

/** What a run measured. */
export interface LoadReport {
  /** Calls completed inside the measuring window. */
  readonly calls: number;
  /** Length of the window in seconds. */
  readonly seconds: number;
  /** Calls completed from start to drain (for server CPU per call). */
  readonly totalCalls: number;
  readonly errors: number;
  readonly firstError?: string;
  /** Call latency inside the window, microseconds. */
  readonly p50Micros: number;
  readonly p99Micros: number;
  /** This process's CPU time ÷ wall time over the run (1 = one core busy). */
  readonly cpuShare: number;
}

const transports = new Map<string, Transport>();
const redisClients = new Map<number, Redis>();
const rawClients = new Map<string, RawRpc>();

function rawClient(url: string, protocol: RpcProtocol): RawRpc {
  const key = `${protocol} ${url}`;
  let client = rawClients.get(key);
  if (client === undefined) {
    client = protocol === "grpc" ? createRawGrpc(url) : createRawConnect(url, 256);
    rawClients.set(key, client);
  }
  return client;
}

function rpcClient(url: string, protocol: RpcProtocol): Client<typeof BridgeService> {
  const key = `${protocol} ${url}`;
  let transport = transports.get(key);
  if (transport === undefined) {
    transport =
      protocol === "grpc"
        ? createGrpcTransport({ baseUrl: url })
        : createConnectTransport({ baseUrl: url, httpVersion: "1.1" });
    transports.set(key, transport);
  }
  return createClient(BridgeService, transport);
}

function redisClient(port: number): Redis {
  let client = redisClients.get(port);
  if (client === undefined) {
    client = new Redis({ host: "127.0.0.1", port, lazyConnect: false, maxRetriesPerRequest: 1 });
    redisClients.set(port, client);
  }
  return client;
}

// Two values within the bench variables' constraints, so every write is a
// real write (a new version), never a validation failure.
const setValues: readonly Any[] = [encodeValue("float", 0.5).any, encodeValue("float", 1.5).any];
const redisValues = ["0.5", "1.5"];

function makeCall(req: LoadRun): () => Promise<unknown> {
  const [first = ""] = req.identifiers;
  if (req.op === "redis-get" || req.op === "redis-set") {
    if (req.redisPort === undefined) throw new Error("redisPort is required for redis ops");
    const redis = redisClient(req.redisPort);
    if (req.op === "redis-get") return () => redis.get(first);
    let n = 0;
    return () => redis.set(first, redisValues[n++ & 1] as string);
  }
  if (req.url === undefined || req.protocol === undefined)
    throw new Error("url and protocol are required");
  const sessionId = req.sessionId ?? "";
  if (req.client === "raw") return makeRawCall(rawClient(req.url, req.protocol), req, sessionId);
  const client = rpcClient(req.url, req.protocol);
  switch (req.op) {
    case "echo":
      return () => client.ping({ message: first });
    case "get":
      return () => client.getVariable({ sessionId, variableIdentifier: first });
    case "set": {
      let n = 0;
      return () =>
        client.setVariable({
          sessionId,
          variableIdentifier: first,
          value: setValues[n++ & 1] as Any,
        });
    }
    case "get-many": {
      const variableIdentifiers = [...req.identifiers];
      return async () => {
        const res = await client.getVariables({ sessionId, variableIdentifiers });
        if (res.missingVariables.length > 0)
          throw new Error(`missing: ${res.missingVariables.join(",")}`);
        return res;
      };
    }
  }
}

function makeRawCall(rpc: RawRpc, req: LoadRun, sessionId: string): () => Promise<void> {
  const [first = ""] = req.identifiers;
  switch (req.op) {
    case "echo": {
      const body = toBinary(PingRequestSchema, create(PingRequestSchema, { message: first }));
      return () => rpc.unary("Ping", body);
    }
    case "get": {
      const body = toBinary(
        GetVariableRequestSchema,
        create(GetVariableRequestSchema, { sessionId, variableIdentifier: first }),
      );
      return () => rpc.unary("GetVariable", body);
    }
    case "set": {
      const bodies = setValues.map((value) =>
        toBinary(
          SetVariableRequestSchema,
          create(SetVariableRequestSchema, { sessionId, variableIdentifier: first, value }),
        ),
      );
      let n = 0;
      return () => rpc.unary("SetVariable", bodies[n++ & 1] as Uint8Array);
    }
    case "get-many": {
      const body = toBinary(
        BatchGetVariablesRequestSchema,
        create(BatchGetVariablesRequestSchema, {
          sessionId,
          variableIdentifiers: [...req.identifiers],
        }),
      );
      return () => rpc.unary("GetVariables", body);
    }
    default:
      throw new Error(`op ${req.op} has no raw RPC form`);
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function run(req: LoadRun): Promise<LoadReport> {
  const call = makeCall(req);
  // 0: warming up, 1: measuring, 2: draining.
  let phase = 0;
  let calls = 0;
  let totalCalls = 0;
  let errors = 0;
  let firstError: string | undefined;
  const latencies: number[] = [];

  const caller = async () => {
    while (phase !== 2) {
      const t0 = performance.now();
      try {
        await call();
      } catch (error) {
        errors++;
        firstError ??= String(error);
        // A broken setup should fail the run, not spin on errors.
        if (errors > 100) phase = 2;
        continue;
      }
      totalCalls++;
      if (phase === 1) {
        calls++;
        latencies.push(performance.now() - t0);
      }
    }
  };

  const cpuStart = process.cpuUsage();
  const wallStart = performance.now();
  const callers = Array.from({ length: req.concurrency }, caller);
  await sleep(req.warmupMs);
  phase = phase === 2 ? 2 : 1;
  const start = performance.now();
  await sleep(req.durationMs);
  const seconds = (performance.now() - start) / 1000;
  phase = 2;
  await Promise.all(callers);
  const cpu = process.cpuUsage(cpuStart);
  const cpuShare = (cpu.user + cpu.system) / 1000 / (performance.now() - wallStart);
  if (errors > 100) throw new Error(`${req.op}: more than 100 errors, first: ${firstError}`);
  return {
    calls,
    seconds,
    totalCalls,
    errors,
    ...(firstError === undefined ? {} : { firstError }),
    p50Micros: percentile(latencies, 50) * 1000,
    p99Micros: percentile(latencies, 99) * 1000,
    cpuShare,
  };
}

serveRequests(
  (body) => run(body as LoadRun),
  async () => {
    for (const raw of rawClients.values()) raw.close();
    await Promise.all([...redisClients.values()].map((r) => r.quit().catch(() => r.disconnect())));
  },
);
