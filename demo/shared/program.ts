/**
 * The spam-filter "program" of the demo, DSPy style: a pipeline of modules
 * whose behaviour is set by session variables. Shared by the browser (which
 * binds the variables and tunes them) and the bridge tools (which read them
 * from the session and run the program). Runtime-neutral.
 */

/** Parts of an e-mail a feature template can name. */
export const TEMPLATE_FIELDS = ["subject", "from", "body", "headers"] as const;
export type TemplateField = (typeof TEMPLATE_FIELDS)[number];

/** The classifier modules the bridge runs itself (demo/server/classifiers.ts). */
export const BRIDGE_CLASSIFIERS = ["NaiveBayes", "LogisticRegression", "KeywordBaseline"] as const;
export type BridgeClassifier = (typeof BRIDGE_CLASSIFIERS)[number];
/**
 * The module a Python worker hosts (demo/python/spam_worker.py, scikit-learn):
 * usable while that worker has registered {@link PYTHON_TRAIN_TOOL}.
 */
export const PYTHON_CLASSIFIER = "sklearn.LogisticRegression";
/** Every classifier module the `classifier` variable allows. */
export const CLASSIFIERS = [...BRIDGE_CLASSIFIERS, PYTHON_CLASSIFIER] as const;
export type Classifier = (typeof CLASSIFIERS)[number];
/** The remote tool the Python worker registers: it trains its module on the rows it is sent. */
export const PYTHON_TRAIN_TOOL = "py_sklearn_train";

export const NGRAMS = ["unigrams", "bigrams", "unigrams+bigrams"] as const;
export type Ngrams = (typeof NGRAMS)[number];

/**
 * Text made only of known `{field}` placeholders and brace-free text, with at
 * least one placeholder. RE2 syntax: the bridge checks it in linear time.
 */
export const TEMPLATE_PATTERN = `^([^{}]*\\{(${TEMPLATE_FIELDS.join("|")})\\})+[^{}]*$`;

/**
 * The program's variables: type, constraints, initial value and what each
 * one does. The initial program is a plausible first attempt (Naive Bayes
 * on the subject line only) that the optimizer can improve on.
 */
export const programSchema = {
  classifier: {
    type: "module",
    default: "NaiveBayes",
    constraints: { allowed_modules: [...CLASSIFIERS] },
    metadata: { description: "Which classifier module scores a message." },
  },
  feature_template: {
    type: "string",
    default: "{subject}",
    constraints: { min_length: 6, max_length: 80, pattern: TEMPLATE_PATTERN },
    metadata: {
      description:
        "Which parts of the e-mail the program reads, in order: {subject}, {from}, {body}, {headers}. Repeat a part to weigh it more.",
      hint: "Name at least one part as {subject}, {from}, {body} or {headers}; other text may not contain braces.",
    },
  },
  lowercase: {
    type: "boolean",
    default: true,
    metadata: { description: "Fold case before counting words ('FREE' = 'free')." },
  },
  ngrams: {
    type: "choice",
    default: "unigrams",
    constraints: { choices: [...NGRAMS] },
    metadata: { description: "Single words, word pairs, or both." },
  },
  vocab_size: {
    type: "integer",
    default: 500,
    constraints: { min: 20, max: 50_000 },
    metadata: { description: "Keep the N most frequent features of the training split." },
  },
  smoothing: {
    type: "float",
    default: 1,
    constraints: { min: 0.01, max: 10 },
    metadata: {
      description:
        "Prior strength: Naive Bayes' additive α, the keyword list's log-odds α, logistic regression's L2 penalty (α/1000).",
    },
  },
  threshold: {
    type: "float",
    default: 0.5,
    constraints: { min: 0.05, max: 0.95 },
    metadata: { description: "Call a message spam when its spam probability reaches this." },
  },
} as const;

/** Names of the program's variables, in display order. */
export type ProgramVariable = keyof typeof programSchema;
export const PROGRAM_VARIABLES = Object.keys(programSchema) as ProgramVariable[];

/** One configuration of the program. */
export interface ProgramConfig {
  readonly classifier: Classifier;
  readonly feature_template: string;
  readonly lowercase: boolean;
  readonly ngrams: Ngrams;
  readonly vocab_size: number;
  readonly smoothing: number;
  readonly threshold: number;
}

/** The initial configuration (the schema's defaults). */
export const initialConfig: ProgramConfig = {
  classifier: programSchema.classifier.default,
  feature_template: programSchema.feature_template.default,
  lowercase: programSchema.lowercase.default,
  ngrams: programSchema.ngrams.default,
  vocab_size: programSchema.vocab_size.default,
  smoothing: programSchema.smoothing.default,
  threshold: programSchema.threshold.default,
};

/**
 * Checks plain values (e.g. read from the session) against the shapes a
 * configuration needs. The bridge has already validated them against the
 * constraints; this guards against a variable registered differently.
 */
export function toProgramConfig(values: Readonly<Record<string, unknown>>): ProgramConfig {
  const pick = <T>(name: ProgramVariable, ok: (v: unknown) => v is T): T => {
    const v = values[name];
    if (!ok(v)) {
      throw new Error(
        v === undefined
          ? `variable '${name}' is missing`
          : `variable '${name}' cannot drive the program: got ${typeof v === "number" ? String(v) : JSON.stringify(v)}`,
      );
    }
    return v;
  };
  const isOneOf =
    <T extends string>(list: readonly T[]) =>
    (v: unknown): v is T =>
      typeof v === "string" && (list as readonly string[]).includes(v);
  const isNumber = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);
  return {
    classifier: pick("classifier", isOneOf(CLASSIFIERS)),
    feature_template: pick("feature_template", (v): v is string => typeof v === "string"),
    lowercase: pick("lowercase", (v): v is boolean => typeof v === "boolean"),
    ngrams: pick("ngrams", isOneOf(NGRAMS)),
    vocab_size: pick("vocab_size", isNumber),
    smoothing: pick("smoothing", isNumber),
    threshold: pick("threshold", isNumber),
  };
}

/** A template split into literal text and field references. */
export type TemplateSegment =
  | { readonly kind: "text"; readonly text: string }
  | { readonly kind: "field"; readonly field: TemplateField };

/** Parses a feature template; throws with a readable message when it names an unknown part. */
export function parseTemplate(template: string): TemplateSegment[] {
  const segments: TemplateSegment[] = [];
  const re = /\{([^{}]*)\}/g;
  let last = 0;
  for (let m = re.exec(template); m !== null; m = re.exec(template)) {
    if (m.index > last) segments.push({ kind: "text", text: template.slice(last, m.index) });
    const name = m[1] ?? "";
    if (!(TEMPLATE_FIELDS as readonly string[]).includes(name)) {
      throw new Error(
        `feature template names an unknown part {${name}}; use ${TEMPLATE_FIELDS.map((f) => `{${f}}`).join(", ")}`,
      );
    }
    segments.push({ kind: "field", field: name as TemplateField });
    last = m.index + m[0].length;
  }
  if (last < template.length) segments.push({ kind: "text", text: template.slice(last) });
  return segments;
}

/** Metrics of one evaluation, on the spam class. */
export interface Metrics {
  readonly f1: number;
  readonly precision: number;
  readonly recall: number;
  readonly accuracy: number;
  readonly tp: number;
  readonly fp: number;
  readonly fn: number;
  readonly tn: number;
}

/** A progress chunk of the `spam_evaluate` tool. */
export interface EvaluationProgress {
  readonly kind: "progress";
  readonly stage: "load" | "features" | "train" | "score";
  readonly done: number;
  readonly total: number;
  readonly message: string;
}

/** The final chunk of the `spam_evaluate` tool. */
export interface EvaluationResult {
  readonly kind: "result";
  readonly split: "dev" | "test";
  readonly config: ProgramConfig;
  /** Versions of the variables the evaluation read, by name. */
  readonly versions: Readonly<Record<string, number>>;
  readonly metrics: Metrics;
  readonly trainSize: number;
  readonly evalSize: number;
  /** Features actually used (≤ vocab_size). */
  readonly features: number;
  readonly ms: number;
  /** Served from the evaluation cache (the same configuration ran before). */
  readonly cached: boolean;
  /** Where the module was trained: on the bridge, or by the Python worker. */
  readonly runtime: Runtime;
}

/** Where a module runs. */
export type Runtime = "bridge" | "python";

/** Name of the evaluation tool registered by the demo stack. */
export const EVALUATE_TOOL = "spam_evaluate";
/** Name of the dataset summary tool. */
export const DATASET_TOOL = "spam_dataset";
/** Name of the single-message classification tool. */
export const CLASSIFY_TOOL = "spam_classify";
