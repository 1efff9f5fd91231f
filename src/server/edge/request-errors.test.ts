import { gzipSync } from "node:zlib";
import { create, type DescMethod, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Protocol, protocols } from "../../../test/support/bridge.js";
import { startFront } from "../../../test/support/front.js";
import { envelope, type RawOutcome, rawCall } from "../../../test/support/raw-rpc.js";
import {
  BridgeService,
  SetVariableRequestSchema,
  SetVariableResponseSchema,
  VariableUpdateSchema,
  WatchVariablesRequestSchema,
} from "../../gen/snakepit/bridge/bridge_pb.js";
import { createMetrics, createMetricsInterceptor } from "../observability/metrics.js";
import type { HttpFront } from "./http-front.js";

// What the test service does is chosen by the request's session id.
const unserializable = "unserializable";
// An implementation can fail with the very error connect raises for an
// undecodable message, e.g. relaying a call to a peer whose reply was garbage.
const relayedParseFailure = "relayed parse failure";
const relayed = () => new ConnectError("parse binary: premature EOF", Code.Internal);

function routes(router: ConnectRouter) {
  router.service(BridgeService, {
    setVariable(req) {
      if (req.sessionId === relayedParseFailure) throw relayed();
      if (req.sessionId === unserializable) {
        return create(SetVariableResponseSchema, { newVersion: "x" as unknown as number });
      }
      return create(SetVariableResponseSchema, { success: true, newVersion: 1 });
    },
    async *watchVariables(req) {
      if (req.sessionId === relayedParseFailure) throw relayed();
      if (req.sessionId === unserializable) {
        yield create(VariableUpdateSchema, { timestamp: 5 as never });
      }
      yield create(VariableUpdateSchema, { variableId: "v", updateType: "sync" });
    },
  });
}

const metrics = createMetrics();
let front: HttpFront;
let url: string;
beforeAll(async () => {
  ({ front, url } = await startFront({
    routes,
    interceptors: [createMetricsInterceptor(metrics)],
    metrics,
  }));
});
afterAll(() => front.close({ graceMs: 100 }));

const { setVariable, watchVariables } = BridgeService.method;
const methods = [setVariable, watchVariables] as const;

/** `message` as the body of a request for `method` over `protocol`, with `flags` on its envelope. */
function bodyOf(protocol: Protocol, method: DescMethod, message: Uint8Array, flags = 0) {
  return protocol === "connect" && method.methodKind === "unary"
    ? message
    : envelope(message, flags);
}

function requestOf(method: DescMethod, sessionId: string): Uint8Array {
  return method === setVariable
    ? toBinary(SetVariableRequestSchema, create(SetVariableRequestSchema, { sessionId }))
    : toBinary(WatchVariablesRequestSchema, create(WatchVariablesRequestSchema, { sessionId }));
}

const outcome = ({ code, message }: RawOutcome) =>
  `${code === undefined ? "OK" : Code[code]}: ${message}`;

describe.each(protocols)("over %s", (protocol) => {
  describe.each(methods.map((m) => [m.name, m] as const))("%s", (_name, method) => {
    const call = (body: Uint8Array, headers?: Record<string, string>) =>
      rawCall(url, protocol, method, body, headers === undefined ? {} : { headers }).then(outcome);
    const type = method.input.typeName;

    it("a well-formed request succeeds", async () => {
      expect(await call(bodyOf(protocol, method, requestOf(method, "s")))).toBe("OK: ");
    });

    it("a truncated message is INVALID_ARGUMENT, naming the message type", async () => {
      const truncated = requestOf(method, "session").subarray(0, 4);
      expect(await call(bodyOf(protocol, method, truncated))).toBe(
        `InvalidArgument: request is not a valid ${type} message: premature EOF`,
      );
    });

    it("invalid UTF-8 in a string field is INVALID_ARGUMENT", async () => {
      // Field 1 (session_id), length-delimited, 2 bytes that are not UTF-8.
      const bytes = new Uint8Array([0x0a, 2, 0xff, 0xfe]);
      expect(await call(bodyOf(protocol, method, bytes))).toMatch(
        new RegExp(`^InvalidArgument: request is not a valid ${type} message: .*utf-8`),
      );
    });

    it("a gzip stream cut short is INVALID_ARGUMENT", async () => {
      const gzip = gzipSync(requestOf(method, "session"));
      const cut = gzip.subarray(0, gzip.length - 6);
      const unaryConnect = protocol === "connect" && method.methodKind === "unary";
      const header = unaryConnect
        ? "content-encoding"
        : protocol === "connect"
          ? "connect-content-encoding"
          : "grpc-encoding";
      expect(await call(bodyOf(protocol, method, cut, 1), { [header]: "gzip" })).toBe(
        "InvalidArgument: request could not be decompressed: unexpected end of file",
      );
    });

    // A Connect unary request is the bare message, without an envelope to flag.
    if (!(protocol === "connect" && method.methodKind === "unary")) {
      it("a message flagged as compressed, in a request naming no compression, is INVALID_ARGUMENT", async () => {
        expect(await call(bodyOf(protocol, method, requestOf(method, "s"), 1))).toBe(
          "InvalidArgument: request message is flagged as compressed, but the request names no compression (grpc-encoding or connect-content-encoding)",
        );
      });
    }

    it("a response that cannot be serialized stays INTERNAL", async () => {
      expect(await call(bodyOf(protocol, method, requestOf(method, unserializable)))).toMatch(
        /^Internal: serialize binary: /,
      );
    });

    it("a parse failure raised by the implementation stays INTERNAL", async () => {
      expect(await call(bodyOf(protocol, method, requestOf(method, relayedParseFailure)))).toBe(
        "Internal: parse binary: premature EOF",
      );
    });
  });
});

it("metrics count an undecodable streaming request with the code the client got", async () => {
  const label = (code: string) => `bridge_rpc_calls_total{rpc="WatchVariables",code="${code}"}`;
  const count = async (code: string) =>
    Number(
      (await metrics.render())
        .split("\n")
        .find((line) => line.startsWith(label(code)))
        ?.split(" ")[1] ?? 0,
    );
  const before = await count("invalid_argument");
  const truncated = envelope(requestOf(watchVariables, "session").subarray(0, 4));
  expect((await rawCall(url, "grpc", watchVariables, truncated)).code).toBe(Code.InvalidArgument);
  expect(await count("invalid_argument")).toBe(before + 1);
});
