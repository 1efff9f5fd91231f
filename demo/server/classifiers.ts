import type { BridgeClassifier, Classifier } from "../shared/program.ts";

/**
 * The classifier modules of the spam program. Each trains on sparse rows
 * (column indexes with counts) and gives every row a spam probability; the
 * program's threshold turns that into a decision.
 */

/** A document as selected vocabulary columns and their counts. */
export interface SparseRow {
  readonly cols: Int32Array;
  readonly counts: Float32Array;
}

/** A trained classifier. */
export interface TrainedClassifier {
  readonly kind: Classifier;
  /** P(spam) of a row, in [0, 1]. */
  probability(row: SparseRow): number;
  /** Per-column contribution towards spam (> 0) or ham (< 0), for explanations. */
  weight(col: number): number;
}

/** How to train a module. */
export interface TrainOptions {
  /** Number of vocabulary columns. */
  readonly columns: number;
  /** Prior strength (see the `smoothing` variable). */
  readonly smoothing: number;
  /** Called between epochs / passes; awaiting it lets the server breathe. */
  readonly onProgress?: (done: number, total: number) => Promise<void>;
  readonly signal?: AbortSignal;
}

/** Trains the named module. */
export function trainClassifier(
  kind: BridgeClassifier,
  rows: readonly SparseRow[],
  labels: readonly boolean[],
  options: TrainOptions,
): Promise<TrainedClassifier> {
  switch (kind) {
    case "NaiveBayes":
      return Promise.resolve(trainNaiveBayes(rows, labels, options));
    case "LogisticRegression":
      return trainLogisticRegression(rows, labels, options);
    case "KeywordBaseline":
      return Promise.resolve(trainKeywordBaseline(rows, labels, options));
  }
}

const sigmoid = (z: number) => (z >= 0 ? 1 / (1 + Math.exp(-z)) : Math.exp(z) / (1 + Math.exp(z)));

/**
 * Multinomial Naive Bayes with additive (Lidstone) smoothing α: P(w|c) =
 * (count(w,c) + α) / (total(c) + α·V).
 */
function trainNaiveBayes(
  rows: readonly SparseRow[],
  labels: readonly boolean[],
  { columns, smoothing }: TrainOptions,
): TrainedClassifier {
  const spam = new Float64Array(columns);
  const ham = new Float64Array(columns);
  let spamTotal = 0;
  let hamTotal = 0;
  let spamDocs = 0;
  rows.forEach((row, i) => {
    const target = labels[i] ? spam : ham;
    let sum = 0;
    for (let j = 0; j < row.cols.length; j++) {
      const c = row.counts[j] as number;
      const k = row.cols[j] as number;
      target[k] = (target[k] as number) + c;
      sum += c;
    }
    if (labels[i]) {
      spamTotal += sum;
      spamDocs++;
    } else hamTotal += sum;
  });
  const alpha = smoothing;
  const logRatio = new Float64Array(columns);
  const spamDen = Math.log(spamTotal + alpha * columns);
  const hamDen = Math.log(hamTotal + alpha * columns);
  for (let k = 0; k < columns; k++) {
    logRatio[k] =
      Math.log((spam[k] as number) + alpha) -
      spamDen -
      (Math.log((ham[k] as number) + alpha) - hamDen);
  }
  const prior = Math.log((spamDocs + 1) / (rows.length - spamDocs + 1));
  return {
    kind: "NaiveBayes",
    probability(row) {
      let z = prior;
      for (let j = 0; j < row.cols.length; j++)
        z += (row.counts[j] as number) * (logRatio[row.cols[j] as number] as number);
      return sigmoid(z);
    },
    weight: (col) => logRatio[col] ?? 0,
  };
}

/**
 * L2-regularized logistic regression on binary presence features scaled to
 * unit length, trained by AdaGrad SGD (sparse updates, λ = α/1000) over a
 * fixed number of epochs in a seeded order: the same data gives the same
 * model.
 */
async function trainLogisticRegression(
  rows: readonly SparseRow[],
  labels: readonly boolean[],
  { columns, smoothing, onProgress, signal }: TrainOptions,
): Promise<TrainedClassifier> {
  const EPOCHS = 12;
  const RATE = 0.5;
  const lambda = smoothing / 1000;
  const w = new Float64Array(columns);
  const g2 = new Float64Array(columns).fill(1e-8);
  let bias = 0;
  let biasG2 = 1e-8;
  const order = rows.map((_, i) => i);
  let seed = 0x9e3779b9;
  const random = () => {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    return seed / 4294967296;
  };
  const scale = rows.map((row) => (row.cols.length > 0 ? 1 / Math.sqrt(row.cols.length) : 0));
  for (let epoch = 0; epoch < EPOCHS; epoch++) {
    signal?.throwIfAborted();
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [order[i], order[j]] = [order[j] as number, order[i] as number];
    }
    for (const i of order) {
      const row = rows[i] as SparseRow;
      const x = scale[i] as number;
      let z = bias;
      for (let j = 0; j < row.cols.length; j++) z += (w[row.cols[j] as number] as number) * x;
      const error = sigmoid(z) - (labels[i] ? 1 : 0);
      for (let j = 0; j < row.cols.length; j++) {
        const k = row.cols[j] as number;
        const grad = error * x + lambda * (w[k] as number);
        const acc = (g2[k] as number) + grad * grad;
        g2[k] = acc;
        w[k] = (w[k] as number) - (RATE * grad) / Math.sqrt(acc);
      }
      biasG2 += error * error;
      bias -= (RATE * error) / Math.sqrt(biasG2);
    }
    await onProgress?.(epoch + 1, EPOCHS);
  }
  return {
    kind: "LogisticRegression",
    probability(row) {
      const x = row.cols.length > 0 ? 1 / Math.sqrt(row.cols.length) : 0;
      let z = bias;
      for (let j = 0; j < row.cols.length; j++) z += (w[row.cols[j] as number] as number) * x;
      return sigmoid(z);
    },
    weight: (col) => w[col] ?? 0,
  };
}

/** How many keyword rules the baseline keeps. */
export const KEYWORD_RULES = 100;

/**
 * A keyword-rule baseline: the most spam-indicative features (by smoothed
 * log-odds of document frequency, seen in at least 3 spam messages) each
 * become a rule "contains k → spam with probability p_k"; a message's spam
 * probability is the noisy-OR of the rules it triggers (0 with none).
 */
function trainKeywordBaseline(
  rows: readonly SparseRow[],
  labels: readonly boolean[],
  { columns, smoothing }: TrainOptions,
): TrainedClassifier {
  const spamDf = new Float64Array(columns);
  const hamDf = new Float64Array(columns);
  let spamDocs = 0;
  rows.forEach((row, i) => {
    const target = labels[i] ? spamDf : hamDf;
    if (labels[i]) spamDocs++;
    for (let j = 0; j < row.cols.length; j++) {
      const k = row.cols[j] as number;
      target[k] = (target[k] as number) + 1;
    }
  });
  const hamDocs = rows.length - spamDocs;
  const alpha = smoothing;
  const odds = new Float64Array(columns);
  for (let k = 0; k < columns; k++) {
    odds[k] =
      Math.log(((spamDf[k] as number) + alpha) / (spamDocs + 2 * alpha)) -
      Math.log(((hamDf[k] as number) + alpha) / (hamDocs + 2 * alpha));
  }
  const candidates = [...odds.keys()]
    .filter((k) => (spamDf[k] as number) >= 3 && (odds[k] as number) > 0)
    .sort((a, b) => (odds[b] as number) - (odds[a] as number) || a - b)
    .slice(0, KEYWORD_RULES);
  // P(spam | keyword present), smoothed.
  const ruleP = new Float64Array(columns);
  for (const k of candidates) {
    ruleP[k] =
      ((spamDf[k] as number) + alpha) / ((spamDf[k] as number) + (hamDf[k] as number) + 2 * alpha);
  }
  return {
    kind: "KeywordBaseline",
    probability(row) {
      let notSpam = 1;
      for (let j = 0; j < row.cols.length; j++)
        notSpam *= 1 - (ruleP[row.cols[j] as number] as number);
      return 1 - notSpam;
    },
    weight: (col) => ((ruleP[col] as number) > 0 ? (odds[col] as number) : 0),
  };
}
