/**
 * Access per session and role on a real bridge: the owner token a new
 * session answers, what each role may do, MintToken's bounds, reopening,
 * tools' roles, workers, key rotation, both modes, and external identity.
 */
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { type Timestamp, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccessRole } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import { parseServerConfig } from "../../src/server/config/config.js";
import { decodeValue, encodeJsonAny, encodeValue } from "../../src/values/index.js";
import { accessDetail, bearer, newKey, seedVariables } from "../support/access.js";
import { bridgePerTest, type RunningBridge, startBridge } from "../support/bridge.js";
import { rejectionOf } from "../support/errors.js";

const int = (n: number) => encodeValue("integer", n).any;
const ms = (t: Timestamp | undefined) => (t === undefined ? Number.NaN : timestampMs(t));
const key = newKey();

/** Opens a session with `x` and `y`; resolves to its id and owner token. */
async function open(bridge: RunningBridge, token?: string) {
  const res = await bridge
    .client()
    .initializeSession({ initialVariables: seedVariables }, bearer(token));
  return { sessionId: res.sessionId, owner: res.accessToken, res };
}

async function mint(bridge: RunningBridge, sessionId: string, owner: string, role: AccessRole) {
  const res = await bridge.client().mintToken({ sessionId, role }, bearer(owner));
  return res.token;
}

describe("tokens mode", () => {
  let bridge: RunningBridge;
  beforeAll(async () => {
    bridge = await startBridge({ access: "tokens", tokenKeys: [key], tokenTtlSeconds: 3600 });
  });
  afterAll(() => bridge?.stop());

  it("answers the creator of a session an owner token; the session id alone opens nothing", async () => {
    const { sessionId, owner, res } = await open(bridge);
    expect(owner).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
    const expires = ms(res.accessTokenExpiresAt);
    expect(expires - Date.now()).toBeGreaterThan(3500_000);
    const c = bridge.client();
    const x = { sessionId, variableIdentifier: "x" };
    const noToken = await rejectionOf(c.getVariable(x), Code.Unauthenticated);
    expect(noToken.message).toMatch(/needs an access token/);
    expect(accessDetail(noToken)?.requiredRole).toBe(AccessRole.VIEWER);
    // Reopening by id alone is refused too, and says how to get in.
    const reopen = await rejectionOf(c.initializeSession({ sessionId }), Code.PermissionDenied);
    expect(reopen.message).toMatch(/needs an access token/);
    await rejectionOf(c.setVariable({ ...x, value: int(1) }), Code.Unauthenticated);
    // With the token everything works.
    await c.setVariable({ ...x, value: int(7) }, bearer(owner));
    const { variable } = await c.getVariable(x, bearer(owner));
    expect(decodeValue(variable?.value).value).toBe(7);
    // Reopening with the token works and answers no new token.
    const again = await c.initializeSession({ sessionId }, bearer(owner));
    expect([again.created, again.accessToken]).toEqual([false, ""]);
  });

  it("gives each role its rights and no more", async () => {
    const { sessionId, owner } = await open(bridge);
    const c = bridge.client();
    const [viewer, editor, tuner] = await Promise.all(
      [AccessRole.VIEWER, AccessRole.EDITOR, AccessRole.TUNER].map((r) =>
        mint(bridge, sessionId, owner, r),
      ),
    );
    const x = { sessionId, variableIdentifier: "x" };
    // Viewer: reads, lists, history, watch, the session.
    await c.getVariable(x, bearer(viewer));
    await c.listVariables({ sessionId }, bearer(viewer));
    await c.getVariableHistory(x, bearer(viewer));
    await c.getSession({ sessionId }, bearer(viewer));
    for await (const update of c.watchVariables(
      { sessionId, includeInitialValues: true },
      bearer(viewer),
    )) {
      expect(update.variable?.name).toBe("x");
      break;
    }
    const write = await rejectionOf(
      c.setVariable({ ...x, value: int(1) }, bearer(viewer)),
      Code.PermissionDenied,
    );
    expect(write.message).toBe(
      "[permission_denied] SetVariable needs the editor role in this session; the access token grants viewer",
    );
    expect(accessDetail(write)).toMatchObject({
      requiredRole: AccessRole.EDITOR,
      grantedRole: AccessRole.VIEWER,
      method: "SetVariable",
    });
    // Editor: writes, but no lock.
    await c.setVariable({ ...x, value: int(2) }, bearer(editor));
    await c.registerVariable(
      { sessionId, name: "z", type: "integer", initialValue: int(0) },
      bearer(editor),
    );
    await c.rollbackVariable({ ...x, targetVersion: 0 }, bearer(editor));
    const lock = await rejectionOf(
      c.startOptimization({ ...x, optimizerId: "o" }, bearer(editor)),
      Code.PermissionDenied,
    );
    expect(accessDetail(lock)?.requiredRole).toBe(AccessRole.TUNER);
    // Tuner: the lock, and writes as its holder.
    await c.startOptimization({ ...x, optimizerId: "o" }, bearer(tuner));
    const asHolder = { ...x, value: int(3), metadata: { optimizer_id: "o" } };
    expect(
      accessDetail(
        await rejectionOf(c.setVariable(asHolder, bearer(editor)), Code.PermissionDenied),
      )?.requiredRole,
    ).toBe(AccessRole.TUNER);
    await c.setVariable(asHolder, bearer(tuner));
    await c.stopOptimization({ ...x, optimizerId: "o" }, bearer(tuner));
    // Only the owner cleans up or mints.
    for (const token of [viewer, editor, tuner]) {
      await rejectionOf(c.cleanupSession({ sessionId }, bearer(token)), Code.PermissionDenied);
      await rejectionOf(
        c.mintToken({ sessionId, role: AccessRole.VIEWER }, bearer(token)),
        Code.PermissionDenied,
      );
    }
    const { variable } = await c.getVariable(x, bearer(viewer));
    expect(decodeValue(variable?.value).value).toBe(3);
    expect((await c.cleanupSession({ sessionId }, bearer(owner))).success).toBe(true);
  });

  it("calls tools by their role: a viewer calls a reading tool, not a writing one", async () => {
    const { sessionId, owner } = await open(bridge);
    const viewer = await mint(bridge, sessionId, owner, AccessRole.VIEWER);
    const c = bridge.client();
    const read = await c.executeTool(
      { sessionId, toolName: "conversation_history", parameters: {} },
      bearer(viewer),
    );
    expect(read.success).toBe(true);
    for (const toolName of ["conversation_append", "increment_variable", "no_such_tool"]) {
      const denied = await rejectionOf(
        c.executeTool(
          { sessionId, toolName, parameters: { name: encodeJsonAny("x") } },
          bearer(viewer),
        ),
        Code.PermissionDenied,
      );
      expect(accessDetail(denied)?.requiredRole).toBe(AccessRole.EDITOR);
    }
    const chunks = [];
    for await (const chunk of c.executeStreamingTool(
      { sessionId, toolName: "export_variables" },
      bearer(viewer),
    )) {
      chunks.push(chunk);
    }
    expect(chunks.at(-1)?.isFinal).toBe(true);
    const { variable } = await c.getVariable(
      { sessionId, variableIdentifier: "x" },
      bearer(viewer),
    );
    expect(variable?.version).toBe(0);
  });

  it("mints tokens no higher than the caller's role and no longer-lived than its token", async () => {
    const { sessionId, owner } = await open(bridge);
    const c = bridge.client();
    const short = await c.mintToken(
      { sessionId, role: AccessRole.OWNER, ttlSeconds: 120 },
      bearer(owner),
    );
    // An owner token that lives 120 s mints nothing that outlives it.
    const derived = await c.mintToken(
      { sessionId, role: AccessRole.VIEWER, ttlSeconds: 3000 },
      bearer(short.token),
    );
    expect(ms(derived.expiresAt)).toBeLessThanOrEqual(ms(short.expiresAt));
    const tooLong = await rejectionOf(
      c.mintToken({ sessionId, role: AccessRole.VIEWER, ttlSeconds: 7200 }, bearer(owner)),
      Code.InvalidArgument,
    );
    expect(tooLong.message).toMatch(/--token-ttl/);
    await rejectionOf(
      c.mintToken({ sessionId, role: AccessRole.UNSPECIFIED }, bearer(owner)),
      Code.InvalidArgument,
    );
  });

  it("opens nothing of session B with a token for session A, and tells nothing of B", async () => {
    const a = await open(bridge);
    const b = await open(bridge);
    const c = bridge.client();
    const toB = { sessionId: b.sessionId, variableIdentifier: "x" };
    const denied = await rejectionOf(c.getVariable(toB, bearer(a.owner)), Code.PermissionDenied);
    const unknown = await rejectionOf(
      c.getVariable({ ...toB, sessionId: "no-such-session-000000000000" }, bearer(a.owner)),
      Code.PermissionDenied,
    );
    // A live session and an unknown id are refused alike.
    expect(denied.message).toBe(unknown.message);
    await rejectionOf(c.initializeSession({ sessionId: b.sessionId }, bearer(a.owner)));
    await rejectionOf(c.cleanupSession({ sessionId: b.sessionId }, bearer(a.owner)));
    expect((await c.getSession({ sessionId: b.sessionId }, bearer(b.owner))).variableCount).toBe(2);
  });

  it("lets workers act for any session without a token", async () => {
    const { sessionId } = await open(bridge);
    const w = bridge.workerClient();
    await w.setVariable({ sessionId, variableIdentifier: "x", value: int(4) });
    const minted = await w.mintToken({ sessionId, role: AccessRole.EDITOR });
    expect(minted.role).toBe(AccessRole.EDITOR);
    await bridge
      .client()
      .setVariable({ sessionId, variableIdentifier: "x", value: int(5) }, bearer(minted.token));
  });

  it("refuses a token whose session ended to create it again", async () => {
    const { sessionId, owner } = await open(bridge);
    await bridge.client().cleanupSession({ sessionId }, bearer(owner));
    const again = await rejectionOf(
      bridge.client().initializeSession({ sessionId }, bearer(owner)),
      Code.PermissionDenied,
    );
    expect(again.message).toMatch(/has ended/);
  });
});

describe("key rotation", () => {
  const start = bridgePerTest();
  it("keeps tokens of an old key valid while it is listed, and refuses them once it is removed", async () => {
    const oldKey = newKey();
    const newer = newKey();
    const store = (await import("../../src/server/index.js")).createMemoryStore();
    const before = await start({ access: "tokens", tokenKeys: [oldKey], sessionStore: store });
    const { sessionId, owner } = await open(before);
    await before.stop();
    // Rotated: the new key signs, the old one still verifies.
    const rotated = await start({
      access: "tokens",
      tokenKeys: [newer, oldKey],
      sessionStore: store,
    });
    const x = { sessionId, variableIdentifier: "x" };
    await rotated.client().getVariable(x, bearer(owner));
    const fresh = await mint(rotated, sessionId, owner, AccessRole.VIEWER);
    await rotated.stop();
    // The old key removed: its tokens are refused, the new key's are not.
    const after = await start({ access: "tokens", tokenKeys: [newer], sessionStore: store });
    const refused = await rejectionOf(
      after.client().getVariable(x, bearer(owner)),
      Code.Unauthenticated,
    );
    expect(refused.message).toMatch(/key this bridge does not hold/);
    await after.client().getVariable(x, bearer(fresh));
    await store.close();
  });
});

describe("session-id mode", () => {
  const start = bridgePerTest();
  it("opens a session by its id alone, and holds a token's caller to the token's role", async () => {
    const bridge = await start({ access: "session-id", tokenKeys: [key] });
    const { sessionId, owner } = await open(bridge);
    // The id alone: every right, as always, and an owner token on reopening.
    const c = bridge.client();
    await c.setVariable({ sessionId, variableIdentifier: "x", value: int(1) });
    const reopened = await c.initializeSession({ sessionId });
    expect(reopened.accessToken).not.toBe("");
    const viewer = await mint(bridge, sessionId, owner, AccessRole.VIEWER);
    await c.getVariable({ sessionId, variableIdentifier: "x" }, bearer(viewer));
    await rejectionOf(
      c.setVariable({ sessionId, variableIdentifier: "x", value: int(2) }, bearer(viewer)),
      Code.PermissionDenied,
    );
    // A broken token is refused, not ignored.
    await rejectionOf(
      c.getVariable({ sessionId, variableIdentifier: "x" }, bearer(`${viewer}x`)),
      Code.Unauthenticated,
    );
  });

  it("answers no token unasked without configured keys, yet mints on request", async () => {
    // A random key of this process: its tokens would fail on any other
    // replica, where the session id alone works.
    const bridge = await start({ access: "session-id" });
    const { sessionId, owner } = await open(bridge);
    expect(owner).toBe("");
    const minted = await bridge.client().mintToken({ sessionId, role: AccessRole.VIEWER });
    await rejectionOf(
      bridge
        .client()
        .setVariable({ sessionId, variableIdentifier: "x", value: int(1) }, bearer(minted.token)),
      Code.PermissionDenied,
    );
  });
});

describe("external identity", () => {
  const start = bridgePerTest();
  let dir = "";
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "ub-identity-"));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it("records a JWT's subject as the session's owner, and refuses it to other subjects", async () => {
    const { publicKey, privateKey } = generateKeyPairSync("ed25519");
    const keyFile = path.join(dir, "idp.pem");
    await writeFile(keyFile, publicKey.export({ type: "spki", format: "pem" }));
    const bridge = await start({
      access: "tokens",
      tokenKeys: [key],
      jwtPublicKey: keyFile,
      jwtIssuer: "https://idp.example",
      jwtAudience: "bridge",
    });
    const jwt = (sub: string, iss = "https://idp.example") =>
      new SignJWT({})
        .setProtectedHeader({ alg: "EdDSA" })
        .setSubject(sub)
        .setIssuer(iss)
        .setAudience("bridge")
        .setExpirationTime("5m")
        .sign(privateKey);
    const c = bridge.client();
    // Creating a session needs an identity.
    await rejectionOf(c.initializeSession({}), Code.Unauthenticated);
    const ada = await c.initializeSession({}, bearer(await jwt("ada")));
    expect(ada.created).toBe(true);
    const { sessionId } = ada;
    const session = await c.getSession({ sessionId }, bearer(ada.accessToken));
    expect(session.metadata.owner_subject).toBe("ada");
    // Ada reopens it (and gets a fresh owner token); Bob may not.
    const back = await c.initializeSession({ sessionId }, bearer(await jwt("ada")));
    expect(back.accessToken).not.toBe("");
    const bob = await rejectionOf(
      c.initializeSession({ sessionId }, bearer(await jwt("bob"))),
      Code.PermissionDenied,
    );
    expect(bob.message).toMatch(/another identity/);
    // The identity token is not an access token, and a wrong issuer is no identity.
    await rejectionOf(
      c.getVariable({ sessionId, variableIdentifier: "x" }, bearer(await jwt("ada"))),
      Code.PermissionDenied,
    );
    await rejectionOf(
      c.initializeSession({}, bearer(await jwt("eve", "https://evil.example"))),
      Code.Unauthenticated,
    );
    // A session's owner cannot be claimed through metadata.
    await rejectionOf(
      c.initializeSession({ metadata: { owner_subject: "ada" } }, bearer(await jwt("eve"))),
      Code.InvalidArgument,
    );
    // Tool calls in the session are audited with the owner's subject.
    await c.executeTool(
      { sessionId, toolName: "conversation_history", parameters: {} },
      bearer(back.accessToken),
    );
    const audited = bridge.server.auditTrail({ sessionId, tool: "conversation_history" });
    expect(audited.at(-1)?.subject).toBe("ada");
  });
});

describe("access settings at start-up", () => {
  let dir = "";
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "ub-access-config-"));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));
  const parse = (argv: string[], env: Record<string, string> = {}) => {
    try {
      return parseServerConfig(argv, env);
    } catch (e) {
      return e as Error;
    }
  };

  it("refuses weak token keys, naming the setting and never the key", () => {
    for (const weak of ["a".repeat(44), "abcdefghijk1".repeat(4), "short"]) {
      const byFlag = parse(["--access", "tokens", "--token-key", weak]);
      expect(byFlag).toBeInstanceOf(Error);
      expect((byFlag as Error).message).toMatch(/^--token-key: .*openssl rand -base64 32/);
      expect((byFlag as Error).message).not.toContain(weak);
      const byEnv = parse([], { UB_ACCESS: "tokens", UB_TOKEN_KEY: weak });
      expect((byEnv as Error).message).toMatch(/^UB_TOKEN_KEY: /);
    }
  });

  it("needs a key for tokens mode, from the flag, the environment or a file", async () => {
    expect((parse(["--access", "tokens"]) as Error).message).toMatch(
      /--access is tokens, which needs a key .*--token-key/,
    );
    const second = newKey();
    const byEnv = parse([], { UB_ACCESS: "tokens", UB_TOKEN_KEY: `${key},${second}` });
    expect(byEnv).toMatchObject({ access: "tokens", tokenKeys: [key, second] });
    const file = path.join(dir, "keys");
    await writeFile(file, `# newest first\n${second}\n\n${key}\n`, { mode: 0o600 });
    expect(parse(["--access", "tokens", "--token-key-file", file])).toMatchObject({
      tokenKeys: [second, key],
    });
    expect((parse(["--token-key", key, "--token-key-file", file]) as Error).message).toMatch(
      /both set/,
    );
    await writeFile(file, "a".repeat(40));
    const weakFile = parse(["--token-key-file", file]) as Error;
    expect(weakFile.message).toMatch(/line 1: must not be easy to guess/);
    expect(weakFile.message).not.toContain("a".repeat(40));
  });

  it("refuses a worker token of a JWT's form, and identity settings without a key file", async () => {
    const jws = () => randomBytes(16).toString("base64url");
    expect((parse(["--worker-token", `${jws()}.${jws()}.${jws()}`]) as Error).message).toMatch(
      /--worker-token: must not have the form of a JWT/,
    );
    expect((parse(["--jwt-issuer", "https://idp"]) as Error).message).toMatch(
      /--jwt-issuer .*need --jwt-public-key/,
    );
    const bad = path.join(dir, "not-a-key.pem");
    await writeFile(bad, "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n");
    expect((parse(["--jwt-public-key", bad]) as Error).message).toMatch(
      /^--jwt-public-key: .*neither a PEM public key/,
    );
    const secret = path.join(dir, "secret.json");
    await writeFile(secret, JSON.stringify({ keys: [{ kty: "oct", k: "c2VjcmV0" }] }));
    expect((parse(["--jwt-public-key", secret]) as Error).message).toMatch(/public keys only/);
  });
});
