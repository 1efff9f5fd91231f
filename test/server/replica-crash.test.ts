/**
 * A replica killed with SIGKILL in the middle of a write burst: two real
 * `unified-bridge serve` processes on one real Redis (append-only); every
 * write the dead replica acknowledged is read back from the survivor, whose
 * watch streams carry on.
 */
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { describe, expect, it } from "vitest";
import { BridgeService, type VariableUpdate } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { decodeValue, encodeValue } from "../../src/values/index.js";
import { cliSuite } from "../support/cli.js";
import { startRedis } from "../support/redis-server.js";
import { until } from "../support/wait.js";

const { serve } = cliSuite();
const grpc = (url: string) => createClient(BridgeService, createGrpcTransport({ baseUrl: url }));
const str = (s: string) => encodeValue("string", s).any;

describe("a replica killed during a write burst", () => {
  it("loses no acknowledged write, and the other replica keeps serving and watching", async () => {
    const redis = await startRedis({ appendonly: true });
    try {
      const args = ["--port", "0", "--worker-port", "0", "--admin-port", "0"];
      const store = ["--store", redis.url, "--store-key-prefix", "crash-test:"];
      const a = await serve([...args, ...store]);
      const b = await serve([...args, ...store]);
      const onA = grpc(a.url);
      const onB = grpc(b.url);
      const { sessionId } = await onA.initializeSession({});

      // A watch on the survivor, open through the crash.
      const abort = new AbortController();
      const watch = onB
        .watchVariables({ sessionId, syncMarker: true }, { signal: abort.signal })
        [Symbol.asyncIterator]();
      expect((await watch.next()).value?.updateType).toBe("sync");

      const acknowledged = new Map<string, string>();
      let stop = false;
      const writer = async (w: number) => {
        for (let k = 0; !stop; k++) {
          const name = `w${w}_${k}`;
          const value = `${name} written through replica a`;
          try {
            await onA.registerVariable(
              { sessionId, name, type: "string", initialValue: str(value) },
              { timeoutMs: 2000 },
            );
            acknowledged.set(name, value);
          } catch {
            return; // the replica is gone: this call may or may not have landed
          }
        }
      };
      const burst = Promise.all([0, 1, 2, 3].map(writer));
      // Killed in the middle of the burst, once some writes were acknowledged.
      await until(() => acknowledged.size > 10, "writes acknowledged before the crash");
      a.child.kill("SIGKILL");
      expect((await a.exited).signal).toBe("SIGKILL");
      stop = true;
      await burst;
      expect(acknowledged.size).toBeGreaterThan(10);

      const names = [...acknowledged.keys()];
      const read = await onB.getVariables({ sessionId, variableIdentifiers: names });
      expect(read.missingVariables).toEqual([]);
      for (const [name, value] of acknowledged) {
        expect(decodeValue(read.variables[name]?.value).value).toBe(value);
      }

      // The survivor's watch saw the burst and goes on with new writes.
      await onB.registerVariable({
        sessionId,
        name: "after",
        type: "string",
        initialValue: str("b"),
      });
      let sawAfter = false;
      const registered = new Set<string>();
      while (!sawAfter) {
        const update = (await watch.next()).value as VariableUpdate;
        if (update.updateType === "registered") registered.add(update.variable?.name ?? "");
        sawAfter = update.variable?.name === "after";
      }
      for (const name of names) expect(registered.has(name)).toBe(true);
      abort.abort();
      b.child.kill("SIGTERM");
      expect(await b.exited).toEqual({ code: 0, signal: null });
    } finally {
      await redis.stop();
    }
  }, 60_000);
});
