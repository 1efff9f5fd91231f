import {
  type Ngrams,
  parseTemplate,
  TEMPLATE_FIELDS,
  type TemplateField,
} from "../shared/program.ts";
import type { SpamCorpus } from "./spam-corpus.ts";

/**
 * Bag-of-n-gram features of the corpus under a feature template, with the
 * work that repeats across trials cached:
 *
 * - each e-mail part is tokenized once (case kept) into interned token ids;
 * - lower-casing maps ids through a table instead of re-reading text;
 * - a featurization (template × lowercase × n-grams) is kept, with its
 *   features ranked by training-split document frequency, so a trial that
 *   only changes the vocabulary size, smoothing or threshold costs a lookup.
 */

/** Words: letters, digits and the currency / exclamation marks spam loves. */
const TOKEN = /[A-Za-z0-9\u00C0-\u024F$€£!]+/g;
/** Longer runs are encoded blobs and ids, not words. */
const MAX_TOKEN = 24;

/** Documents as sparse feature counts (CSR), plus the training ranking. */
export interface Featurized {
  readonly key: string;
  /** `offsets[d]..offsets[d+1]` index `features`/`counts` of document d. */
  readonly offsets: Int32Array;
  readonly features: Int32Array;
  readonly counts: Float32Array;
  /** Feature ids by descending training document frequency (ties: first seen). */
  readonly ranking: Int32Array;
  readonly featureCount: number;
  /** Human-readable name of a feature id (for explanations). */
  name(feature: number): string;
}

/** Tokenizes one text into interned ids. */
export interface Tokenizer {
  tokens(text: string, lowercase: boolean): Int32Array;
}

/** The cached featurizations of one corpus. */
export interface FeatureStore extends Tokenizer {
  /**
   * The featurization of every message, built on first use and cached.
   * `onProgress` reports tokenization of parts not seen before.
   */
  featurize(
    template: string,
    lowercase: boolean,
    ngrams: Ngrams,
    onProgress?: (done: number, total: number) => Promise<void>,
  ): Promise<Featurized>;
  /** Features of one text, in the feature space of `featurized` (unknown ones dropped). */
  featuresOf(
    featurized: Featurized,
    parts: Readonly<Record<TemplateField, string>>,
    template: string,
    lowercase: boolean,
    ngrams: Ngrams,
  ): Map<number, number>;
}

/** Builds the feature store of a loaded corpus. */
export function createFeatureStore(corpus: SpamCorpus, maxCached = 6): FeatureStore {
  const ids = new Map<string, number>();
  const words: string[] = [];
  const lower: number[] = [];
  const fieldTokens = new Map<TemplateField, Int32Array[]>();
  const cache = new Map<string, Featurized>();

  const intern = (word: string): number => {
    let id = ids.get(word);
    if (id === undefined) {
      id = words.length;
      ids.set(word, id);
      words.push(word);
      lower.push(-1);
    }
    return id;
  };

  const lowerOf = (id: number): number => {
    let l = lower[id] as number;
    if (l < 0) {
      l = intern((words[id] as string).toLowerCase());
      lower[id] = l;
    }
    return l;
  };

  const tokenize = (text: string): Int32Array => {
    const out: number[] = [];
    for (const m of text.matchAll(TOKEN)) {
      if (m[0].length <= MAX_TOKEN) out.push(intern(m[0]));
    }
    return Int32Array.from(out);
  };

  const tokensOfField = async (
    field: TemplateField,
    onProgress?: (done: number, total: number) => Promise<void>,
  ): Promise<Int32Array[]> => {
    let tokens = fieldTokens.get(field);
    if (tokens !== undefined) return tokens;
    tokens = [];
    const { messages } = corpus;
    for (let i = 0; i < messages.length; i++) {
      tokens.push(tokenize((messages[i] as (typeof messages)[number]).parts[field]));
      if (i % 500 === 499) await onProgress?.(i + 1, messages.length);
    }
    fieldTokens.set(field, tokens);
    return tokens;
  };

  // Bigram ids share the feature space with unigram ids: unigrams keep their
  // token id, bigrams get ids from BIGRAM_BASE up.
  const BIGRAM_BASE = 1 << 26;
  const bigramIds = new Map<number, number>();
  const bigramPairs: number[] = [];
  const bigramOf = (a: number, b: number): number => {
    const key = a * 67_108_864 + b; // a·2^26 + b, exact below 2^53
    let id = bigramIds.get(key);
    if (id === undefined) {
      id = BIGRAM_BASE + bigramPairs.length;
      bigramIds.set(key, id);
      bigramPairs.push(key);
    }
    return id;
  };
  const featureName = (f: number): string => {
    if (f < BIGRAM_BASE) return words[f] ?? "?";
    const key = bigramPairs[f - BIGRAM_BASE] ?? 0;
    return `${words[Math.floor(key / 67_108_864)]} ${words[key % 67_108_864]}`;
  };

  /** Appends the n-gram features of one token sequence to `bag`. */
  const addNgrams = (bag: Map<number, number>, seq: ArrayLike<number>, ngrams: Ngrams) => {
    if (ngrams !== "bigrams") {
      for (let i = 0; i < seq.length; i++) {
        const t = seq[i] as number;
        bag.set(t, (bag.get(t) ?? 0) + 1);
      }
    }
    if (ngrams !== "unigrams") {
      for (let i = 1; i < seq.length; i++) {
        const f = bigramOf(seq[i - 1] as number, seq[i] as number);
        bag.set(f, (bag.get(f) ?? 0) + 1);
      }
    }
  };

  /** A document's token sequence under a template. */
  const sequence = (
    segments: ReturnType<typeof parseTemplate>,
    doc: (field: TemplateField) => Int32Array,
    literal: (text: string) => Int32Array,
    lowercase: boolean,
  ): number[] => {
    const seq: number[] = [];
    for (const s of segments) {
      const toks = s.kind === "field" ? doc(s.field) : literal(s.text);
      for (let i = 0; i < toks.length; i++) {
        const t = toks[i] as number;
        seq.push(lowercase ? lowerOf(t) : t);
      }
    }
    return seq;
  };

  return {
    tokens: (text, lowercase) => {
      const t = tokenize(text);
      return lowercase ? t.map(lowerOf) : t;
    },

    async featurize(template, lowercase, ngrams, onProgress) {
      const key = `${template}\u0000${lowercase}\u0000${ngrams}`;
      const hit = cache.get(key);
      if (hit !== undefined) {
        cache.delete(key);
        cache.set(key, hit); // most recently used last
        return hit;
      }
      const segments = parseTemplate(template);
      const perField = new Map<TemplateField, Int32Array[]>();
      for (const field of TEMPLATE_FIELDS) {
        if (segments.some((s) => s.kind === "field" && s.field === field)) {
          perField.set(field, await tokensOfField(field, onProgress));
        }
      }
      const literals = new Map<string, Int32Array>();
      const literal = (text: string) => {
        let t = literals.get(text);
        if (t === undefined) {
          t = tokenize(text);
          literals.set(text, t);
        }
        return t;
      };

      const n = corpus.messages.length;
      const offsets = new Int32Array(n + 1);
      const features: number[] = [];
      const counts: number[] = [];
      const df = new Map<number, number>();
      const firstSeen = new Map<number, number>();
      const bag = new Map<number, number>();
      for (let d = 0; d < n; d++) {
        const seq = sequence(
          segments,
          (field) => perField.get(field)?.[d] ?? new Int32Array(0),
          literal,
          lowercase,
        );
        bag.clear();
        addNgrams(bag, seq, ngrams);
        const training = corpus.messages[d]?.split === "train";
        for (const [f, c] of bag) {
          features.push(f);
          counts.push(c);
          if (training) {
            df.set(f, (df.get(f) ?? 0) + 1);
            if (!firstSeen.has(f)) firstSeen.set(f, firstSeen.size);
          }
        }
        offsets[d + 1] = features.length;
        if (d % 1000 === 999) await onProgress?.(d + 1, n);
      }
      const ranking = Int32Array.from(df.keys()).sort(
        (a, b) =>
          (df.get(b) as number) - (df.get(a) as number) ||
          (firstSeen.get(a) as number) - (firstSeen.get(b) as number),
      );
      const result: Featurized = {
        key,
        offsets,
        features: Int32Array.from(features),
        counts: Float32Array.from(counts),
        ranking,
        featureCount: df.size,
        name: featureName,
      };
      cache.set(key, result);
      while (cache.size > maxCached) {
        const oldest = cache.keys().next().value as string;
        cache.delete(oldest);
      }
      return result;
    },

    featuresOf(_featurized, parts, template, lowercase, ngrams) {
      const segments = parseTemplate(template);
      const seq = sequence(
        segments,
        (field) => tokenize(parts[field]),
        (text) => tokenize(text),
        lowercase,
      );
      const bag = new Map<number, number>();
      addNgrams(bag, seq, ngrams);
      return bag;
    },
  };
}
