/**
 * Reply compression as an attacker uses it: a client that asks for brotli
 * (`grpc-accept-encoding: br`) must not make a reply cost many times what
 * gzip costs, work must stop once the caller is gone, and one client's
 * compressions must not hold up another's. CPU is measured from the real
 * `unified-bridge serve` process (/proc/<pid>/stat), side by side in one
 * run, so the assertions are ratios with margins for a shared machine.
 *
 * Before: connect-node's brotli at quality 11 made one 16 MiB reply cost
 * 23.5 s of CPU (gzip 0.44 s), and 8 requests followed by a dropped
 * connection cost 217 s of CPU after the client had gone.
 */
import http2 from "node:http2";
import { create, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { describe, expect, it } from "vitest";
import {
  BatchGetVariablesRequestSchema,
  BridgeService,
} from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { encodeValue } from "../../src/values/index.js";
import { cliSuite, publicOnly, type ServedCli } from "../support/cli.js";
import { cpuSeconds } from "../support/process-stats.js";
import { envelope } from "../support/raw-rpc.js";

const cli = cliSuite();
const KiB = 1024;

/**
 * Text that compresses as real values do: words of a vocabulary of 4,096,
 * picked by xorshift32, not one repeated byte or a short cycle.
 */
function prose(bytes: number, seed: number): string {
  let state = seed | 1;
  const random = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return state >>> 0;
  };
  const letters = "etaoinshrdlucmfwypvbgkqjxz";
  const vocabulary = Array.from({ length: 4096 }, () =>
    Array.from({ length: 3 + (random() % 7) }, () => letters[random() % 26]).join(""),
  );
  const out: string[] = [];
  let length = 0;
  while (length < bytes) {
    const word = `${vocabulary[random() % 4096]} `;
    out.push(word);
    length += word.length;
  }
  return out.join("").slice(0, bytes);
}

async function fillSession(served: ServedCli, n: number, bytes: number) {
  const c = createClient(BridgeService, createGrpcTransport({ baseUrl: served.url }));
  const { sessionId } = await c.initializeSession({});
  const names = Array.from({ length: n }, (_, i) => `v${i}`);
  for (const [i, name] of names.entries()) {
    const initialValue = encodeValue("string", prose(bytes, i + 1)).any;
    await c.registerVariable({ sessionId, name, type: "string", initialValue });
  }
  const body = envelope(
    toBinary(
      BatchGetVariablesRequestSchema,
      create(BatchGetVariablesRequestSchema, { sessionId, variableIdentifiers: names }),
    ),
  );
  return { body };
}

/**
 * Sends one GetVariables over gRPC on its own connection with `accept` as
 * grpc-accept-encoding; resolves with the reply's bytes and how the reply
 * was encoded. With `dropAfterMs`, destroys the connection then instead.
 */
function getAll(
  url: string,
  body: Uint8Array,
  accept: string,
  dropAfterMs?: number,
  client = "10.0.0.1",
): Promise<{ bytes: number; encoding: string | undefined; ms: number }> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const session = http2.connect(url);
    session.on("error", () => {});
    const stream = session.request({
      ":method": "POST",
      ":path": "/snakepit.bridge.BridgeService/GetVariables",
      "content-type": "application/grpc",
      te: "trailers",
      "grpc-accept-encoding": accept,
      // The server trusts loopback as a proxy here, so each test client
      // can be a client of its own.
      "x-forwarded-for": client,
    });
    let bytes = 0;
    let encoding: string | undefined;
    stream.on("response", (h) => {
      encoding = h["grpc-encoding"] as string | undefined;
    });
    stream.on("data", (chunk: Buffer) => {
      bytes += chunk.length;
    });
    stream.on("error", () => {});
    stream.on("close", () => {
      session.destroy();
      if (dropAfterMs !== undefined || bytes > 0) {
        resolve({ bytes, encoding, ms: performance.now() - started });
      } else reject(new Error(`no reply (rst ${stream.rstCode})`));
    });
    stream.end(body);
    if (dropAfterMs !== undefined) setTimeout(() => session.destroy(), dropAfterMs);
  });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * The server for one test, trusting loopback as a proxy so each test
 * client can be a client of its own (x-forwarded-for).
 */
const serve = () => cli.serve([...publicOnly, "--trusted-proxy", "127.0.0.1"]);

describe("reply compression", () => {
  it("brotli costs about what gzip costs, not fifty times more", async () => {
    const served = await serve();
    // 4 MiB of values: a quarter of what one session may hold.
    const { body } = await fillSession(served, 4, 1000 * KiB);
    const costOf = async (accept: string) => {
      const before = cpuSeconds(served.pid);
      const reply = await getAll(served.url, body, accept);
      return { cpu: cpuSeconds(served.pid) - before, ...reply };
    };
    // Side by side, twice each, the smaller of two taken.
    const identity = [await costOf("identity"), await costOf("identity")];
    const gzip = [await costOf("gzip"), await costOf("gzip")];
    const br = [await costOf("br"), await costOf("br")];
    const least = (runs: { cpu: number }[]) => Math.min(...runs.map((r) => r.cpu));
    console.info(
      `GetVariables of 4 MiB: CPU identity ${least(identity).toFixed(2)} s, gzip ${least(gzip).toFixed(2)} s, br ${least(br).toFixed(2)} s; bytes gzip ${gzip[0]?.bytes}, br ${br[0]?.bytes}`,
    );
    expect(gzip[0]?.encoding).toBe("gzip");
    expect(br[0]?.encoding).toBe("br");
    // Compressed for real: much smaller than the 4 MiB it encodes.
    expect(br[0]?.bytes).toBeLessThan(2 * 1024 * KiB);
    // At quality 11 this was about 50× gzip's CPU.
    expect(least(br)).toBeLessThan(3 * least(gzip) + 0.3);
  }, 120_000);

  it("stops compressing for callers who are gone, and one client's compressions do not hold up another's", async () => {
    const served = await serve();
    // 15 MiB: a full session, just under the reply limit.
    const { body } = await fillSession(served, 15, 1000 * KiB);
    const small = await fillSession(served, 1, 200 * KiB);
    const victimAlone = await getAll(served.url, small.body, "gzip", undefined, "10.0.0.2");

    // 8 requests asking for brotli, their connections dropped at once.
    const before = cpuSeconds(served.pid);
    await Promise.all(Array.from({ length: 8 }, () => getAll(served.url, body, "br", 50)));
    // The victim's compressed reply, while whatever was started runs on.
    const victim = await getAll(served.url, small.body, "gzip", undefined, "10.0.0.2");
    // A measurement window: CPU spent in the 2 s after the drops (work
    // nobody waits for has no event to wait on).
    await sleep(2000);
    const spent = cpuSeconds(served.pid) - before;
    console.info(
      `8 dropped 15 MiB brotli requests: ${spent.toFixed(2)} s of CPU in the 2 s after; victim's gzip reply ${victimAlone.ms.toFixed(0)} ms alone, ${victim.ms.toFixed(0)} ms meanwhile`,
    );
    expect(victim.encoding).toBe("gzip");
    // Before: 217 s of CPU spent on replies nobody would read.
    expect(spent).toBeLessThan(5);
    expect(victim.ms).toBeLessThan(victimAlone.ms + 2000);
    // Still serving, nothing escaped to stderr.
    expect(served.child.exitCode).toBeNull();
    expect(served.stderr()).toBe("");
  }, 120_000);
});
