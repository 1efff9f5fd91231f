/**
 * Access against hostile callers, on a real bridge in tokens mode over a
 * real socket: expired, altered, foreign, malformed, missing and
 * other-session tokens on every RPC over every protocol (Connect, gRPC,
 * gRPC-Web, gRPC-Web text; WatchVariables over the first three takes the
 * directly served path), each refused with UNAUTHENTICATED or
 * PERMISSION_DENIED and a message, changing nothing; a viewer's attempts
 * beyond its role; guessing throttled per client; no token in the logs;
 * and a property test of random (role, RPC) pairs against the table.
 */
import { type DescMethod, toBinary } from "@bufbuild/protobuf";
import { Code, type ConnectError } from "@connectrpc/connect";
import { findTrailerError } from "@connectrpc/connect/protocol-grpc";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccessRole, BridgeService } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { fromWireRole } from "../../src/server/access/roles.js";
import { requiredRole, ruleOf } from "../../src/server/access/rpc-roles.js";
import { createLogger } from "../../src/server/index.js";
import { decodeValue } from "../../src/values/index.js";
import {
  accessDetail,
  bearer,
  codeName,
  forgedTokens,
  invoke,
  newKey,
  requestFor,
  seedVariables,
} from "../support/access.js";
import { type Protocol, protocols, type RunningBridge, startBridge } from "../support/bridge.js";
import { envelope } from "../support/raw-rpc.js";

const key = newKey();
const logLines: string[] = [];
let bridge: RunningBridge;

beforeAll(async () => {
  bridge = await startBridge({
    access: "tokens",
    tokenKeys: [key],
    // Calls name their client in x-forwarded-for, so wrong tokens are
    // counted per client as they would be behind Envoy.
    trustedProxies: ["127.0.0.1"],
    logger: createLogger({ level: "debug", sink: { write: (line) => logLines.push(line) } }),
  });
});
afterAll(() => bridge?.stop());

let clients = 0;
/** A client address no other call of this file uses. */
const freshClient = () => {
  clients++;
  return `10.${(clients >> 16) & 255}.${(clients >> 8) & 255}.${clients & 255}`;
};

/** A session with `x` and `y`, and its owner token. */
async function session(): Promise<{ sessionId: string; owner: string }> {
  const res = await bridge
    .client()
    .initializeSession({ initialVariables: seedVariables }, bearer(undefined, freshClient()));
  return { sessionId: res.sessionId, owner: res.accessToken };
}

const mint = async (sessionId: string, role: AccessRole) =>
  (await bridge.workerClient().mintToken({ sessionId, role })).token;

/** What a session holds, as a worker reads it: what no refused call may change. */
async function snapshot(sessionId: string): Promise<string> {
  const w = bridge.workerClient();
  const [session, list, tools] = await Promise.all([
    w.getSession({ sessionId }),
    w.listVariables({ sessionId }),
    w.getExposedElixirTools({ sessionId }),
  ]);
  return JSON.stringify({
    metadata: session.metadata,
    variables: list.variables.map((v) => [
      v.name,
      v.version,
      decodeValue(v.value).value,
      v.optimizationStatus?.optimizing ?? false,
    ]),
    tools: tools.tools.map((t) => t.name),
    conversation: (
      await w.executeTool({ sessionId, toolName: "conversation_history", parameters: {} })
    ).result?.value,
  });
}

type AnyProtocol = Protocol | "grpc-web-text";

/** The outcome of one call: its code name ("OK" for success), message and detail. */
interface Outcome {
  readonly code: string;
  readonly message: string;
  readonly detail: { method: string; requiredRole: AccessRole } | undefined;
}

async function call(
  protocol: AnyProtocol,
  method: DescMethod,
  message: unknown,
  token: string | undefined,
): Promise<Outcome> {
  const client = freshClient();
  if (protocol === "grpc-web-text") return textCall(method, message, token, client);
  const error = await invoke(bridge.transport(protocol), method, message, bearer(token, client));
  return {
    code: codeName(error),
    message: error?.rawMessage ?? "",
    detail: error === undefined ? undefined : accessDetail(error),
  };
}

/** A gRPC-Web text call, written and read by hand (base64 both ways). */
async function textCall(
  method: DescMethod,
  message: unknown,
  token: string | undefined,
  client: string,
): Promise<Outcome> {
  const body = Buffer.from(envelope(toBinary(method.input, message as never))).toString("base64");
  const res = await fetch(`${bridge.url}/${BridgeService.typeName}/${method.name}`, {
    method: "POST",
    headers: {
      "content-type": "application/grpc-web-text",
      "x-forwarded-for": client,
      ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
    },
    body,
    signal: AbortSignal.timeout(10_000),
  });
  const fields = new Map<string, string>();
  res.headers.forEach((value, name) => {
    fields.set(name, value);
  });
  // Replies come in padded base64 pieces: read until the trailer, or (a
  // stream that goes on, e.g. an allowed watch) until its first message.
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  let text = "";
  let done = false;
  let messages = 0;
  while (!done) {
    const chunk = await reader.read();
    if (chunk.done) break;
    text += new TextDecoder().decode(chunk.value);
    const bytes = Buffer.concat(
      (text.match(/[A-Za-z0-9+/]+={0,2}/g) ?? []).map((p) => Buffer.from(p, "base64")),
    );
    for (let at = 0; at + 5 <= bytes.length; ) {
      const length = bytes.readUInt32BE(at + 1);
      if (at + 5 + length > bytes.length) break;
      if (((bytes[at] ?? 0) & 0x80) !== 0) {
        for (const line of bytes.toString("utf8", at + 5, at + 5 + length).split("\r\n")) {
          const colon = line.indexOf(":");
          if (colon > 0) {
            fields.set(line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim());
          }
        }
        done = true;
      } else {
        messages++;
      }
      at += 5 + length;
    }
    if (messages > 0 && !done) {
      // Served: the call was allowed.
      await reader.cancel();
      return { code: "OK", message: "", detail: undefined };
    }
  }
  await reader.cancel().catch(() => undefined);
  // The status as connect's own gRPC code reads it, details included.
  const error = findTrailerError(new Headers([...fields]));
  if (error === undefined && fields.get("grpc-status") !== "0") {
    throw new Error(`no status in the reply (HTTP ${res.status})`);
  }
  return {
    code: codeName(error),
    message: error?.rawMessage ?? "",
    detail: error === undefined ? undefined : accessDetail(error),
  };
}

const allProtocols: readonly AnyProtocol[] = [...protocols, "grpc-web-text"];

/**
 * A bidirectional stream (StreamTelemetry) cannot travel over HTTP/1.1: the
 * Connect and gRPC-Web forms of it are UNIMPLEMENTED for every caller.
 */
const unservable = (protocol: string, method: DescMethod) =>
  method.methodKind === "bidi_streaming" && protocol !== "grpc";

/**
 * What a call that passed the access check gets: OK, except StreamTelemetry,
 * which the bridge does not serve (it reads it from workers).
 */
const servedCode = (method: DescMethod) =>
  method.name === "StreamTelemetry" ? "Unimplemented" : "OK";

describe("refused tokens", () => {
  it("are refused on every RPC over every protocol with a clear status, and change nothing", {
    timeout: 120_000,
  }, async () => {
    const target = await session();
    const other = await session();
    const viewer = await mint(target.sessionId, AccessRole.VIEWER);
    const forged = {
      ...(await forgedTokens(viewer, key)),
      oversized: `${"a".repeat(6000)}.${"b".repeat(2000)}.c`,
    };
    const before = await Promise.all([snapshot(target.sessionId), snapshot(other.sessionId)]);
    const failures: string[] = [];
    const expect1 = (label: string, outcome: Outcome, codes: readonly string[], method: string) => {
      if (!codes.includes(outcome.code)) {
        failures.push(`${label}: ${outcome.code} ${outcome.message}`);
      } else if (outcome.code !== "OK") {
        if (outcome.message === "" || /internal/i.test(outcome.message)) {
          failures.push(`${label}: unclear message "${outcome.message}"`);
        }
        // Every refusal of the access check names the method it refused.
        const refusedAccess =
          outcome.code === "PermissionDenied" || outcome.code === "Unauthenticated";
        if (refusedAccess && method !== "RegisterTools" && outcome.detail?.method !== method) {
          failures.push(`${label}: no AccessDenied detail`);
        }
      }
    };
    await Promise.all(
      allProtocols.map(async (protocol) => {
        for (const method of BridgeService.methods) {
          const rule = ruleOf(BridgeService.typeName, method.name);
          const message = requestFor(method, target.sessionId);
          const label = (what: string) => `${protocol} ${method.name} ${what}`;
          if (unservable(protocol, method)) {
            // Refused as UNIMPLEMENTED before any credential is read, to
            // everyone alike: nothing of any session is reached.
            for (const token of [...Object.values(forged), undefined, other.owner]) {
              const outcome = await call(protocol, method, message, token);
              if (outcome.code !== "Unimplemented")
                failures.push(`${label("any")}: ${outcome.code}`);
            }
            continue;
          }
          for (const [what, token] of Object.entries(forged)) {
            const outcome = await call(protocol, method, message, token);
            const codes =
              rule?.kind === "worker"
                ? ["Unauthenticated", "PermissionDenied"]
                : ["Unauthenticated"];
            expect1(label(what), outcome, codes, method.name);
          }
          const missing = await call(protocol, method, message, undefined);
          const missingCodes =
            rule?.kind === "open" || rule?.kind === "worker"
              ? ["PermissionDenied"]
              : ["Unauthenticated"];
          expect1(label("missing"), missing, missingCodes, method.name);
          // A valid token of another session: nothing of this one opens.
          const elsewhere = await call(protocol, method, message, other.owner);
          expect1(
            label("other session"),
            elsewhere,
            rule?.kind === "any" ? [servedCode(method)] : ["PermissionDenied"],
            method.name,
          );
        }
      }),
    );
    expect(failures).toEqual([]);
    expect(await Promise.all([snapshot(target.sessionId), snapshot(other.sessionId)])).toEqual(
      before,
    );
  });

  it("keep a viewer from writing, locking, calling an editor tool, cleaning up or minting", async () => {
    const { sessionId } = await session();
    const viewer = await mint(sessionId, AccessRole.VIEWER);
    const before = await snapshot(sessionId);
    const c = bridge.client();
    const as = bearer(viewer, freshClient());
    const attempts: [string, Promise<unknown>][] = [
      ["set", c.setVariable({ sessionId, variableIdentifier: "x", value: undefined }, as)],
      ["setMany", c.setVariables({ sessionId, updates: {} }, as)],
      ["delete", c.deleteVariable({ sessionId, variableIdentifier: "y" }, as)],
      ["lock", c.startOptimization({ sessionId, variableIdentifier: "x", optimizerId: "v" }, as)],
      ["unlock", c.stopOptimization({ sessionId, variableIdentifier: "x", force: true }, as)],
      [
        "editor tool",
        c.executeTool({ sessionId, toolName: "conversation_append", parameters: {} }, as),
      ],
      ["cleanup", c.cleanupSession({ sessionId, force: true }, as)],
      ["mint owner", c.mintToken({ sessionId, role: AccessRole.OWNER }, as)],
      ["mint viewer", c.mintToken({ sessionId, role: AccessRole.VIEWER }, as)],
    ];
    for (const [what, attempt] of attempts) {
      const error = await attempt.then(
        () => undefined,
        (e: unknown) => e as ConnectError,
      );
      expect(error?.code, what).toBe(Code.PermissionDenied);
    }
    expect(await snapshot(sessionId)).toBe(before);
  });
});

describe("guessing", () => {
  it("is throttled per client: after ten wrong tokens its tokens go unchecked for a while", async () => {
    const { sessionId, owner } = await session();
    const guesser = freshClient();
    const read = (token: string, client: string) =>
      invoke(
        bridge.transport("connect"),
        BridgeService.method.getVariable,
        { sessionId, variableIdentifier: "x" },
        bearer(token, client),
      );
    const forged = await forgedTokens(owner, key);
    const codes: string[] = [];
    for (let i = 0; i < 12; i++) {
      codes.push(
        codeName(await read(i % 2 === 0 ? (forged.tampered as string) : `${owner}x`, guesser)),
      );
    }
    expect(codes.slice(0, 10)).toEqual(new Array(10).fill("Unauthenticated"));
    expect(codes.slice(10)).toEqual(["ResourceExhausted", "ResourceExhausted"]);
    // Even its right token waits; another client's is served.
    const right = await read(owner, guesser);
    expect(right?.code).toBe(Code.ResourceExhausted);
    expect(right?.rawMessage).toMatch(/too many wrong tokens from this client/);
    expect(await read(owner, freshClient())).toBeUndefined();
  });
});

describe("the logs", () => {
  it("never hold a token or a key, whatever the calls", async () => {
    const { sessionId, owner } = await session();
    const viewer = await mint(sessionId, AccessRole.VIEWER);
    const forged = await forgedTokens(viewer, key);
    for (const method of BridgeService.methods) {
      for (const token of [owner, viewer, ...Object.values(forged)]) {
        await call("connect", method, requestFor(method, sessionId), token);
      }
    }
    expect(logLines.length).toBeGreaterThan(0);
    const secrets = [owner, viewer, ...Object.values(forged), key];
    // A token's signature is its secret part: no line holds one.
    const signatures = [owner, viewer].map((t) => t.split(".")[2] as string);
    const leaked = logLines.filter((line) =>
      [...secrets, ...signatures].some((s) => s.length > 16 && line.includes(s)),
    );
    expect(leaked).toEqual([]);
  });
});

describe("the role table, as the server applies it", () => {
  const toolRoles: Record<string, "viewer" | "editor"> = {
    conversation_history: "viewer",
    export_variables: "viewer",
    increment_variable: "editor",
  };
  const roleNames = ["viewer", "editor", "tuner", "owner"] as const;
  const wire = {
    viewer: AccessRole.VIEWER,
    editor: AccessRole.EDITOR,
    tuner: AccessRole.TUNER,
    owner: AccessRole.OWNER,
  };

  it("refuses exactly the calls of a role below the one the table asks (random role, RPC and form)", {
    timeout: 120_000,
  }, async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...roleNames),
        fc.constantFrom(...BridgeService.methods),
        fc.nat(1),
        fc.constantFrom(...allProtocols),
        async (role, method, variant, protocol) => {
          const { sessionId } = await session();
          const token = await mint(sessionId, wire[role]);
          const message = requestFor(method, sessionId, variant);
          const rule = ruleOf(BridgeService.typeName, method.name);
          const outcome = await call(protocol, method, message, token);
          if (unservable(protocol, method)) {
            expect(outcome.code).toBe("Unimplemented");
            return;
          }
          if (rule?.kind === "worker") {
            expect(outcome.code).toBe("PermissionDenied");
            return;
          }
          if (rule?.kind !== "session") {
            expect(outcome.code).toBe(servedCode(method));
            return;
          }
          const needed = requiredRole(rule, message, {
            toolRole: (_, name) => toolRoles[name] ?? "editor",
          });
          const allowed = roleNames.indexOf(role) >= roleNames.indexOf(needed);
          if (allowed) {
            // Allowed calls may still fail for other reasons (a lock, a
            // missing variable), never for access.
            expect(["PermissionDenied", "Unauthenticated"]).not.toContain(outcome.code);
          } else {
            expect(outcome.code).toBe("PermissionDenied");
            expect(fromWireRole(outcome.detail?.requiredRole ?? AccessRole.UNSPECIFIED)).toBe(
              needed,
            );
          }
        },
      ),
      { numRuns: 150 },
    );
  });
});
