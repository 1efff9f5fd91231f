import { create, fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter, createClient } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { protocols } from "../../../test/support/bridge.js";
import { startFront } from "../../../test/support/front.js";
import {
  BridgeService,
  PingRequestSchema,
  PingResponseSchema,
  VariableUpdateSchema,
} from "../../gen/snakepit/bridge/bridge_pb.js";
import { errorHygieneInterceptor } from "./error-hygiene.js";
import type { HttpFront } from "./http-front.js";

/** A real stack overflow, as unbounded recursion over deep input would cause. */
function overflow(): RangeError {
  const recurse = (n: number): number => recurse(n + 1) + 1;
  try {
    recurse(0);
  } catch (e) {
    if (e instanceof RangeError) return e;
  }
  throw new Error("the stack did not run out");
}

/** What the implementations throw, by the request's message (Ping) or session id (watch). */
const failures: Record<string, () => unknown> = {
  // What `ConnectError.from(e, code)` makes of it: the engine's text as the message.
  "wrapped overflow": () => ConnectError.from(overflow(), Code.InvalidArgument),
  "overflow as cause": () =>
    new ConnectError("decoding failed", Code.InvalidArgument, undefined, undefined, overflow()),
  "bare overflow": () => overflow(),
  // protobuf-es reports a truncated message as RangeError("premature EOF"): not ours to hide.
  "other RangeError": () => {
    try {
      fromBinary(PingRequestSchema, new Uint8Array([0x0a, 5]));
    } catch (e) {
      return ConnectError.from(e, Code.InvalidArgument);
    }
    throw new Error("the message parsed");
  },
};

function routes(router: ConnectRouter) {
  router.service(BridgeService, {
    ping(req) {
      const fail = failures[req.message];
      if (fail !== undefined) throw fail();
      return create(PingResponseSchema, { message: req.message });
    },
    async *watchVariables(req) {
      yield create(VariableUpdateSchema, { variableId: "v", updateType: "sync" });
      const fail = failures[req.sessionId];
      if (fail !== undefined) throw fail();
    },
  });
}

let front: HttpFront;
let url: string;
beforeAll(async () => {
  ({ front, url } = await startFront({ routes, interceptors: [errorHygieneInterceptor] }));
});
afterAll(() => front.close({ graceMs: 100 }));

const expected: Record<string, string> = {
  "wrapped overflow": "Internal: internal error",
  "overflow as cause": "Internal: internal error",
  "bare overflow": "Internal: internal error",
  "other RangeError": "InvalidArgument: premature EOF",
};

describe.each(protocols)(
  "over %s, a stack overflow never reaches the client as such",
  (protocol) => {
    const client = () => {
      const options = { baseUrl: url, httpVersion: "1.1" as const };
      const transport =
        protocol === "grpc"
          ? createGrpcTransport({ baseUrl: url })
          : protocol === "grpc-web"
            ? createGrpcWebTransport(options)
            : createConnectTransport(options);
      return createClient(BridgeService, transport);
    };
    const outcome = (call: Promise<unknown>) =>
      call.then(
        () => "OK",
        (e: unknown) => {
          const error = ConnectError.from(e);
          return `${Code[error.code]}: ${error.rawMessage}`;
        },
      );

    it.each(Object.keys(expected))("unary, %s", async (failure) => {
      expect(await outcome(client().ping({ message: failure }))).toBe(expected[failure]);
    });

    it.each(Object.keys(expected))("streaming, %s", async (failure) => {
      const updates: string[] = [];
      const watched = (async () => {
        for await (const u of client().watchVariables({ sessionId: failure })) {
          updates.push(u.updateType);
        }
      })();
      expect(await outcome(watched)).toBe(expected[failure]);
      expect(updates).toEqual(["sync"]);
    });
  },
);
