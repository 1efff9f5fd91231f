import {
  type EvaluationProgress,
  type Metrics,
  type ProgramConfig,
  PYTHON_CLASSIFIER,
  type Runtime,
  type TemplateField,
} from "../shared/program.ts";
import { type SparseRow, type TrainedClassifier, trainClassifier } from "./classifiers.ts";
import { type ToolCall, trainPythonModule } from "./python-module.ts";
import { loadSpamCorpus, type SpamCorpus } from "./spam-corpus.ts";
import { createFeatureStore, type FeatureStore, type Featurized } from "./text-features.ts";

/**
 * Runs the spam program for real: featurize the corpus under the
 * configuration, train the chosen module on the training split, score the
 * dev (or test) split. Trained models are cached by everything but the
 * threshold (which only moves the decision), so a threshold-only change
 * costs one scoring pass.
 */

/** What one evaluation produced. */
export interface Evaluation {
  readonly metrics: Metrics;
  readonly trainSize: number;
  readonly evalSize: number;
  readonly features: number;
  readonly ms: number;
  readonly runtime: Runtime;
}

/** A trained program, ready to score messages. */
interface TrainedProgram {
  readonly featurized: Featurized;
  /** Feature id → vocabulary column. */
  readonly columns: Map<number, number>;
  readonly classifier: TrainedClassifier;
}

/** The spam program, runnable on any configuration. */
export interface SpamProgram {
  /** The corpus (loaded on first use). */
  corpus(onProgress?: (p: EvaluationProgress) => Promise<void>): Promise<SpamCorpus>;
  evaluate(
    config: ProgramConfig,
    split: "dev" | "test",
    options?: {
      onProgress?: (p: EvaluationProgress) => Promise<void>;
      signal?: AbortSignal;
      /** The session the evaluation runs for (the Python module is called through it). */
      sessionId?: string;
    },
  ): Promise<Evaluation>;
  /** Spam probability of one message, with the features that weighed most. */
  classify(
    config: ProgramConfig,
    parts: Readonly<Record<TemplateField, string>>,
    sessionId?: string,
  ): Promise<{
    probability: number;
    spam: boolean;
    evidence: { feature: string; weight: number }[];
  }>;
}

/**
 * Creates the program runner; nothing is loaded until first use. With
 * `callTool`, the Python worker's module can be trained through the bridge.
 */
export function createSpamProgram(options: { callTool?: ToolCall } = {}): SpamProgram {
  let store: FeatureStore | undefined;
  /** Trainings by model key, with the signal of the caller that started each. */
  const models = new Map<string, { promise: Promise<TrainedProgram>; signal?: AbortSignal }>();
  const MAX_MODELS = 8;

  const corpus = async (onProgress?: (p: EvaluationProgress) => Promise<void>) => {
    let last = 0;
    const loaded = await loadSpamCorpus((done, total) => {
      last = done;
      void onProgress?.({
        kind: "progress",
        stage: "load",
        done,
        total,
        message: `Reading the SpamAssassin corpus: ${done} of ${total} messages`,
      });
    });
    if (last === 0 && onProgress !== undefined) {
      // Already loaded: say so once, so progress always starts somewhere.
      await onProgress({
        kind: "progress",
        stage: "load",
        done: loaded.messages.length,
        total: loaded.messages.length,
        message: `Corpus ready: ${loaded.messages.length} messages`,
      });
    }
    store ??= createFeatureStore(loaded);
    return loaded;
  };

  const modelKey = (c: ProgramConfig) =>
    JSON.stringify([
      c.classifier,
      c.feature_template,
      c.lowercase,
      c.ngrams,
      c.vocab_size,
      c.smoothing,
    ]);

  const rowsOf = (
    featurized: Featurized,
    columns: Map<number, number>,
    docs: readonly number[],
  ): SparseRow[] =>
    docs.map((d) => {
      const from = featurized.offsets[d] as number;
      const to = featurized.offsets[d + 1] as number;
      const cols: number[] = [];
      const counts: number[] = [];
      for (let i = from; i < to; i++) {
        const col = columns.get(featurized.features[i] as number);
        if (col !== undefined) {
          cols.push(col);
          counts.push(featurized.counts[i] as number);
        }
      }
      return { cols: Int32Array.from(cols), counts: Float32Array.from(counts) };
    });

  const train = (
    config: ProgramConfig,
    loaded: SpamCorpus,
    onProgress?: (p: EvaluationProgress) => Promise<void>,
    signal?: AbortSignal,
    sessionId?: string,
  ): Promise<TrainedProgram> => {
    const key = modelKey(config);
    let entry = models.get(key);
    if (entry === undefined) {
      const promise = (async () => {
        const features = store as FeatureStore;
        const featurized = await features.featurize(
          config.feature_template,
          config.lowercase,
          config.ngrams,
          async (done, total) => {
            signal?.throwIfAborted();
            await onProgress?.({
              kind: "progress",
              stage: "features",
              done,
              total,
              message: `Tokenizing ${config.feature_template}: ${done} of ${total} messages`,
            });
            await breathe();
          },
        );
        const columns = new Map<number, number>();
        const k = Math.min(config.vocab_size, featurized.ranking.length);
        for (let i = 0; i < k; i++) columns.set(featurized.ranking[i] as number, i);
        const trainDocs = loaded.indexes.train;
        const rows = rowsOf(featurized, columns, trainDocs);
        const labels = trainDocs.map((d) => loaded.messages[d]?.spam === true);
        await onProgress?.({
          kind: "progress",
          stage: "train",
          done: 0,
          total: 1,
          message: `Training ${config.classifier} on ${rows.length} messages × ${k} features${config.classifier === PYTHON_CLASSIFIER ? " in the Python worker" : ""}`,
        });
        if (config.classifier === PYTHON_CLASSIFIER) {
          if (options.callTool === undefined || sessionId === undefined) {
            throw new Error(
              `${PYTHON_CLASSIFIER} runs in the Python worker, which this bridge cannot call`,
            );
          }
          const classifier = await trainPythonModule(options.callTool, {
            sessionId,
            rows,
            labels,
            columns: k,
            smoothing: config.smoothing,
            ...(signal === undefined ? {} : { signal }),
          });
          return { featurized, columns, classifier };
        }
        const classifier = await trainClassifier(config.classifier, rows, labels, {
          columns: k,
          smoothing: config.smoothing,
          ...(signal === undefined ? {} : { signal }),
          onProgress: async (done, total) => {
            await onProgress?.({
              kind: "progress",
              stage: "train",
              done,
              total,
              message: `Training ${config.classifier}: epoch ${done} of ${total}`,
            });
            await breathe();
          },
        });
        return { featurized, columns, classifier };
      })();
      entry = signal === undefined ? { promise } : { promise, signal };
      models.set(key, entry);
      promise.catch(() => models.delete(key));
      while (models.size > MAX_MODELS) models.delete(models.keys().next().value as string);
    }
    const started = entry;
    // A training cancelled by the caller who started it is not this
    // caller's failure: train again.
    return started.promise.catch((error: unknown) => {
      if (started.signal?.aborted === true && signal?.aborted !== true) {
        return train(config, loaded, onProgress, signal, sessionId);
      }
      throw error;
    });
  };

  return {
    corpus,

    async evaluate(config, split, { onProgress, signal, sessionId } = {}) {
      const started = performance.now();
      const loaded = await corpus(onProgress);
      signal?.throwIfAborted();
      const model = await train(config, loaded, onProgress, signal, sessionId);
      signal?.throwIfAborted();
      const docs = loaded.indexes[split];
      const rows = rowsOf(model.featurized, model.columns, docs);
      let tp = 0;
      let fp = 0;
      let fn = 0;
      let tn = 0;
      for (let i = 0; i < rows.length; i++) {
        const spam = model.classifier.probability(rows[i] as SparseRow) >= config.threshold;
        const truth = loaded.messages[docs[i] as number]?.spam === true;
        if (spam && truth) tp++;
        else if (spam) fp++;
        else if (truth) fn++;
        else tn++;
        if (i % 500 === 499) {
          await onProgress?.({
            kind: "progress",
            stage: "score",
            done: i + 1,
            total: rows.length,
            message: `Scoring the ${split} split: ${i + 1} of ${rows.length}`,
          });
        }
      }
      const precision = tp + fp === 0 ? 0 : tp / (tp + fp);
      const recall = tp + fn === 0 ? 0 : tp / (tp + fn);
      return {
        metrics: {
          f1: precision + recall === 0 ? 0 : (2 * precision * recall) / (precision + recall),
          precision,
          recall,
          accuracy: (tp + tn) / Math.max(1, rows.length),
          tp,
          fp,
          fn,
          tn,
        },
        trainSize: loaded.indexes.train.length,
        evalSize: docs.length,
        features: model.columns.size,
        ms: Math.round(performance.now() - started),
        runtime: config.classifier === PYTHON_CLASSIFIER ? "python" : "bridge",
      };
    },

    async classify(config, parts, sessionId) {
      const loaded = await corpus();
      const model = await train(config, loaded, undefined, undefined, sessionId);
      const bag = (store as FeatureStore).featuresOf(
        model.featurized,
        parts,
        config.feature_template,
        config.lowercase,
        config.ngrams,
      );
      const cols: number[] = [];
      const counts: number[] = [];
      const evidence: { feature: string; weight: number }[] = [];
      for (const [f, c] of bag) {
        const col = model.columns.get(f);
        if (col === undefined) continue;
        cols.push(col);
        counts.push(c);
        const weight = model.classifier.weight(col) * (config.classifier === "NaiveBayes" ? c : 1);
        if (weight !== 0) evidence.push({ feature: model.featurized.name(f), weight });
      }
      const probability = model.classifier.probability({
        cols: Int32Array.from(cols),
        counts: Float32Array.from(counts),
      });
      evidence.sort((a, b) => Math.abs(b.weight) - Math.abs(a.weight));
      return { probability, spam: probability >= config.threshold, evidence: evidence.slice(0, 8) };
    },
  };
}

/** Yields to the event loop so the bridge keeps serving (and streaming) during long work. */
function breathe(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
