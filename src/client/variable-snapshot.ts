import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Variable } from "../gen/snakepit/bridge/bridge_pb.js";
import {
  type Constraints,
  decodeValue,
  isVariableType,
  parseConstraints,
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
}

// Constraint sets repeat across variables and snapshots; parse each once.
const parsed = new Map<string, Constraints>();

/** The parsed constraints of a snapshot, for local validation. */
export function constraintsOf(type: VariableType, json: string): Constraints {
  const key = `${type}\u0000${json}`;
  let constraints = parsed.get(key);
  if (constraints === undefined) {
    constraints = parseConstraints(type, json);
    if (parsed.size > 1000) parsed.clear();
    parsed.set(key, constraints);
  }
  return constraints;
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
  const constraints = constraintsOf(type, message.constraintsJson);
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
