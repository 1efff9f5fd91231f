import { PYTHON_CLASSIFIER, PYTHON_TRAIN_TOOL } from "../shared/program.ts";
import type { SparseRow, TrainedClassifier } from "./classifiers.ts";

/**
 * The classifier module a Python worker hosts. The bridge sends it the
 * training rows (the same featurization every module gets) through the
 * worker's remote tool {@link PYTHON_TRAIN_TOOL}; scikit-learn fits a
 * logistic regression there and answers with its weights, which score the
 * dev or test split here. Features on both sides: log(1 + count), each row
 * scaled to unit length.
 */

/** Calls a tool through the bridge (as any client would), with binary parameters. */
export type ToolCall = (call: {
  readonly sessionId: string;
  readonly tool: string;
  readonly args: Readonly<Record<string, string | number>>;
  readonly binary: Readonly<Record<string, Uint8Array>>;
  readonly signal?: AbortSignal;
}) => Promise<unknown>;

/** Largest count sent (one byte per count). */
const MAX_COUNT = 255;

/** Trains the Python worker's module on the rows; rejects with a readable message. */
export async function trainPythonModule(
  callTool: ToolCall,
  input: {
    readonly sessionId: string;
    readonly rows: readonly SparseRow[];
    readonly labels: readonly boolean[];
    readonly columns: number;
    readonly smoothing: number;
    readonly signal?: AbortSignal;
  },
): Promise<TrainedClassifier> {
  if (input.columns > 65_536) throw new Error("the Python module takes at most 65,536 features");
  let nnz = 0;
  for (const row of input.rows) nnz += row.cols.length;
  const indptr = new Uint32Array(input.rows.length + 1);
  const indices = new Uint16Array(nnz);
  const counts = new Uint8Array(nnz);
  let at = 0;
  input.rows.forEach((row, i) => {
    for (let j = 0; j < row.cols.length; j++) {
      indices[at] = row.cols[j] as number;
      counts[at] = Math.min(MAX_COUNT, Math.round(row.counts[j] as number));
      at++;
    }
    indptr[i + 1] = at;
  });
  const labels = Uint8Array.from(input.labels, (spam) => (spam ? 1 : 0));
  const reply = await callTool({
    sessionId: input.sessionId,
    tool: PYTHON_TRAIN_TOOL,
    args: { rows: input.rows.length, columns: input.columns, smoothing: input.smoothing },
    binary: {
      indptr: littleEndian(indptr),
      indices: littleEndian(indices),
      counts,
      labels,
    },
    ...(input.signal === undefined ? {} : { signal: input.signal }),
  });
  const { weights, bias } = checkModel(reply, input.columns);
  const w = Float64Array.from(weights);
  return {
    kind: PYTHON_CLASSIFIER,
    probability(row) {
      let norm = 0;
      let z = 0;
      for (let j = 0; j < row.cols.length; j++) {
        const x = Math.log1p(Math.min(MAX_COUNT, Math.round(row.counts[j] as number)));
        norm += x * x;
        z += x * (w[row.cols[j] as number] ?? 0);
      }
      z = norm === 0 ? bias : z / Math.sqrt(norm) + bias;
      return z >= 0 ? 1 / (1 + Math.exp(-z)) : Math.exp(z) / (1 + Math.exp(z));
    },
    weight: (col) => w[col] ?? 0,
  };
}

/** The typed array's bytes in little-endian order (what the worker reads). */
function littleEndian(array: Uint16Array | Uint32Array): Uint8Array {
  const bytes = new Uint8Array(array.byteLength);
  const view = new DataView(bytes.buffer);
  const size = array.BYTES_PER_ELEMENT;
  for (let i = 0; i < array.length; i++) {
    if (size === 2) view.setUint16(i * 2, array[i] as number, true);
    else view.setUint32(i * 4, array[i] as number, true);
  }
  return bytes;
}

function checkModel(reply: unknown, columns: number): { weights: number[]; bias: number } {
  const r = reply as { weights?: unknown; bias?: unknown } | null;
  if (
    r === null ||
    typeof r !== "object" ||
    !Array.isArray(r.weights) ||
    r.weights.length !== columns ||
    !r.weights.every((x) => typeof x === "number" && Number.isFinite(x)) ||
    typeof r.bias !== "number" ||
    !Number.isFinite(r.bias)
  ) {
    throw new Error(
      `the Python worker's ${PYTHON_TRAIN_TOOL} answered something other than ${columns} weights and a bias`,
    );
  }
  return { weights: r.weights as number[], bias: r.bias };
}
