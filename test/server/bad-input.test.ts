/**
 * Property tests: arbitrary requests to the session, variable and tool RPCs
 * never crash the server and always end in success or a ConnectError with one
 * of the codes the protocol documents (never INTERNAL or UNKNOWN) and a
 * message without internal text (engine errors, connect's own wording, stack
 * frames), and a call that fails leaves the session exactly as it was
 * (variables, versions, history, metadata). Raw request bytes (garbage,
 * truncated or malformed messages, broken envelopes and compression) get the
 * same guarantees on every protocol.
 *
 * Every run starts from the same fixture session state (see fixtureFor), so
 * a run does not depend on the ones before it and fast-check can shrink a
 * failure to a small request.
 *
 * (Over 400 lines: the arbitraries for every request shape and the shared
 * fixture they start from belong together.)
 */
import { gzipSync } from "node:zlib";
import {
  create,
  type DescMessage,
  type DescMethod,
  ScalarType,
  toBinary,
} from "@bufbuild/protobuf";
import { type Any, AnySchema } from "@bufbuild/protobuf/wkt";
import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BridgeService, type ToolChunk } from "../../src/gen/snakepit/bridge/bridge_pb.js";
import {
  decodeJsonAny,
  encodeJsonAny,
  encodeValue,
  type JsonValue,
  STRING_VALUE_TYPE_URL,
  TYPE_URL_PREFIX,
  VARIABLE_TYPES,
  type VariableType,
} from "../../src/values/index.js";
import { type Protocol, protocols, type RunningBridge, startBridge } from "../support/bridge.js";
import { envelope, type RawOutcome, rawCall } from "../support/raw-rpc.js";

type BridgeClient = Client<typeof BridgeService>;

/** The codes the protocol documents for a call that fails. */
const documentedCodes = new Set<Code>([
  Code.InvalidArgument,
  Code.NotFound,
  Code.AlreadyExists,
  Code.Aborted,
  Code.FailedPrecondition,
  Code.ResourceExhausted,
  Code.PermissionDenied,
]);

const NUM_RUNS = 200;
// Small limits, so that random requests reach the RESOURCE_EXHAUSTED paths.
// The request size limit stays at its default, far above any request made
// here: refusing an oversized request is the transport's business (see
// http.test.ts), not what these properties are about.
const limits = {
  maxValueBytes: 2048,
  maxMetadataEntries: 8,
  maxMetadataBytes: 256,
  maxVariablesPerSession: 16,
  historyLimit: 20,
};

let bridge: RunningBridge;
/** A separate server for RegisterTools: random global tools must not leak into the others. */
let toolBridge: RunningBridge;

beforeAll(async () => {
  [bridge, toolBridge] = await Promise.all([startBridge(limits), startBridge(limits)]);
});
afterAll(async () => {
  await Promise.all([bridge?.stop(), toolBridge?.stop()]);
});

/**
 * A client with a deadline on every call, so that a call the server never
 * answers fails the property (DEADLINE_EXCEEDED) instead of hanging the suite.
 */
function clientOf(server: RunningBridge, protocol: Protocol): BridgeClient {
  const options = { baseUrl: server.url, defaultTimeoutMs: 5000 };
  const transport =
    protocol === "grpc"
      ? createGrpcTransport(options)
      : protocol === "grpc-web"
        ? createGrpcWebTransport({ ...options, httpVersion: "1.1" })
        : createConnectTransport({ ...options, httpVersion: "1.1" });
  return createClient(BridgeService, transport);
}
const clients = new Map<string, BridgeClient>();
function cachedClient(server: RunningBridge, protocol: Protocol): BridgeClient {
  const key = `${server.url} ${protocol}`;
  let c = clients.get(key);
  if (c === undefined) {
    c = clientOf(server, protocol);
    clients.set(key, c);
  }
  return c;
}
const client = (protocol: Protocol) => cachedClient(bridge, protocol);
/**
 * The client for fixtures and snapshots, on a connection of its own so that
 * whatever a random request does to its connection cannot be blamed on a
 * snapshot; gRPC multiplexes the parallel history reads.
 */
let adminClient: BridgeClient | undefined;
const admin = () => {
  adminClient ??= clientOf(bridge, "grpc");
  return adminClient;
};

/**
 * Text that only a defect of the server puts into a message a client sees:
 * engine errors, connect's own wording for decoding failures, stack frames.
 */
const internalText =
  /Maximum call stack|parse binary|serialize binary|\b(?:Type|Range|Reference|Syntax)Error\b|Cannot read properties|undefined is not| {4}at |\(\S+:\d+:\d+\)/;

/** Fails when `message`, which a client receives, contains {@link internalText}. */
function expectNoInternalText(message: string | undefined): void {
  expect(message ?? "").not.toMatch(internalText);
}

type Settled<T> = { ok: true; value: T } | { ok: false; error: ConnectError };

/**
 * Awaits a call; fails the property on any outcome but success or a
 * documented code, and on a message with internal text.
 */
async function settle<T>(call: Promise<T>): Promise<Settled<T>> {
  try {
    return { ok: true, value: await call };
  } catch (e) {
    if (!(e instanceof ConnectError)) throw e;
    if (!documentedCodes.has(e.code)) {
      throw new Error(`the call failed with ${Code[e.code]}: ${e.rawMessage}`, { cause: e });
    }
    expectNoInternalText(e.rawMessage);
    return { ok: false, error: e };
  }
}

// ---------------------------------------------------------------- fixture

const FIXTURE_SESSION = "<fixture session>";

interface Fixture {
  readonly sessionId: string;
  /** Variable ids by name. */
  readonly ids: Readonly<Record<string, string>>;
}

const fixtureDeclarations: {
  name: string;
  type: VariableType;
  value: unknown;
  constraints: object;
}[] = [
  { name: "f", type: "float", value: 1.5, constraints: { min: 0, max: 10 } },
  { name: "i", type: "integer", value: 0, constraints: { min: -100, max: 100 } },
  { name: "s", type: "string", value: "abc", constraints: { max_length: 20, pattern: "^[a-z]*$" } },
  { name: "b", type: "boolean", value: true, constraints: {} },
  { name: "ch", type: "choice", value: "a", constraints: { choices: ["a", "b"] } },
  { name: "m", type: "module", value: "ChainOfThought", constraints: {} },
  { name: "e", type: "embedding", value: [0.5, 0.25, 1], constraints: { dimensions: 3 } },
  { name: "t", type: "tensor", value: { shape: [2], data: [1, 2] }, constraints: { shape: [2] } },
];
const fixtureNames = fixtureDeclarations.map((d) => d.name);

/**
 * A session with one variable of every type, the module variable `m` under
 * an optimization lock held by "opt-A", a dependency f -> i, and i at
 * version 1 (so its history has two entries to roll back to).
 */
async function createFixture(allowedTools: string[] = []): Promise<Fixture> {
  const c = admin();
  const res = await c.initializeSession({
    allowedTools,
    metadata: { purpose: "fixture" },
    initialVariables: fixtureDeclarations.map((d) => {
      const { any, binary } = encodeValue(d.type, d.value as never);
      return {
        name: d.name,
        type: d.type,
        initialValue: any,
        initialBinaryValue: binary ?? new Uint8Array(0),
        constraintsJson: JSON.stringify(d.constraints),
      };
    }),
  });
  const { sessionId } = res;
  await Promise.all([
    c.startOptimization({ sessionId, variableIdentifier: "m", optimizerId: "opt-A" }),
    c.addDependency({ sessionId, fromVariable: "f", toVariable: "i" }),
    c.setVariable({ sessionId, variableIdentifier: "i", value: encodeValue("integer", 1).any }),
  ]);
  const ids = Object.fromEntries(Object.values(res.initialVariables).map((v) => [v.name, v.id]));
  return { sessionId, ids };
}

async function dropFixture(fixture: Fixture): Promise<void> {
  await admin().cleanupSession({ sessionId: fixture.sessionId, force: true });
}

/**
 * Everything a client can observe about a session's state: its metadata,
 * every variable as listed (value, version, metadata, lock, timestamps),
 * every variable's full history and, for the tool properties, the
 * conversation the built-in tools keep in session data. Not the expiry,
 * which every call refreshes.
 */
async function snapshot(sessionId: string, withConversation = false) {
  const c = admin();
  const [session, list, conversation] = await Promise.all([
    c.getSession({ sessionId }),
    c.listVariables({ sessionId }),
    withConversation
      ? c.executeTool({ sessionId, toolName: "conversation_history" })
      : Promise.resolve(undefined),
  ]);
  const histories = await Promise.all(
    list.variables.map(async (v) => ({
      id: v.id,
      entries: (await c.getVariableHistory({ sessionId, variableIdentifier: v.id })).entries,
    })),
  );
  expect(conversation?.errorMessage ?? "").toBe("");
  return canonical({
    metadata: session.metadata,
    variableCount: session.variableCount,
    variables: list.variables,
    histories,
    conversation: conversation === undefined ? undefined : decodeJsonAny(conversation.result),
  });
}

/**
 * Bytes as plain arrays: decoded messages hold either Uint8Arrays or Node
 * Buffers depending on how the response arrived, and the two never compare
 * equal.
 */
function canonical<T>(value: T): T {
  if (value instanceof Uint8Array) return Array.from(value) as T;
  if (Array.isArray(value)) return value.map(canonical) as T;
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, canonical(v)])) as T;
  }
  return value;
}
type Snapshot = Awaited<ReturnType<typeof snapshot>>;

/**
 * The fixture of one property. A run that shows the fixture unchanged (its
 * snapshot equal to the one taken when it was created) hands it on to the
 * next run; any other run (a call that succeeded, a failed assertion)
 * replaces it. So every run starts from the same state, which keeps
 * shrinking deterministic, without paying for a new session per run.
 */
function fixtureFor(allowedTools: string[] = [], withConversation = false) {
  let current: { fixture: Fixture; pristine: Snapshot } | undefined;
  return {
    async run(
      body: (
        fixture: Fixture,
        pristine: Snapshot,
        expectUnchanged: () => Promise<void>,
      ) => Promise<void>,
    ): Promise<void> {
      if (current === undefined) {
        const fixture = await createFixture(allowedTools);
        current = { fixture, pristine: await snapshot(fixture.sessionId, withConversation) };
      }
      const { fixture, pristine } = current;
      let unchanged = false;
      try {
        await body(fixture, pristine, async () => {
          expect(await snapshot(fixture.sessionId, withConversation)).toEqual(pristine);
          unchanged = true;
        });
      } finally {
        if (!unchanged) {
          current = undefined;
          await dropFixture(fixture);
        }
      }
    },
    async close(): Promise<void> {
      if (current !== undefined) await dropFixture(current.fixture);
      current = undefined;
    },
  };
}

// ----------------------------------------------------------- arbitraries

const utf8 = new TextEncoder();

/** Strings a careless or hostile peer might send: empty, unicode, control characters, huge. */
const weirdString: fc.Arbitrary<string> = fc.oneof(
  { weight: 4, arbitrary: fc.string({ maxLength: 12 }) },
  { weight: 3, arbitrary: fc.string({ unit: "binary", maxLength: 40 }) },
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      "",
      " ",
      "*",
      "?",
      "\u0000",
      "var:",
      "var:1:f",
      "var:999:f",
      "var:1:",
      "F",
      "f ",
      "__proto__",
      "constructor",
      "toString",
      "../../etc/passwd",
      "%s%n%x",
      "😀",
      "a\u0301",
      "\uFEFF",
      "\u202Eevil",
    ),
  },
  {
    weight: 1,
    arbitrary: fc
      .tuple(fc.integer({ min: 129, max: 40_000 }), fc.constantFrom("a", "é", "😀", ":", "*"))
      .map(([n, ch]) => ch.repeat(n)),
  },
);

/** A variable identifier: a fixture variable by name or by id, or anything. */
type Ident = string | { readonly idOf: string };
const identArb: fc.Arbitrary<Ident> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...fixtureNames) },
  { weight: 2, arbitrary: fc.constantFrom(...fixtureNames).map((name) => ({ idOf: name })) },
  { weight: 2, arbitrary: weirdString },
);
const resolve = (ident: Ident, fixture: Fixture): string =>
  typeof ident === "string" ? ident : (fixture.ids[ident.idOf] ?? "");

/** A session id: usually the fixture's, sometimes anything. */
const sessionArb = fc.oneof(
  { weight: 4, arbitrary: fc.constant(FIXTURE_SESSION) },
  { weight: 1, arbitrary: weirdString },
);
const session = (s: string, fixture: Fixture) => (s === FIXTURE_SESSION ? fixture.sessionId : s);

const typeNameArb = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...VARIABLE_TYPES) },
  { weight: 1, arbitrary: fc.constantFrom("Float", "int", "str", "bool", "list", "float ", "") },
  { weight: 1, arbitrary: weirdString },
);

const typeUrlArb = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...VARIABLE_TYPES).map((t) => TYPE_URL_PREFIX + t) },
  {
    weight: 2,
    arbitrary: fc.constantFrom(...VARIABLE_TYPES).map((t) => `${TYPE_URL_PREFIX}${t}.binary`),
  },
  { weight: 1, arbitrary: fc.constant(STRING_VALUE_TYPE_URL) },
  { weight: 1, arbitrary: weirdString.map((s) => TYPE_URL_PREFIX + s) },
  { weight: 1, arbitrary: weirdString },
);

const jsonText = (v: unknown) => utf8.encode(JSON.stringify(v) ?? "null");

/**
 * JSON text nesting arrays or objects around the limit (64 levels) or far
 * beyond what a recursive walk survives, what a hostile peer sends to
 * exhaust the server's stack, with the depth it nests to.
 */
const nestedJsonArb: fc.Arbitrary<{ text: string; depth: number }> = fc
  .tuple(
    fc.oneof(fc.integer({ min: 30, max: 70 }), fc.integer({ min: 2_000, max: 100_000 })),
    fc.constantFrom(
      { open: "[", close: "]", levels: 1 },
      { open: '{"a":', close: "}", levels: 1 },
      { open: '{"shape":[1],"data":[', close: "]}", levels: 2 },
    ),
    fc.constantFrom(
      { inner: "1", levels: 0 },
      { inner: '"NaN"', levels: 0 },
      { inner: "[]", levels: 1 },
    ),
  )
  .map(([n, { open, close, levels }, { inner, levels: innerLevels }]) => ({
    text: `${open.repeat(n)}${inner}${close.repeat(n)}`,
    depth: n * levels + innerLevels,
  }));
const deepJsonArb: fc.Arbitrary<string> = nestedJsonArb.map(({ text }) => text);

/** A tensor shape around the dimension limit (32) or far beyond it. */
const manyDimensionsArb: fc.Arbitrary<number[]> = fc
  .oneof(fc.integer({ min: 30, max: 34 }), fc.integer({ min: 1_000, max: 100_000 }))
  .map((n) => new Array<number>(n).fill(1));

const valueBytesArb: fc.Arbitrary<Uint8Array> = fc.oneof(
  { weight: 3, arbitrary: fc.jsonValue({ maxDepth: 3 }).map(jsonText) },
  { weight: 2, arbitrary: fc.uint8Array({ maxLength: 64 }) },
  {
    weight: 2,
    arbitrary: fc
      .constantFrom(
        '"NaN"',
        '"Infinity"',
        '"-Infinity"',
        "-0",
        "1e309",
        "9007199254740993",
        '{"shape":[2],"data":[1,2]}',
        '{"shape":[2,2],"data":[1,2,3]}',
        '{"shape":[-1],"data":[]}',
        '{"format":"f32le","dtype":"float32","shape":[3]}',
        '{"format":"f32le","dtype":"float32","shape":[2]}',
        '{"format":"f32le","dtype":"float64","shape":[3]}',
        "[0.5,0.25,1]",
        "[1,2]",
        '"abc"',
        '"ABC"',
        "true",
        "",
        "  ",
        "{",
        "\uFEFF1",
      )
      .map((s) => utf8.encode(s)),
  },
  { weight: 1, arbitrary: deepJsonArb.map((s) => utf8.encode(s)) },
  {
    weight: 1,
    arbitrary: manyDimensionsArb.map((shape) => jsonText({ shape, data: [1] })),
  },
  // Pickle and Erlang external term format: rejected, never decoded.
  { weight: 1, arbitrary: fc.constant(new Uint8Array([0x80, 0x04, 0x95, 0x00, 0x2e])) },
  { weight: 1, arbitrary: fc.constant(new Uint8Array([131, 97, 1])) },
  {
    weight: 1,
    arbitrary: fc.integer({ min: 1000, max: 6000 }).map((n) => jsonText("x".repeat(n))),
  },
);

/** A float32 payload, or any bytes. */
const binaryArb: fc.Arbitrary<Uint8Array> = fc.oneof(
  { weight: 3, arbitrary: fc.constant(new Uint8Array(0)) },
  {
    weight: 2,
    arbitrary: fc
      .array(fc.float(), { maxLength: 4 })
      .map((xs) => new Uint8Array(new Float32Array(xs).buffer)),
  },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 40 }) },
);

/** Any raw value of a type (constraints not considered), properly encoded. */
const rawValueOf: Record<VariableType, fc.Arbitrary<unknown>> = {
  float: fc.oneof(fc.double(), fc.integer({ min: -5, max: 15 })),
  integer: fc.oneof(fc.integer({ min: -150, max: 150 }), fc.maxSafeInteger()),
  string: fc.oneof(fc.stringMatching(/^[a-z]{0,25}$/), weirdString),
  boolean: fc.boolean(),
  choice: fc.oneof(fc.constantFrom("a", "b", "c"), weirdString),
  module: weirdString,
  embedding: fc.array(fc.double(), { maxLength: 4 }),
  tensor: fc
    .array(fc.double({ noNaN: true }), { maxLength: 4 })
    .chain((data) =>
      fc.constantFrom(
        { shape: [data.length], data },
        { shape: [2], data },
        { shape: [], data },
        { shape: [1, data.length], data },
      ),
    ),
};
const encodedValueArb: fc.Arbitrary<{ any: Any; binary: Uint8Array }> = fc
  .constantFrom(...VARIABLE_TYPES)
  .chain((type) => fc.tuple(fc.constant(type), rawValueOf[type], fc.boolean()))
  .chain((t) => fc.tuple(fc.constant(t), binaryArb))
  .map(([[type, value, binary], stray]) => {
    try {
      const encoded = encodeValue(type, value as never, {
        binary: binary && (type === "embedding" || type === "tensor"),
      });
      // The JSON form with bytes in the binary field as well: they must be ignored or refused.
      return { any: encoded.any, binary: encoded.binary ?? stray };
    } catch {
      // Not a value of the type at all: send it anyway, as JSON.
      return {
        any: create(AnySchema, { typeUrl: TYPE_URL_PREFIX + type, value: jsonText(value) }),
        binary: new Uint8Array(0),
      };
    }
  });

/** A value as sent: well-formed for some type, or a random Any, or none. */
const valueArb: fc.Arbitrary<{ any: Any | undefined; binary: Uint8Array }> = fc.oneof(
  { weight: 3, arbitrary: encodedValueArb },
  {
    weight: 3,
    arbitrary: fc
      .record({ typeUrl: typeUrlArb, value: valueBytesArb, binary: binaryArb })
      .map(({ binary, ...any }) => ({ any: create(AnySchema, any), binary })),
  },
  { weight: 1, arbitrary: fc.constant({ any: undefined, binary: new Uint8Array(0) }) },
);

const constraintKeys = [
  "min",
  "max",
  "min_length",
  "max_length",
  "pattern",
  "enum",
  "choices",
  "allowed_modules",
  "dimensions",
  "shape",
  "step",
];
const constraintsArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 2, arbitrary: fc.constantFrom("", "{}", "null", "[]", "0", '"x"', "{", '{"min":') },
  { weight: 1, arbitrary: weirdString },
  { weight: 1, arbitrary: fc.json({ maxDepth: 2 }) },
  { weight: 1, arbitrary: deepJsonArb.map((deep) => `{"min":${deep}}`) },
  { weight: 1, arbitrary: manyDimensionsArb.map((shape) => JSON.stringify({ shape })) },
  {
    weight: 4,
    arbitrary: fc
      .dictionary(
        fc.constantFrom(...constraintKeys),
        fc.oneof(
          fc.integer({ min: -5, max: 50 }),
          fc.double(),
          fc.string({ maxLength: 6 }),
          fc.array(fc.string({ maxLength: 4 }), { maxLength: 3 }),
          fc.array(fc.integer({ min: -1, max: 4 }), { maxLength: 3 }),
          fc.constantFrom(
            "(",
            "[a-",
            "(a+)+$",
            "a{1000}",
            "(a{1000}){1000}",
            "(?P<n>x)",
            "\\p{L}+",
            "^a+$",
            "(?=x)",
            "\\1",
          ),
          fc.constant(null),
          fc.jsonValue({ maxDepth: 2 }),
        ),
        { maxKeys: 4 },
      )
      .map((o) => JSON.stringify(o)),
  },
);

const metadataArb: fc.Arbitrary<Record<string, string>> = fc.oneof(
  { weight: 3, arbitrary: fc.constant({}) },
  {
    weight: 3,
    arbitrary: fc.dictionary(
      fc.oneof(
        fc.constantFrom("optimizer_id", "source", "owner", "__proto__"),
        fc.string({ maxLength: 10 }),
      ),
      fc.oneof(fc.constantFrom("opt-A", "opt-B", "python", ""), fc.string({ maxLength: 20 })),
      { maxKeys: 10 },
    ),
  },
  { weight: 1, arbitrary: fc.dictionary(weirdString, weirdString, { maxKeys: 3 }) },
);

const int32Arb = fc.oneof(
  { weight: 3, arbitrary: fc.integer({ min: -1, max: 4 }) },
  { weight: 1, arbitrary: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }) },
);

const protocolArb = fc.constantFrom(...protocols);

const declarationArb = fc.record({
  name: fc.oneof(
    { weight: 3, arbitrary: fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_.-]{0,12}$/) },
    { weight: 1, arbitrary: fc.constantFrom(...fixtureNames) },
    { weight: 1, arbitrary: weirdString },
  ),
  type: typeNameArb,
  value: valueArb,
  constraintsJson: constraintsArb,
  metadata: metadataArb,
});
type Declaration = typeof declarationArb extends fc.Arbitrary<infer D> ? D : never;
const toDeclaration = (d: Declaration) => ({
  name: d.name,
  type: d.type,
  initialValue: d.value.any,
  initialBinaryValue: d.value.binary,
  constraintsJson: d.constraintsJson,
  metadata: d.metadata,
});

/**
 * fast-check's report, with long runs of one character (the huge strings)
 * shortened so that a counterexample stays readable.
 */
function reporter<T>(details: fc.RunDetails<T>): void {
  if (!details.failed) return;
  const report = fc.defaultReportMessage(details) ?? "property failed";
  const short = report.replace(
    /(.)\1{15,}/gsu,
    (run, ch: string) => `${ch}…(×${Array.from(run).length})`,
  );
  throw new Error(short, { cause: details.errorInstance });
}
// A property normally takes a few seconds; the limit only cuts short the
// shrinking of failures that cost a deadline each.
const props = { numRuns: NUM_RUNS, reporter, interruptAfterTimeLimit: 20_000 } as const;
const timeout = 60_000;

// ------------------------------------------------------------ properties

describe("arbitrary writes: documented codes only, and a failed write changes nothing", () => {
  it("RegisterVariable and RegisterVariables", { timeout }, async () => {
    const fx = fixtureFor();
    const inputArb = fc.oneof(
      declarationArb.map((d) => ({ batch: false as const, d })),
      fc.record({
        batch: fc.constant(true as const),
        ds: fc.array(declarationArb, { maxLength: 4 }),
        ifAbsent: fc.boolean(),
      }),
    );
    await fc.assert(
      fc.asyncProperty(protocolArb, sessionArb, inputArb, (protocol, s, input) =>
        fx.run(async (fixture, pristine, expectUnchanged) => {
          const sessionId = session(s, fixture);
          const c = client(protocol);
          if (!input.batch) {
            const result = await settle(
              c.registerVariable({ sessionId, ...toDeclaration(input.d) }),
            );
            if (!result.ok) return expectUnchanged();
            const { variable } = await admin().getVariable({
              sessionId,
              variableIdentifier: input.d.name,
            });
            expect(variable).toMatchObject({
              id: result.value.variableId,
              version: 0,
              type: input.d.type,
            });
            expect((await admin().getSession({ sessionId })).variableCount).toBe(
              pristine.variableCount + 1,
            );
            return;
          }
          const result = await settle(
            c.registerVariables({
              sessionId,
              variables: input.ds.map(toDeclaration),
              ifAbsent: input.ifAbsent,
            }),
          );
          if (!result.ok) return expectUnchanged();
          expect(result.value.variables.map((v) => v.name)).toEqual(input.ds.map((d) => d.name));
          expect((await admin().getSession({ sessionId })).variableCount).toBe(
            pristine.variableCount + result.value.created.length,
          );
        }),
      ),
      props,
    );
    await fx.close();
  });

  it("SetVariable", { timeout }, async () => {
    const fx = fixtureFor();
    await fc.assert(
      fc.asyncProperty(
        protocolArb,
        sessionArb,
        identArb,
        valueArb,
        metadataArb,
        int32Arb,
        fc.boolean(),
        (protocol, s, ident, value, metadata, expectedVersion, expectVersionZero) =>
          fx.run(async (fixture, pristine, expectUnchanged) => {
            const sessionId = session(s, fixture);
            const variableIdentifier = resolve(ident, fixture);
            const result = await settle(
              client(protocol).setVariable({
                sessionId,
                variableIdentifier,
                value: value.any,
                binaryValue: value.binary,
                metadata,
                expectedVersion,
                expectVersionZero,
              }),
            );
            if (!result.ok) return expectUnchanged();
            const old = pristine.variables.find((v) => v.id === result.value.variable?.id);
            expect(result.value.newVersion).toBe((old?.version ?? Number.NaN) + 1);
            const history = await admin().getVariableHistory({ sessionId, variableIdentifier });
            expect(history.entries[0]?.version).toBe(result.value.newVersion);
          }),
      ),
      props,
    );
    await fx.close();
  });

  it("SetVariables: atomic failures change nothing, partial ones only what succeeded", {
    timeout,
  }, async () => {
    const fx = fixtureFor();
    await fc.assert(
      fc.asyncProperty(
        protocolArb,
        sessionArb,
        fc.array(fc.tuple(identArb, valueArb), { maxLength: 5 }),
        fc.array(fc.tuple(identArb, binaryArb), { maxLength: 2 }),
        metadataArb,
        fc.boolean(),
        (protocol, s, updates, binaryUpdates, metadata, atomic) =>
          fx.run(async (fixture, pristine, expectUnchanged) => {
            const sessionId = session(s, fixture);
            const result = await settle(
              client(protocol).setVariables({
                sessionId,
                updates: Object.fromEntries(
                  updates.flatMap(([i, v]) =>
                    v.any === undefined ? [] : [[resolve(i, fixture), v.any]],
                  ),
                ),
                binaryUpdates: Object.fromEntries(
                  binaryUpdates.map(([i, b]) => [resolve(i, fixture), b]),
                ),
                metadata,
                atomic,
              }),
            );
            if (result.ok) Object.values(result.value.errors).forEach(expectNoInternalText);
            if (!result.ok || !result.value.success) return expectUnchanged();
            if (Object.keys(result.value.variables).length === 0) return expectUnchanged();
            const after = await snapshot(fixture.sessionId);
            const written = new Set(Object.values(result.value.variables).map((v) => v.id));
            const untouched = (snap: Snapshot) => ({
              variables: snap.variables.filter((v) => !written.has(v.id)),
              histories: snap.histories.filter((h) => !written.has(h.id)),
            });
            expect(untouched(after)).toEqual(untouched(pristine));
            for (const v of Object.values(result.value.variables)) {
              const old = pristine.variables.find((o) => o.id === v.id);
              expect(v.version).toBe((old?.version ?? Number.NaN) + 1);
            }
          }),
      ),
      props,
    );
    await fx.close();
  });

  it("DeleteVariable, RollbackVariable, AddDependency, StartOptimization, StopOptimization", {
    timeout,
  }, async () => {
    const fx = fixtureFor();
    const optimizerArb = fc.oneof(fc.constantFrom("opt-A", "opt-B", ""), weirdString);
    const callArb = fc.oneof(
      fc.record({ rpc: fc.constant("delete" as const), ident: identArb }),
      fc.record({ rpc: fc.constant("rollback" as const), ident: identArb, version: int32Arb }),
      fc.record({
        rpc: fc.constant("dependency" as const),
        from: identArb,
        to: identArb,
        type: weirdString,
      }),
      fc.record({
        rpc: fc.constant("start" as const),
        ident: identArb,
        optimizer: optimizerArb,
        config: metadataArb,
      }),
      fc.record({
        rpc: fc.constant("stop" as const),
        ident: identArb,
        optimizer: optimizerArb,
        force: fc.boolean(),
      }),
    );
    await fc.assert(
      fc.asyncProperty(protocolArb, sessionArb, callArb, (protocol, s, call) =>
        fx.run(async (fixture, _pristine, expectUnchanged) => {
          const sessionId = session(s, fixture);
          const c = client(protocol);
          let result: Settled<unknown>;
          switch (call.rpc) {
            case "delete":
              result = await settle(
                c.deleteVariable({ sessionId, variableIdentifier: resolve(call.ident, fixture) }),
              );
              break;
            case "rollback":
              result = await settle(
                c.rollbackVariable({
                  sessionId,
                  variableIdentifier: resolve(call.ident, fixture),
                  targetVersion: call.version,
                }),
              );
              break;
            case "dependency":
              result = await settle(
                c.addDependency({
                  sessionId,
                  fromVariable: resolve(call.from, fixture),
                  toVariable: resolve(call.to, fixture),
                  dependencyType: call.type,
                }),
              );
              break;
            case "start":
              result = await settle(
                c.startOptimization({
                  sessionId,
                  variableIdentifier: resolve(call.ident, fixture),
                  optimizerId: call.optimizer,
                  optimizerConfig: call.config,
                }),
              );
              break;
            case "stop":
              result = await settle(
                c.stopOptimization({
                  sessionId,
                  variableIdentifier: resolve(call.ident, fixture),
                  optimizerId: call.optimizer,
                  force: call.force,
                }),
              );
              break;
          }
          if (!result.ok) await expectUnchanged();
        }),
      ),
      props,
    );
    await fx.close();
  });
});

describe("arbitrary reads: documented codes only, and nothing changes", () => {
  it("GetVariable, GetVariables, ListVariables, GetVariableHistory, WatchVariables, GetSession, Heartbeat", {
    timeout,
  }, async () => {
    const fx = fixtureFor();
    const callArb = fc.oneof(
      fc.record({ rpc: fc.constant("get" as const), ident: identArb }),
      fc.record({
        rpc: fc.constant("getMany" as const),
        idents: fc.array(identArb, { maxLength: 5 }),
        meta: fc.boolean(),
      }),
      fc.record({
        rpc: fc.constant("list" as const),
        pattern: fc.oneof(
          weirdString,
          fc.constantFrom("*", "?", "[", "\\", "f*", "*.*", "(", "**?**"),
        ),
      }),
      fc.record({ rpc: fc.constant("history" as const), ident: identArb, limit: int32Arb }),
      fc.record({
        rpc: fc.constant("watch" as const),
        idents: fc.array(identArb, { maxLength: 4 }),
        initial: fc.boolean(),
      }),
      fc.record({ rpc: fc.constant("session" as const) }),
      fc.record({ rpc: fc.constant("heartbeat" as const) }),
    );
    await fc.assert(
      fc.asyncProperty(protocolArb, sessionArb, callArb, (protocol, s, call) =>
        fx.run(async (fixture, pristine, expectUnchanged) => {
          const sessionId = session(s, fixture);
          const c = client(protocol);
          switch (call.rpc) {
            case "get":
              await settle(
                c.getVariable({ sessionId, variableIdentifier: resolve(call.ident, fixture) }),
              );
              break;
            case "getMany": {
              const identifiers = call.idents.map((i) => resolve(i, fixture));
              const result = await settle(
                c.getVariables({
                  sessionId,
                  variableIdentifiers: identifiers,
                  includeMetadata: call.meta,
                }),
              );
              if (result.ok) {
                // Every identifier is answered: found, or listed as missing.
                expect(
                  new Set([
                    ...Object.keys(result.value.variables),
                    ...result.value.missingVariables,
                  ]),
                ).toEqual(new Set(identifiers));
              }
              break;
            }
            case "list": {
              const result = await settle(c.listVariables({ sessionId, pattern: call.pattern }));
              if (result.ok) {
                const names = result.value.variables.map((v) => v.name);
                expect(pristine.variables.map((v) => v.name)).toEqual(
                  expect.arrayContaining(names),
                );
              }
              break;
            }
            case "history":
              await settle(
                c.getVariableHistory({
                  sessionId,
                  variableIdentifier: resolve(call.ident, fixture),
                  limit: call.limit,
                }),
              );
              break;
            case "watch": {
              const abort = new AbortController();
              const watched = (async () => {
                for await (const update of c.watchVariables(
                  {
                    sessionId,
                    variableIdentifiers: call.idents.map((i) => resolve(i, fixture)),
                    includeInitialValues: call.initial,
                    syncMarker: true,
                  },
                  { signal: abort.signal },
                )) {
                  if (update.updateType === "sync") return "synced";
                }
                return "ended";
              })();
              const result = await settle(watched);
              abort.abort();
              // An open watch always reaches its sync marker.
              if (result.ok) expect(result.value).toBe("synced");
              break;
            }
            case "session":
              await settle(c.getSession({ sessionId }));
              break;
            case "heartbeat": {
              const result = await settle(c.heartbeat({ sessionId }));
              expect(result).toMatchObject({
                ok: true,
                value: { sessionValid: sessionId === fixture.sessionId },
              });
              break;
            }
          }
          await expectUnchanged();
        }),
      ),
      props,
    );
    await fx.close();
  });
});

describe("arbitrary session calls", () => {
  it("InitializeSession: a failed call creates nothing and changes no existing session", {
    timeout,
  }, async () => {
    const fx = fixtureFor();
    const initArb = fc.record({
      id: fc.oneof(
        { weight: 1, arbitrary: fc.constant(FIXTURE_SESSION) },
        { weight: 4, arbitrary: weirdString },
      ),
      metadata: metadataArb,
      config: fc.option(
        fc.record({
          enableCaching: fc.boolean(),
          cacheTtlSeconds: int32Arb,
          enableTelemetry: fc.boolean(),
        }),
        { nil: undefined },
      ),
      ttlSeconds: fc.oneof(fc.constantFrom(0, 1, 604_800, 604_801, -1), int32Arb),
      allowedTools: fc.array(
        fc.oneof(fc.constantFrom("increment_variable", "export_variables"), weirdString),
        { maxLength: 3 },
      ),
      variables: fc.array(declarationArb, { maxLength: 3 }),
    });
    await fc.assert(
      fc.asyncProperty(protocolArb, initArb, (protocol, init) =>
        fx.run(async (fixture, _pristine, expectUnchanged) => {
          const sessionId = session(init.id, fixture);
          const existed = sessionId !== "" && (await admin().heartbeat({ sessionId })).sessionValid;
          const result = await settle(
            client(protocol).initializeSession({
              sessionId,
              metadata: init.metadata,
              ...(init.config === undefined ? {} : { config: init.config }),
              ttlSeconds: init.ttlSeconds,
              allowedTools: init.allowedTools,
              initialVariables: init.variables.map(toDeclaration),
            }),
          );
          if (result.ok) {
            expect(result.value.created).toBe(!existed);
            if (sessionId !== "") expect(result.value.sessionId).toBe(sessionId);
            if (result.value.created) {
              const created = await admin().listVariables({ sessionId: result.value.sessionId });
              expect(created.variables.map((v) => v.name).sort()).toEqual(
                init.variables.map((d) => d.name).sort(),
              );
              await admin().cleanupSession({ sessionId: result.value.sessionId, force: true });
            }
          } else if (sessionId !== "") {
            expect((await admin().heartbeat({ sessionId })).sessionValid).toBe(existed);
          }
          await expectUnchanged();
        }),
      ),
      props,
    );
    await fx.close();
  });

  it("CleanupSession: refused without force while a variable is locked, and then nothing changes", {
    timeout,
  }, async () => {
    const fx = fixtureFor();
    await fc.assert(
      fc.asyncProperty(protocolArb, sessionArb, fc.boolean(), (protocol, s, force) =>
        fx.run(async (fixture, _pristine, expectUnchanged) => {
          const sessionId = session(s, fixture);
          const result = await settle(client(protocol).cleanupSession({ sessionId, force }));
          const alive = (await admin().heartbeat({ sessionId: fixture.sessionId })).sessionValid;
          if (sessionId !== fixture.sessionId) {
            // Unknown sessions: idempotent success, and the fixture is untouched.
            expect(result).toMatchObject({
              ok: true,
              value: { success: true, resourcesCleaned: 0 },
            });
            await expectUnchanged();
          } else if (force) {
            expect(result).toMatchObject({ ok: true, value: { success: true } });
            expect(alive).toBe(false);
          } else {
            expect(result.ok ? "ok" : Code[result.error.code]).toBe(Code[Code.FailedPrecondition]);
            await expectUnchanged();
          }
        }),
      ),
      // Few inputs are possible: protocol, fixture or not, force or not.
      { ...props, numRuns: 60 },
    );
    await fx.close();
  });
});

describe("arbitrary tool calls", () => {
  const toolNameArb = fc.oneof(
    {
      weight: 3,
      arbitrary: fc.constantFrom(
        "increment_variable",
        "conversation_append",
        "conversation_history",
        "export_variables",
      ),
    },
    { weight: 1, arbitrary: weirdString },
  );
  const parameterNameArb = fc.oneof(
    fc.constantFrom("name", "delta", "role", "content", "max_messages", "last", "pattern"),
    weirdString,
  );
  const parameterValueArb: fc.Arbitrary<Any> = fc.oneof(
    {
      weight: 3,
      arbitrary: fc.jsonValue({ maxDepth: 2 }).map((v) => encodeJsonAny(v as JsonValue)),
    },
    {
      weight: 2,
      arbitrary: fc
        .constantFrom("f", "i", "m", "s", "e", "nope", 1, -3.5, 1e308, "user", "*", 0, 10_001, null)
        .map((v) => encodeJsonAny(v)),
    },
    {
      weight: 2,
      arbitrary: fc
        .record({ typeUrl: typeUrlArb, value: valueBytesArb })
        .map((a) => create(AnySchema, a)),
    },
    {
      weight: 1,
      arbitrary: deepJsonArb.map((deep) =>
        create(AnySchema, { typeUrl: STRING_VALUE_TYPE_URL, value: utf8.encode(deep) }),
      ),
    },
  );
  const toolCallArb = fc.record({
    protocol: protocolArb,
    session: sessionArb,
    rpc: fc.constantFrom("execute", "elixir", "stream"),
    tool: toolNameArb,
    parameters: fc.dictionary(parameterNameArb, parameterValueArb, { maxKeys: 4 }),
    binaryParameters: fc.dictionary(parameterNameArb, fc.uint8Array({ maxLength: 16 }), {
      maxKeys: 2,
    }),
    metadata: metadataArb,
  });

  it.each([
    ["every tool", []],
    ["an allowlist of conversation_history only", ["conversation_history"]],
  ])(
    "ExecuteTool, ExecuteElixirTool, ExecuteStreamingTool in a session allowing %s: a failed call changes nothing",
    { timeout },
    async (_name, allowedTools) => {
      const fx = fixtureFor(allowedTools, true);
      await fc.assert(
        fc.asyncProperty(toolCallArb, (call) =>
          fx.run(async (fixture, _pristine, expectUnchanged) => {
            const sessionId = session(call.session, fixture);
            const c = client(call.protocol);
            const request = {
              sessionId,
              toolName: call.tool,
              parameters: call.parameters,
              metadata: call.metadata,
            };
            let failed: boolean;
            if (call.rpc === "stream") {
              const chunks: ToolChunk[] = [];
              const result = await settle(
                (async () => {
                  for await (const chunk of c.executeStreamingTool({
                    ...request,
                    binaryParameters: call.binaryParameters,
                    stream: true,
                  })) {
                    chunks.push(chunk);
                  }
                })(),
              );
              if (result.ok) {
                // Exactly one final chunk, and it is the last.
                expect(chunks.map((ch) => ch.isFinal)).toEqual([
                  ...chunks.slice(1).map(() => false),
                  true,
                ]);
              }
              expectNoInternalText(chunks.at(-1)?.metadata.error);
              failed = !result.ok || chunks.at(-1)?.metadata.error !== undefined;
            } else {
              const result = await settle<{
                success: boolean;
                errorMessage: string;
                metadata: Record<string, string>;
              }>(
                call.rpc === "execute"
                  ? c.executeTool({ ...request, binaryParameters: call.binaryParameters })
                  : c.executeElixirTool(request),
              );
              if (result.ok && !result.value.success) {
                expect(result.value.errorMessage).not.toBe("");
                expectNoInternalText(result.value.errorMessage);
                expect(["not_found", "invalid_arguments", "error"]).toContain(
                  result.value.metadata.error_kind,
                );
              }
              failed = !result.ok || !result.value.success;
            }
            if (failed) await expectUnchanged();
          }),
        ),
        // Two fixtures share the budget of one property.
        { ...props, numRuns: NUM_RUNS / 2 },
      );
      await fx.close();
    },
  );

  it("RegisterTools: a refused registration registers nothing", { timeout }, async () => {
    const registrationArb = fc.record({
      name: fc.oneof(fc.stringMatching(/^[a-z][a-z0-9_]{0,10}$/), weirdString),
      description: weirdString,
      parameters: fc.array(
        fc.record({
          name: weirdString,
          type: fc.oneof(typeNameArb, fc.constantFrom("str", "dict", "list")),
          required: fc.boolean(),
        }),
        { maxLength: 3 },
      ),
      metadata: fc.oneof(
        fc.record({
          worker_address: fc.oneof(
            fc.constantFrom("127.0.0.1:9", "http://127.0.0.1:9", ""),
            weirdString,
          ),
          expires_in_seconds: fc.oneof(
            fc.constantFrom("0", "60", "-1", "NaN", "1e400"),
            weirdString,
          ),
        }),
        metadataArb,
      ),
      supportsStreaming: fc.boolean(),
    });
    await fc.assert(
      fc.asyncProperty(
        protocolArb,
        fc.oneof(fc.constantFrom(FIXTURE_SESSION, ""), weirdString),
        fc.array(registrationArb, { maxLength: 3 }),
        weirdString,
        async (protocol, s, tools, workerId) => {
          const c = cachedClient(toolBridge, protocol);
          // `probe` sees global tools only; `own` may also get session tools.
          const [probe, own] = await Promise.all([
            c.initializeSession({}),
            c.initializeSession({}),
          ]);
          const sessionId = s === FIXTURE_SESSION ? own.sessionId : s;
          const listed = () =>
            Promise.all(
              [probe, own].map(
                async ({ sessionId: id }) =>
                  (await c.getExposedElixirTools({ sessionId: id })).tools,
              ),
            );
          const before = await listed();
          const result = await settle(c.registerTools({ sessionId, tools, workerId }));
          const after = await listed();
          if (!result.ok || !result.value.success) {
            expect(after).toEqual(before);
            if (result.ok) {
              expect(result.value.errorMessage).not.toBe("");
              expectNoInternalText(result.value.errorMessage);
            }
          } else {
            const visible = after[sessionId === "" ? 0 : 1]?.map((t) => t.name) ?? [];
            expect(visible).toEqual(expect.arrayContaining(Object.keys(result.value.toolIds)));
          }
          await Promise.all(
            [probe, own].map(({ sessionId: id }) => c.cleanupSession({ sessionId: id })),
          );
        },
      ),
      props,
    );
  });
});

describe("identifiers far beyond any name length", () => {
  // A lookup quotes the identifier in its NOT_FOUND message, and gRPC carries
  // the message in the grpc-message trailer, a header: Node's HTTP/2 refuses
  // header blocks over 64 KiB and grpcio's default limit is 8 KiB. Other
  // messages shorten what they quote (names to 40 characters, tool names to 80).
  it.each(protocols)("get NOT_FOUND over %s, not a transport error", async (protocol) => {
    const { sessionId } = await admin().initializeSession({});
    for (const identifier of ["a".repeat(100_000), "é".repeat(20_000), "😀".repeat(10_000)]) {
      // A new connection each time: a failure must not be blamed on the call before.
      const error = await clientOf(bridge, protocol)
        .getVariable({ sessionId, variableIdentifier: identifier })
        .then(
          () => undefined,
          (e: unknown) => ConnectError.from(e),
        );
      expect(error && `${Code[error.code]}: ${error.rawMessage.slice(0, 60)}`).toMatch(
        /^NotFound: Variable not found: /,
      );
    }
  });
});

describe("error messages that quote what the client sent", () => {
  // Messages quote the first 40 (names, types) or 80 (tool names) UTF-16 code
  // units of a name, and JSON.parse's own message for text that is not JSON,
  // which names the offending code unit. Either can end in half a surrogate
  // pair; gRPC and gRPC-Web percent-encode the message into the grpc-message
  // trailer, which throws on it, and the call is never answered.
  const emojiAt = (n: number, total: number) => `${"x".repeat(n - 1)}😀${"y".repeat(total - n)}`;
  const int = encodeValue("integer", 1).any;
  const emojiJson = create(AnySchema, {
    typeUrl: `${TYPE_URL_PREFIX}float`,
    value: new TextEncoder().encode("😀"),
  });
  it.each(protocols)("still come back as INVALID_ARGUMENT over %s", async (protocol) => {
    const c = clientOf(bridge, protocol);
    const { sessionId } = await c.initializeSession({
      initialVariables: [{ name: "f", type: "float", initialValue: encodeValue("float", 1).any }],
    });
    const calls = {
      "a type name": c.registerVariable({
        sessionId,
        name: "v",
        type: emojiAt(40, 60),
        initialValue: int,
      }),
      "a variable name": c.registerVariable({
        sessionId,
        name: emojiAt(40, 200),
        type: "integer",
        initialValue: int,
      }),
      "a tool name": c.initializeSession({ allowedTools: [emojiAt(80, 90)] }),
      "constraints that are not JSON": c.registerVariable({
        sessionId,
        name: "w",
        type: "integer",
        initialValue: int,
        constraintsJson: "😀",
      }),
      "a value that is not JSON": c.setVariable({
        sessionId,
        variableIdentifier: "f",
        value: emojiJson,
      }),
    };
    const outcomes = await Promise.all(
      Object.entries(calls).map(([what, call]) =>
        call.then(
          () => `${what}: ok`,
          (e: unknown) => `${what}: ${Code[ConnectError.from(e).code]}`,
        ),
      ),
    );
    expect(outcomes).toEqual(Object.keys(calls).map((what) => `${what}: InvalidArgument`));
  });
});

describe("a JSON value with bytes in its binary field", () => {
  // decodeValue ignores the bytes unless the type URL ends in ".binary", but
  // the write still records the value as binary; reading it back then fails.
  const stray = new Uint8Array([0, 0, 128, 63]);
  const writes = {
    RegisterVariable: (c: BridgeClient, sessionId: string) =>
      c.registerVariable({
        sessionId,
        name: "fresh",
        type: "string",
        initialValue: encodeValue("string", "abc").any,
        initialBinaryValue: stray,
      }),
    SetVariable: (c: BridgeClient, sessionId: string) =>
      c.setVariable({
        sessionId,
        variableIdentifier: "i",
        value: encodeValue("integer", 5).any,
        binaryValue: stray,
      }),
    SetVariables: (c: BridgeClient, sessionId: string) =>
      c.setVariables({
        sessionId,
        updates: { f: encodeValue("float", 2.5).any },
        binaryUpdates: { f: stray },
      }),
  };
  it.each(Object.keys(writes))(
    "%s: is applied and readable, or refused and changes nothing",
    async (rpc) => {
      const fixture = await createFixture();
      try {
        const pristine = await snapshot(fixture.sessionId);
        const write = writes[rpc as keyof typeof writes];
        const result = await settle<unknown>(write(admin(), fixture.sessionId));
        const after = await settle(snapshot(fixture.sessionId));
        expect(after.ok ? "readable" : `unreadable: ${after.error.rawMessage}`).toBe("readable");
        if (!result.ok) expect(after.ok && after.value).toEqual(pristine);
      } finally {
        await dropFixture(fixture);
      }
    },
  );

  it("InitializeSession: creates a readable session, or none", async () => {
    const sessionId = `stray-binary-${process.pid}`;
    const result = await settle(
      admin().initializeSession({
        sessionId,
        initialVariables: [
          {
            name: "x",
            type: "integer",
            initialValue: encodeValue("integer", 1).any,
            initialBinaryValue: stray,
          },
        ],
      }),
    );
    const alive = (await admin().heartbeat({ sessionId })).sessionValid;
    if (result.ok) {
      expect((await settle(admin().listVariables({ sessionId }))).ok).toBe(true);
    } else {
      expect(alive).toBe(false);
    }
    await admin().cleanupSession({ sessionId, force: true });
  });
});

describe("a ListVariables pattern longer than any name", () => {
  // Names have at most 128 characters, so such a pattern matches nothing; a
  // pattern of 32,768 characters or more exceeds V8's regular expression size.
  it.each(protocols)(
    "lists what it matches, or is refused as INVALID_ARGUMENT, over %s",
    async (protocol) => {
      const fixture = await createFixture();
      try {
        const cases: [string, number][] = [
          ["f".repeat(200), 0],
          ["a".repeat(40_000), 0],
          ["*".repeat(40_000), fixtureNames.length],
        ];
        for (const [pattern, matching] of cases) {
          const outcome = await client(protocol)
            .listVariables({ sessionId: fixture.sessionId, pattern })
            .then(
              (res) => `${res.variables.length} variables`,
              (e: unknown) => Code[ConnectError.from(e).code],
            );
          expect([`${matching} variables`, "InvalidArgument"]).toContain(outcome);
        }
      } finally {
        await dropFixture(fixture);
      }
    },
  );
});

describe("raw request bytes: never INTERNAL or UNKNOWN, never an internal message", () => {
  // Requests built byte by byte, as a broken or hostile peer sends them,
  // against a server of their own: a request that happens to decode may
  // create sessions or register tools.
  let raw: RunningBridge;
  beforeAll(async () => {
    raw = await startBridge(limits);
  });
  afterAll(() => raw?.stop());

  const methods = BridgeService.methods;
  const rawCodes = new Set([...documentedCodes, Code.Unimplemented]);

  /** Fails unless `outcome` is success or an acceptable code, with a clean message. */
  function expectAcceptable(outcome: RawOutcome): void {
    if (outcome.code !== undefined && !rawCodes.has(outcome.code)) {
      throw new Error(`the call failed with ${Code[outcome.code]}: ${outcome.message}`);
    }
    expectNoInternalText(outcome.message);
  }

  const varint = (n: number): number[] => {
    const out: number[] = [];
    let rest = n;
    while (rest > 0x7f) {
      out.push((rest % 128) | 0x80);
      rest = Math.floor(rest / 128);
    }
    out.push(rest);
    return out;
  };
  const concat = (...parts: (Uint8Array | readonly number[])[]) =>
    new Uint8Array(parts.flatMap((p) => Array.from(p)));
  /** A length-delimited field (wire type 2). */
  const delimited = (field: number, payload: Uint8Array) =>
    concat(varint(field * 8 + 2), varint(payload.length), payload);

  /** The message bytes as the body of `method` over `protocol`: enveloped unless Connect unary. */
  const bodyOf = (protocol: Protocol, method: DescMethod, message: Uint8Array) =>
    protocol === "connect" && method.methodKind === "unary" ? message : envelope(message);

  /**
   * A request of `message` type with every field set, so that cutting it
   * anywhere cuts some field. Session ids stay empty: a stream for an
   * existing session would stay open.
   */
  function sampleOf(message: DescMessage, depth = 0): Record<string, unknown> {
    const scalar = (t: ScalarType, name = ""): unknown => {
      if (t === ScalarType.STRING) return name === "session_id" ? "" : "x😀";
      if (t === ScalarType.BYTES) return new Uint8Array([1, 2, 3]);
      if (t === ScalarType.BOOL) return true;
      if (t === ScalarType.DOUBLE || t === ScalarType.FLOAT) return 1.5;
      if ([ScalarType.INT64, ScalarType.UINT64, ScalarType.FIXED64].includes(t)) return 7n;
      if ([ScalarType.SINT64, ScalarType.SFIXED64].includes(t)) return -7n;
      return 3;
    };
    const init: Record<string, unknown> = {};
    for (const f of message.fields) {
      switch (f.fieldKind) {
        case "scalar":
          init[f.localName] = scalar(f.scalar, f.name);
          break;
        case "enum":
          init[f.localName] = 1;
          break;
        case "message":
          if (depth < 2) init[f.localName] = sampleOf(f.message, depth + 1);
          break;
        case "list":
          if (f.listKind === "scalar") init[f.localName] = [scalar(f.scalar), scalar(f.scalar)];
          else if (f.listKind === "message" && depth < 2) {
            init[f.localName] = [sampleOf(f.message, depth + 1)];
          }
          break;
        case "map": {
          const value =
            f.mapKind === "scalar"
              ? scalar(f.scalar)
              : f.mapKind === "message" && depth < 2
                ? sampleOf(f.message, depth + 1)
                : undefined;
          if (value !== undefined) init[f.localName] = { [String(scalar(f.mapKey))]: value };
          break;
        }
      }
    }
    return init;
  }
  const sampleBytes = new Map(
    methods.map((m) => [m, toBinary(m.input, create(m.input, sampleOf(m.input)))]),
  );

  /** Field-number paths to every string field, through nested messages and map entries. */
  function stringPaths(message: DescMessage, depth = 0): number[][] {
    const paths: number[][] = [];
    const into = (prefix: number[], m: DescMessage) => {
      if (depth < 2) for (const p of stringPaths(m, depth + 1)) paths.push([...prefix, ...p]);
    };
    for (const f of message.fields) {
      switch (f.fieldKind) {
        case "scalar":
          if (f.scalar === ScalarType.STRING) paths.push([f.number]);
          break;
        case "message":
          into([f.number], f.message);
          break;
        case "list":
          if (f.listKind === "scalar" && f.scalar === ScalarType.STRING) paths.push([f.number]);
          if (f.listKind === "message") into([f.number], f.message);
          break;
        case "map":
          // A map entry is a message: key = 1, value = 2.
          if (f.mapKey === ScalarType.STRING) paths.push([f.number, 1]);
          if (f.mapKind === "scalar" && f.scalar === ScalarType.STRING) paths.push([f.number, 2]);
          if (f.mapKind === "message") into([f.number, 2], f.message);
          break;
        case "enum":
          break;
      }
    }
    return paths;
  }
  const nestAt = (path: number[], payload: Uint8Array): Uint8Array => {
    const [field, ...rest] = path;
    if (field === undefined) return payload;
    return delimited(field, rest.length === 0 ? payload : nestAt(rest, payload));
  };

  /** Bytes that are not UTF-8, between well-formed text. */
  const invalidUtf8Arb = fc
    .tuple(
      fc.string({ maxLength: 4 }),
      fc.constantFrom(
        [0xff, 0xfe],
        [0xc0, 0x80], // overlong NUL
        [0xed, 0xa0, 0x80], // a UTF-16 surrogate
        [0x80], // a lone continuation byte
        [0xe2, 0x82], // a sequence cut short
        [0xf4, 0x90, 0x80, 0x80], // above U+10FFFF
      ),
      fc.string({ maxLength: 4 }),
    )
    .map(([before, bad, after]) => concat(utf8.encode(before), bad, utf8.encode(after)));

  // StreamTelemetry is not served: it is UNIMPLEMENTED before any message is read.
  const servedMethods = methods.filter((m) => m !== BridgeService.method.streamTelemetry);
  const stringFieldArb = fc
    .constantFrom(...servedMethods)
    .chain((method) =>
      fc.tuple(fc.constant(method), fc.constantFrom(...stringPaths(method.input))),
    );

  it("invalid UTF-8 in any string field of any request is INVALID_ARGUMENT, naming the message", {
    timeout,
  }, async () => {
    await fc.assert(
      fc.asyncProperty(
        protocolArb,
        stringFieldArb,
        invalidUtf8Arb,
        fc.boolean(),
        async (protocol, [method, path], bad, afterValidFields) => {
          const field = nestAt(path, bad);
          const message = afterValidFields ? concat(sampleBytes.get(method) ?? [], field) : field;
          const outcome = await rawCall(
            raw.url,
            protocol,
            method,
            bodyOf(protocol, method, message),
          );
          expect(outcome.code === undefined ? "OK" : Code[outcome.code]).toBe("InvalidArgument");
          expect(outcome.message).toMatch(
            new RegExp(`^request is not a valid ${method.input.typeName} message: `),
          );
          expectNoInternalText(outcome.message);
        },
      ),
      { ...props, numRuns: 100 },
    );
  });

  /** A message that is not quite one: garbage, cut short, wrong wire types, deep groups. */
  const malformedArb = (method: DescMethod): fc.Arbitrary<Uint8Array> => {
    const valid = sampleBytes.get(method) ?? new Uint8Array(0);
    const fieldNumbers = method.input.fields.map((f) => f.number);
    return fc.oneof(
      fc.uint8Array({ maxLength: 96 }),
      fc.nat({ max: Math.max(0, valid.length - 1) }).map((n) => valid.subarray(0, n)),
      // A known field under any wire type (6 and 7 do not exist), then anything.
      fc
        .tuple(
          fc.constantFrom(...fieldNumbers, 0, 99, 2 ** 29 - 1, 2 ** 29),
          fc.integer({ min: 0, max: 7 }),
          fc.uint8Array({ maxLength: 12 }),
        )
        .map(([field, wireType, rest]) => concat(valid, varint(field * 8 + wireType), rest)),
      // Unknown field 100 as groups nested around protobuf-es's limit or far
      // beyond, closed or left open.
      fc
        .tuple(fc.constantFrom(50, 99, 100, 101, 5_000, 100_000), fc.boolean())
        .map(([levels, closed]) => {
          const open = [0xa3, 0x06]; // field 100, wire type 3 (start group)
          const close = [0xa4, 0x06]; // field 100, wire type 4 (end group)
          const body = new Array<number[]>(levels).fill(open).flat();
          return concat(valid, body, closed ? new Array<number[]>(levels).fill(close).flat() : []);
        }),
      // Field 1 (length-delimited) promising more bytes than follow.
      fc.integer({ min: 1, max: 2 ** 31 }).map((n) => concat(valid, varint(1 * 8 + 2), varint(n))),
    );
  };

  /**
   * How a request may be framed wrongly: envelope flags and lengths, splits,
   * trailing bytes, compression. Mostly framed right, so that most runs
   * reach the message itself.
   */
  const framingArb = fc.record({
    compress: fc.oneof(
      { weight: 6, arbitrary: fc.constant("no" as const) },
      { weight: 1, arbitrary: fc.constantFrom("gzip" as const, "gzip cut short" as const) },
    ),
    // The encoding header sent; "natural" names gzip for a compressed body.
    encoding: fc.oneof(
      { weight: 6, arbitrary: fc.constant("natural") },
      { weight: 1, arbitrary: fc.constantFrom("gzip", "br", "identity", "zstd", "x-none") },
    ),
    // The first envelope's flags; "natural" sets the compressed flag for a compressed body.
    flags: fc.oneof(
      { weight: 6, arbitrary: fc.constant("natural" as const) },
      { weight: 1, arbitrary: fc.constantFrom(0, 1, 2, 0x80, 0x81, 0xff) },
      { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }) },
    ),
    // Added to the first envelope's length field.
    lengthDelta: fc.oneof(
      { weight: 6, arbitrary: fc.constant(0) },
      { weight: 1, arbitrary: fc.integer({ min: -5, max: 5 }) },
      { weight: 1, arbitrary: fc.constant(2 ** 31) },
    ),
    // The message split into envelopes at these points.
    splits: fc.oneof(
      { weight: 6, arbitrary: fc.constant<number[]>([]) },
      { weight: 1, arbitrary: fc.array(fc.nat({ max: 64 }), { minLength: 1, maxLength: 2 }) },
    ),
    trailing: fc.oneof(
      { weight: 6, arbitrary: fc.constant(new Uint8Array(0)) },
      { weight: 1, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 6 }) },
    ),
  });

  function framed(
    protocol: Protocol,
    method: DescMethod,
    message: Uint8Array,
    f: typeof framingArb extends fc.Arbitrary<infer F> ? F : never,
  ): { body: Uint8Array; headers: Record<string, string> } {
    const compressed = f.compress !== "no";
    let payload = message;
    if (compressed) {
      payload = gzipSync(message);
      if (f.compress === "gzip cut short") payload = payload.subarray(0, payload.length - 3);
    }
    const headers: Record<string, string> = {};
    const unaryConnect = protocol === "connect" && method.methodKind === "unary";
    const encoding = f.encoding === "natural" ? (compressed ? "gzip" : undefined) : f.encoding;
    if (encoding !== undefined) {
      const name = unaryConnect
        ? "content-encoding"
        : protocol === "connect"
          ? "connect-content-encoding"
          : "grpc-encoding";
      headers[name] = encoding;
    }
    const flags = f.flags === "natural" ? (compressed ? 1 : 0) : f.flags;
    if (unaryConnect) return { body: concat(payload, f.trailing), headers };
    const cuts = [...new Set(f.splits.map((n) => Math.min(n, payload.length)))].sort(
      (a, b) => a - b,
    );
    const pieces = [0, ...cuts, payload.length]
      .slice(0, -1)
      .map((from, i, all) => payload.subarray(from, all[i + 1] ?? payload.length));
    const envelopes = pieces.map((piece, i) => {
      const e = envelope(piece, i === 0 ? flags : 0);
      const declared = (piece.length + (i === 0 ? f.lengthDelta : 0)) >>> 0;
      new DataView(e.buffer).setUint32(1, declared);
      return e;
    });
    return { body: concat(...envelopes, f.trailing), headers };
  }

  it("malformed messages in well- or ill-framed requests, to every RPC", { timeout }, async () => {
    await fc.assert(
      fc.asyncProperty(
        protocolArb,
        fc.constantFrom(...methods).chain((m) => fc.tuple(fc.constant(m), malformedArb(m))),
        framingArb,
        async (protocol, [method, message], framing) => {
          const { body, headers } = framed(protocol, method, message, framing);
          expectAcceptable(await rawCall(raw.url, protocol, method, body, { headers }));
        },
      ),
      { ...props, numRuns: 150 },
    );
  });

  it.each(protocols)(
    "over %s, unary and streaming RPCs name the message they could not read",
    async (protocol) => {
      for (const method of [
        BridgeService.method.setVariable,
        BridgeService.method.watchVariables,
        BridgeService.method.executeStreamingTool,
      ]) {
        const cut = (sampleBytes.get(method) ?? new Uint8Array()).subarray(0, 3);
        const outcome = await rawCall(raw.url, protocol, method, bodyOf(protocol, method, cut));
        expect(
          `${outcome.code === undefined ? "OK" : Code[outcome.code]}: ${outcome.message}`,
        ).toBe(
          `InvalidArgument: request is not a valid ${method.input.typeName} message: premature EOF`,
        );
      }
    },
  );

  it("the server still answers", async () => {
    for (const protocol of protocols) {
      expect((await raw.client(protocol).ping({ message: "still here" })).message).toBe(
        "still here",
      );
    }
  });
});

describe("values nested deeper, or with more dimensions, than any peer accepts", () => {
  // Variable values, constraints and tool parameters are the JSON a client
  // sends; past 64 levels (or 32 tensor dimensions) it is refused as
  // INVALID_ARGUMENT, never left to exhaust the server's stack.
  let deep: RunningBridge;
  beforeAll(async () => {
    deep = await startBridge({
      ...limits,
      maxValueBytes: 1 << 20,
      tools: [
        {
          name: "echo",
          description: "Returns its argument.",
          parameters: [{ name: "x", type: "any", required: true }],
          handler: (args) => args.x ?? null,
        },
      ],
    });
  });
  afterAll(() => deep?.stop());

  const depthLimit = 64;
  const dimensionLimit = 32;
  const anyOf = (type: string, text: string) =>
    create(AnySchema, { typeUrl: TYPE_URL_PREFIX + type, value: utf8.encode(text) });
  const toolValue = (text: string) =>
    create(AnySchema, { typeUrl: STRING_VALUE_TYPE_URL, value: utf8.encode(text) });

  /** JSON nesting around the limit or far past it, or a tensor of around 32 dimensions or far more. */
  const hostileArb: fc.Arbitrary<{ text: string; depth?: number; dims?: number }> = fc.oneof(
    nestedJsonArb,
    manyDimensionsArb.map((shape) => ({
      text: JSON.stringify({ shape, data: [1] }),
      dims: shape.length,
    })),
  );
  const writeArb = fc.constantFrom(
    "SetVariable",
    "SetVariables",
    "RegisterVariable",
    "InitializeSession",
    "constraints",
  );
  type Write = typeof writeArb extends fc.Arbitrary<infer W> ? W : never;
  const typeArb = fc.constantFrom<VariableType>("float", "string", "embedding", "tensor");

  /**
   * What the refusal of `hostile`, written by `write` to a variable of
   * `type`, must say; undefined when the write is valid (a tensor within 32
   * dimensions). "constraints" writes a `shape` constraint of that many
   * dimensions, or `{"shape": <the JSON>}`.
   */
  const refusal = (
    write: Write,
    type: VariableType,
    { depth = 0, dims }: { depth?: number; dims?: number },
  ): string | undefined => {
    const tooDeep = `deeper than ${depthLimit} levels`;
    const tooManyDimensions = `at most ${dimensionLimit} dimensions`;
    if (write === "constraints") {
      if (dims === undefined) return depth + 1 > depthLimit ? tooDeep : "";
      return dims > dimensionLimit ? tooManyDimensions : "does not match required shape";
    }
    if (dims === undefined) return depth > depthLimit ? tooDeep : "";
    if (type !== "tensor") return "";
    return dims > dimensionLimit ? tooManyDimensions : undefined;
  };

  /** The outcome of `write` as "<code>: <message>", "OK: " for success. */
  async function attempt(
    c: BridgeClient,
    sessionId: string,
    write: Write,
    type: VariableType,
    name: string,
    hostile: { text: string; dims?: number },
  ): Promise<{ code: string; message: string }> {
    const value = anyOf(type, hostile.text);
    if (write === "SetVariables") {
      const res = await c.setVariables({ sessionId, updates: { [name]: value }, atomic: true });
      const code = res.errorCodes[name];
      return {
        code: res.success ? "OK" : code === undefined ? "no code" : (Code[code] ?? String(code)),
        message: res.errors[name] ?? "",
      };
    }
    const tensor = encodeValue("tensor", { shape: [1], data: [1] }).any;
    const call =
      write === "SetVariable"
        ? c.setVariable({ sessionId, variableIdentifier: name, value })
        : write === "RegisterVariable"
          ? c.registerVariable({ sessionId, name: "v", type, initialValue: value })
          : write === "InitializeSession"
            ? c.initializeSession({ initialVariables: [{ name: "v", type, initialValue: value }] })
            : c.registerVariable({
                sessionId,
                name: "v",
                type: "tensor",
                initialValue: tensor,
                constraintsJson:
                  hostile.dims === undefined
                    ? `{"shape":${hostile.text}}`
                    : JSON.stringify({ shape: new Array<number>(hostile.dims).fill(1) }),
              });
    const result = await settle<unknown>(call);
    return result.ok
      ? { code: "OK", message: "" }
      : { code: Code[result.error.code], message: result.error.rawMessage };
  }

  it("in variable values and constraints: INVALID_ARGUMENT, saying why", { timeout }, async () => {
    const initial: Partial<Record<VariableType, unknown>> = {
      float: 1,
      string: "a",
      embedding: [1],
      tensor: { shape: [1], data: [1] },
    };
    await fc.assert(
      fc.asyncProperty(
        protocolArb,
        writeArb,
        typeArb,
        hostileArb,
        async (protocol, write, type, hostile) => {
          const c = cachedClient(deep, protocol);
          const name = `${type}-variable`;
          const { sessionId } = await c.initializeSession({
            initialVariables: [
              { name, type, initialValue: encodeValue(type, initial[type] as never).any },
            ],
          });
          const { code, message } = await attempt(c, sessionId, write, type, name, hostile);
          const expected = refusal(write, type, hostile);
          if (expected === undefined) {
            expect(code).toBe("OK");
          } else {
            expect(code).toBe("InvalidArgument");
            expect(message).toContain(expected);
          }
          expectNoInternalText(message);
          await c.cleanupSession({ sessionId, force: true });
        },
      ),
      { ...props, numRuns: 80 },
    );
  });

  it("in tool parameters: refused in-band as invalid arguments past the limit, echoed within it", {
    timeout,
  }, async () => {
    await fc.assert(
      fc.asyncProperty(
        protocolArb,
        fc.boolean(),
        nestedJsonArb,
        async (protocol, streaming, { text, depth }) => {
          const c = cachedClient(deep, protocol);
          const { sessionId } = await c.initializeSession({});
          const request = { sessionId, toolName: "echo", parameters: { x: toolValue(text) } };
          let error: string | undefined;
          let result: unknown;
          if (streaming) {
            const chunks: ToolChunk[] = [];
            for await (const chunk of c.executeStreamingTool(request)) chunks.push(chunk);
            const last = chunks.at(-1);
            error = last?.metadata.error;
            if (error === undefined) result = JSON.parse(new TextDecoder().decode(last?.data));
          } else {
            const res = await c.executeTool(request);
            if (res.success) result = decodeJsonAny(res.result);
            else {
              error = res.errorMessage;
              expect(res.metadata.error_kind).toBe("invalid_arguments");
            }
          }
          if (depth > depthLimit) {
            expect(error).toBe(`parameter 'x': tool value nests deeper than ${depthLimit} levels`);
          } else {
            expect(error).toBeUndefined();
            expect(result).toEqual(JSON.parse(text));
          }
          await c.cleanupSession({ sessionId, force: true });
        },
      ),
      { ...props, numRuns: 40 },
    );
  });
});

describe("after all of it", () => {
  it("the server still answers", async () => {
    for (const protocol of protocols) {
      expect((await bridge.client(protocol).ping({ message: "still here" })).message).toBe(
        "still here",
      );
    }
  });
});
