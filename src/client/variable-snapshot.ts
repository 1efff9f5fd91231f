import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Variable } from "../gen/snakepit/bridge/bridge_pb.js";
import {
  type Constraints,
  constraintsFromJson,
  decodeValue,
  isVariableType,
  type VariableType,
  type VariableValue,
  validateValue,
} from "../values/index.js";

/** A variable as the client sees it: an immutable snapshot at one version. */
export interface VariableSnapshot<V extends VariableValue = VariableValue> {
  readonly id: string;
  readonly name: string;
  readonly type: VariableType;
  readonly value: V;
  /** Grows by exactly 1 with every successful write. */
  readonly version: number;
  /** The constraints the server enforces, e.g. `{ min: 0, max: 2 }`. */
  readonly constraints: Readonly<Record<string, unknown>>;
  readonly metadata: Readonly<Record<string, string>>;
  /** Epoch milliseconds of the last write. */
  readonly updatedAt: number;
  /** The optimizer holding the variable's optimization lock, if any. */
  readonly lockedBy: string | undefined;
  /**
   * True on an optimistic snapshot: `value` is a write of this context the
   * server has not answered yet, every other field is the confirmed
   * version's (see `peek(name, { pending: true })`). Absent otherwise.
   */
  readonly pending?: true;
}

/** A cached variable and how much it can be trusted. */
export interface Peeked<V extends VariableValue = VariableValue> {
  /**
   * The confirmed snapshot, or with `{ pending: true }` the optimistic one
   * when a write of it is pending (its `pending` field is then true).
   */
  readonly snapshot: VariableSnapshot<V>;
  /** Served from persistence and not revalidated yet. */
  readonly possiblyStale: boolean;
}

/** Options of {@link SessionContext.peek}. */
export interface PeekOptions {
  /** Show the newest pending write's value, if any (default: confirmed only). */
  readonly pending?: boolean;
}

/** A snapshot together with the wire message it came from. */
export interface DecodedVariable {
  readonly snapshot: VariableSnapshot;
  /** Kept for persistence and tab sharing: re-encoding is then exact. */
  readonly message: Variable;
  readonly constraints: Constraints;
}

/** Decodes a wire Variable. Fails with INTERNAL when the server sent garbage. */
export function decodeVariable(message: Variable): DecodedVariable {
  if (!isVariableType(message.type)) {
    throw new ConnectError(
      `server sent variable '${message.name}' with unknown type '${message.type}'`,
      Code.Internal,
    );
  }
  const type = message.type;
  const raw = decodeValue(
    message.value,
    message.binaryValue.length > 0 ? message.binaryValue : undefined,
  ).value;
  const constraints = constraintsFromJson(type, message.constraintsJson);
  const status = message.optimizationStatus;
  return {
    message,
    constraints,
    snapshot: {
      id: message.id,
      name: message.name,
      type,
      value: validateValue(type, raw),
      version: message.version,
      constraints: constraints.raw,
      metadata: message.metadata,
      updatedAt: message.lastUpdatedAt === undefined ? 0 : timestampMs(message.lastUpdatedAt),
      lockedBy: status?.optimizing === true ? status.optimizerId : undefined,
    },
  };
}
