/**
 * The reason a handler's signal carries when its call ends (see the module
 * comment of rpc-handler.ts), over every protocol, through a real front:
 * the shared `callEnded` for a call that succeeded, the call's own error
 * for one that failed, the deadline for one that ran out of time.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { protocols } from "../../test/support/bridge.js";
import { startFront } from "../../test/support/front.js";
import { envelope, rawCall } from "../../test/support/raw-rpc.js";
import { until } from "../../test/support/wait.js";
import {
  BridgeService,
  PingRequestSchema,
  PingResponseSchema,
} from "../gen/snakepit/bridge/bridge_pb.js";
import type { HttpFront } from "./http-front.js";
import { callEnded } from "./rpc-handler.js";

// The handler's signal of each call, by the ping's message.
const signals = new Map<string, AbortSignal>();
const failure = new ConnectError("the test handler failed", Code.FailedPrecondition);

function routes(router: ConnectRouter) {
  router.service(BridgeService, {
    async ping(req, context) {
      signals.set(req.message, context.signal);
      if (req.message.startsWith("fail")) throw failure;
      if (req.message.startsWith("slow")) {
        // As a handler that honours its signal: it gives up when the signal fires.
        await new Promise((resolve) => context.signal.addEventListener("abort", resolve));
        throw ConnectError.from(context.signal.reason);
      }
      return create(PingResponseSchema, { message: req.message });
    },
  });
}

let front: HttpFront;
let url: string;
beforeAll(async () => {
  ({ front, url } = await startFront({ routes }));
});
afterAll(() => front.close({ graceMs: 100 }));

const { ping } = BridgeService.method;

async function call(protocol: (typeof protocols)[number], message: string, timeout?: string) {
  const body = toBinary(PingRequestSchema, create(PingRequestSchema, { message }));
  const headers: Record<string, string> =
    timeout === undefined
      ? {}
      : protocol === "connect"
        ? { "connect-timeout-ms": timeout }
        : { "grpc-timeout": `${timeout}m` };
  const outcome = await rawCall(
    url,
    protocol,
    ping,
    protocol === "connect" ? body : envelope(body),
    {
      headers,
    },
  );
  const signal = signals.get(message);
  if (signal === undefined) throw new Error(`the handler never saw ${message}`);
  // The context is aborted as the call ends, at the latest when its stream closes.
  await until(() => signal.aborted, `the signal of ${message} to be aborted`);
  return { outcome, signal };
}

describe.each(protocols)("a handler's signal when its call ends, over %s", (protocol) => {
  it("carries the shared callEnded reason when the call succeeded, not a DOMException", async () => {
    const { outcome, signal } = await call(protocol, `ok ${protocol}`);
    expect(outcome.code).toBeUndefined();
    expect(signal.aborted).toBe(true);
    expect(signal.reason).toBe(callEnded);
    expect(callEnded.code).toBe(Code.Canceled);
    expect(Object.isFrozen(callEnded)).toBe(true);
  });

  it("carries the call's own error when the handler failed", async () => {
    const { outcome, signal } = await call(protocol, `fail ${protocol}`);
    expect(outcome.code).toBe(Code.FailedPrecondition);
    expect(signal.aborted).toBe(true);
    expect(signal.reason).toBe(failure);
  });

  it("carries DEADLINE_EXCEEDED when the call ran out of time", async () => {
    const { outcome, signal } = await call(protocol, `slow ${protocol}`, "50");
    expect(outcome.code).toBe(Code.DeadlineExceeded);
    expect(ConnectError.from(signal.reason).code).toBe(Code.DeadlineExceeded);
  });
});
