import {
  BRIDGE_CLASSIFIERS,
  type Classifier,
  NGRAMS,
  type ProgramConfig,
  programSchema,
} from "../shared/program.ts";

/**
 * The optimizer's proposals: random search with local refinement. The first
 * third of the trials (at least one) sample the space at random; later
 * trials mostly mutate the best configuration so far (one or two knobs),
 * with an occasional random restart. Each available classifier module gets
 * one of the first trials, so a module (the Python worker's too) is never
 * left untried. Seeded, so a run can be repeated.
 */

/** Feature templates the optimizer tries (any template a person types also works). */
export const TEMPLATE_CANDIDATES = [
  "{subject}",
  "{body}",
  "{subject} {body}",
  "{subject} {subject} {body}",
  "{from} {subject} {body}",
  "{headers} {subject} {body}",
] as const;

const VOCAB = { min: 100, max: 20_000 } as const;
const SMOOTHING = programSchema.smoothing.constraints;
const THRESHOLD = { min: 0.1, max: 0.9 } as const;

/** A seeded random source (mulberry32). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Where the optimizer looks next. */
export interface SearchSpace {
  /** The next configuration to try, given the best so far. */
  propose(trial: number, trials: number, best: ProgramConfig | undefined): ProgramConfig;
  /** Stops proposing a module (e.g. the Python worker's, after it failed). */
  drop(classifier: Classifier): void;
}

/** Creates the search over the program's variables, with the classifier modules available. */
export function createSearchSpace(
  seed: number,
  classifiers: readonly Classifier[] = BRIDGE_CLASSIFIERS,
): SearchSpace {
  const random = seededRandom(seed);
  const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)] as T;
  let CLASSIFIERS: readonly Classifier[] =
    classifiers.length > 0 ? classifiers : BRIDGE_CLASSIFIERS;
  // Every module once, early, in a seeded order.
  const firstLook = [...CLASSIFIERS].sort(() => random() - 0.5);
  const logUniform = (min: number, max: number) =>
    Math.exp(Math.log(min) + random() * (Math.log(max) - Math.log(min)));
  const round = (n: number, digits: number) => Number(n.toFixed(digits));

  const sample = (): ProgramConfig => ({
    classifier: pick(CLASSIFIERS),
    feature_template: pick(TEMPLATE_CANDIDATES),
    lowercase: random() < 0.5,
    ngrams: pick(NGRAMS),
    vocab_size: Math.round(logUniform(VOCAB.min, VOCAB.max)),
    smoothing: round(logUniform(SMOOTHING.min, SMOOTHING.max), 3),
    threshold: round(THRESHOLD.min + random() * (THRESHOLD.max - THRESHOLD.min), 2),
  });

  const other = <T>(list: readonly T[], current: T): T => {
    const rest = list.filter((x) => x !== current);
    return rest.length === 0 ? current : pick(rest);
  };
  const clamp = (n: number, min: number, max: number) => Math.min(max, Math.max(min, n));

  const mutate = (base: ProgramConfig): ProgramConfig => {
    const next: { -readonly [K in keyof ProgramConfig]: ProgramConfig[K] } = { ...base };
    const knobs = 1 + Math.floor(random() * 2);
    for (let i = 0; i < knobs; i++) {
      switch (Math.floor(random() * 7)) {
        case 0:
          next.classifier = other(CLASSIFIERS, next.classifier);
          break;
        case 1:
          next.feature_template = other(
            TEMPLATE_CANDIDATES as readonly string[],
            next.feature_template,
          );
          break;
        case 2:
          next.lowercase = !next.lowercase;
          break;
        case 3:
          next.ngrams = other(NGRAMS, next.ngrams);
          break;
        case 4:
          next.vocab_size = Math.round(
            clamp(next.vocab_size * Math.exp((random() - 0.5) * 2), VOCAB.min, VOCAB.max),
          );
          break;
        case 5:
          next.smoothing = round(
            clamp(next.smoothing * Math.exp((random() - 0.5) * 3), SMOOTHING.min, SMOOTHING.max),
            3,
          );
          break;
        default:
          next.threshold = round(
            clamp(next.threshold + (random() - 0.5) * 0.3, THRESHOLD.min, THRESHOLD.max),
            2,
          );
      }
    }
    return next;
  };

  return {
    propose(trial, trials, best) {
      const exploring = trial <= Math.max(1, Math.ceil(trials / 3));
      const module = firstLook[trial - 1];
      if (module !== undefined && CLASSIFIERS.includes(module)) {
        return { ...sample(), classifier: module };
      }
      if (best === undefined || exploring || random() < 0.2) return sample();
      const next = mutate(best);
      return CLASSIFIERS.includes(next.classifier)
        ? next
        : { ...next, classifier: pick(CLASSIFIERS) };
    },
    drop(classifier) {
      const rest = CLASSIFIERS.filter((c) => c !== classifier);
      if (rest.length > 0) CLASSIFIERS = rest;
    },
  };
}
