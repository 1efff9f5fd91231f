import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { thrownBy } from "../../../test/support/errors.js";
import {
  correlationHeader,
  correlationIdIn,
  correlationIdOf,
  mintCorrelationId,
  traceCall,
  withCorrelationId,
} from "./correlation-id.js";

const call = (metadata: Record<string, string> = {}) => ({
  sessionId: "s",
  toolName: "t",
  parameters: {},
  metadata,
  binaryParameters: {},
});

describe("correlationIdOf", () => {
  it("takes metadata.correlation_id first, then the header, as v0.13's host does", () => {
    const headers = new Headers({ [correlationHeader]: "from-header" });
    expect(correlationIdOf(headers, { correlation_id: "from-metadata" })).toBe("from-metadata");
    expect(correlationIdOf(headers, {})).toBe("from-header");
  });

  it("mints a 32-hex-digit id when the call has none", () => {
    const a = correlationIdOf(undefined, {});
    const b = correlationIdOf(new Headers(), { correlation_id: "" });
    expect(a).toMatch(/^[0-9a-f]{32}$/);
    expect(b).toMatch(/^[0-9a-f]{32}$/);
    expect(a).not.toBe(b);
    expect(mintCorrelationId()).toMatch(/^[0-9a-f]{32}$/);
  });

  it.each(["has spaces", "line\nbreak", "x".repeat(129), "é"])(
    "refuses %j with INVALID_ARGUMENT",
    (id) => {
      const e = thrownBy(
        () => correlationIdOf(undefined, { correlation_id: id }),
        Code.InvalidArgument,
      );
      expect(e.rawMessage).toMatch(/must be 1 to 128 characters of A-Z, a-z, 0-9/);
    },
  );

  it("accepts uuids in both forms", () => {
    const dashed = crypto.randomUUID();
    expect(correlationIdOf(new Headers({ [correlationHeader]: dashed }), {})).toBe(dashed);
  });
});

describe("traceCall", () => {
  it("puts the id in the call's metadata and the response header, leaving the request as it was", () => {
    const original = call({ other: "1" });
    const responseHeader = new Headers();
    const traced = traceCall(original, {
      requestHeader: new Headers({ [correlationHeader]: "cid-7" }),
      responseHeader,
    });
    expect(traced.metadata).toEqual({ other: "1", correlation_id: "cid-7" });
    expect(original.metadata).toEqual({ other: "1" });
    expect(responseHeader.get(correlationHeader)).toBe("cid-7");
    expect(correlationIdIn(traced)).toBe("cid-7");
    expect(withCorrelationId(traced, "cid-7")).toBe(traced);
  });
});
