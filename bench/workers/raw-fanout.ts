/**
 * The platform limit of watch fan-out: WatchVariables answered straight on
 * node:http2, with no bridge, no connect-node and no watch hub. Each
 * "write" builds one VariableUpdate, encodes its gRPC frame once and writes
 * those bytes to every stream of the session in one loop. The writer's
 * clock reading travels in the value, as with the bridge.
 */
import http2 from "node:http2";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { encodeValue } from "unified-session-bridge/values";
import { serveRequests } from "../support/child-processes.ts";
import { VariableUpdateSchema, WatchVariablesRequestSchema } from "../support/internals.ts";
import { cpuReading, memoryReading } from "../support/process-readings.ts";

/** Requests this worker answers. */
export type RawFanoutRequest =
  | { readonly type: "start" }
  | {
      readonly type: "write";
      readonly sessionId: string;
      readonly variable: string;
      readonly version: number;
      /** The writer's clock (epoch ms). */
      readonly stamp: number;
    }
  | { readonly type: "cpu" }
  /** Collects garbage first when the process runs with --expose-gc. */
  | { readonly type: "memory" }
  | { readonly type: "stop" };

const bySession = new Map<string, Set<http2.ServerHttp2Stream>>();
let server: http2.Http2Server | undefined;

function frameOf(variable: string, version: number, stamp: number): Buffer {
  const payload = toBinary(
    VariableUpdateSchema,
    create(VariableUpdateSchema, {
      variableId: `var_${variable}`,
      variable: {
        id: `var_${variable}`,
        name: variable,
        type: "float",
        value: encodeValue("float", stamp).any,
        version,
      },
      updateSource: "client",
      updateType: version === 0 ? "initial_value" : "value_changed",
    }),
  );
  const frame = Buffer.allocUnsafe(5 + payload.length);
  frame[0] = 0;
  frame.writeUInt32BE(payload.length, 1);
  frame.set(payload, 5);
  return frame;
}

function onStream(stream: http2.ServerHttp2Stream): void {
  const chunks: Buffer[] = [];
  stream.on("data", (c: Buffer) => chunks.push(c));
  stream.on("error", () => undefined);
  stream.on("end", () => {
    const body = Buffer.concat(chunks);
    const req = fromBinary(WatchVariablesRequestSchema, body.subarray(5));
    let set = bySession.get(req.sessionId);
    if (set === undefined) {
      set = new Set();
      bySession.set(req.sessionId, set);
    }
    set.add(stream);
    stream.once("close", () => set.delete(stream));
    stream.respond({ ":status": 200, "content-type": "application/grpc" });
    stream.write(frameOf(req.variableIdentifiers[0] ?? "", 0, 0));
  });
}

serveRequests(
  async (raw) => {
    const req = raw as RawFanoutRequest;
    switch (req.type) {
      case "start": {
        const s = http2.createServer({ settings: { maxConcurrentStreams: 256 } });
        s.on("stream", onStream);
        server = s;
        await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
        const { port } = s.address() as { port: number };
        return `http://127.0.0.1:${port}`;
      }
      case "write": {
        const frame = frameOf(req.variable, req.version, req.stamp);
        for (const stream of bySession.get(req.sessionId) ?? []) stream.write(frame);
        return null;
      }
      case "cpu":
        return cpuReading();
      case "memory":
        return memoryReading();
      case "stop":
        server?.close();
        for (const set of bySession.values()) for (const s of set) s.destroy();
        return null;
    }
  },
  () => {
    server?.close();
  },
);
