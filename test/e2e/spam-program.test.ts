/**
 * The demo's spam program on the real SpamAssassin corpus: the split is
 * deterministic, every variable really changes what runs, and the numbers
 * are computed (the same configuration gives the same score, different
 * modules give different ones).
 */
import { describe, expect, it } from "vitest";
import { parseMail } from "../../demo/server/mail-message.ts";
import { loadSpamCorpus, splitOf } from "../../demo/server/spam-corpus.ts";
import { createSpamProgram } from "../../demo/server/spam-program.ts";
import { initialConfig, type ProgramConfig, parseTemplate } from "../../demo/shared/program.ts";

const program = createSpamProgram();
const dev = (change: Partial<ProgramConfig>) =>
  program.evaluate({ ...initialConfig, ...change }, "dev").then((e) => e.metrics);

describe("the SpamAssassin corpus", () => {
  it("loads all 6,046 messages and splits them the same way every time", async () => {
    const corpus = await loadSpamCorpus();
    expect(corpus.messages).toHaveLength(6046);
    expect(corpus.messages.filter((m) => m.spam)).toHaveLength(1896);
    expect(corpus.counts).toEqual({
      train: { total: 3615, spam: 1111 },
      dev: { total: 1238, spam: 411 },
      test: { total: 1193, spam: 374 },
    });
    // The split depends on the message only, not on the order of reading.
    const m = corpus.messages[4500];
    expect(m?.key).toMatch(/^spam-/);
    expect(splitOf("spam-1", "00001", "7848dde101aa985090474a91ec93fcf0")).toBe(
      corpus.messages.find((x) => x.key === "spam-1/00001")?.split,
    );
  }, 30_000);
});

describe("the spam program", () => {
  it("reads the parts the feature template names: adding the body beats the subject alone", async () => {
    const subject = await dev({});
    const withBody = await dev({ feature_template: "{subject} {body}" });
    expect(subject.f1).toBeGreaterThan(0.6);
    expect(withBody.f1).toBeGreaterThan(subject.f1 + 0.1);
    // A repeated part weighs more and really changes the model.
    const twice = await dev({ feature_template: "{subject} {subject} {body}" });
    expect(twice).not.toEqual(withBody);
  }, 60_000);

  it("moves precision against recall with the threshold", async () => {
    const low = await dev({ threshold: 0.1 });
    const high = await dev({ threshold: 0.9 });
    expect(low.recall).toBeGreaterThanOrEqual(high.recall);
    expect(low.precision).toBeLessThanOrEqual(high.precision);
    expect(low).not.toEqual(high);
  });

  it("has three real, different classifier modules, each deterministic", async () => {
    const base = { feature_template: "{subject} {body}", vocab_size: 3000 } as const;
    const nb = await dev({ ...base, classifier: "NaiveBayes" });
    const lr = await dev({ ...base, classifier: "LogisticRegression" });
    const kw = await dev({ ...base, classifier: "KeywordBaseline" });
    for (const m of [nb, lr, kw]) expect(m.f1).toBeGreaterThan(0.6);
    expect(new Set([nb.f1, lr.f1, kw.f1]).size).toBe(3);
    const again = await createSpamProgram().evaluate(
      { ...initialConfig, ...base, classifier: "LogisticRegression" },
      "dev",
    );
    expect(again.metrics).toEqual(lr);
  }, 60_000);

  it("responds to vocabulary size, smoothing, n-grams and case", async () => {
    const base = await dev({});
    expect(await dev({ vocab_size: 50 })).not.toEqual(base);
    expect(await dev({ smoothing: 5 })).not.toEqual(base);
    expect(await dev({ ngrams: "unigrams+bigrams" })).not.toEqual(base);
    expect(await dev({ lowercase: false })).not.toEqual(base);
  }, 60_000);

  it("refuses a template naming an unknown part, in words", () => {
    expect(() => parseTemplate("{subjct}")).toThrow(
      "feature template names an unknown part {subjct}; use {subject}, {from}, {body}, {headers}",
    );
  });
});

describe("parseMail", () => {
  it("decodes encoded-word subjects, quoted-printable and base64 parts, and strips HTML", () => {
    const mail = [
      "From someone@example.com Thu Aug 22 13:17:22 2002",
      "Subject: =?iso-8859-1?Q?Caf=E9_offer?=",
      "From: =?utf-8?B?w4lsaXNl?= <e@example.com>",
      'Content-Type: multipart/alternative; boundary="XX"',
      "",
      "--XX",
      "Content-Type: text/plain; charset=iso-8859-1",
      "Content-Transfer-Encoding: quoted-printable",
      "",
      "Cr=E8me br=FBl=",
      "=E9e",
      "--XX",
      "Content-Type: text/html",
      "Content-Transfer-Encoding: base64",
      "",
      btoa("<p>Buy <b>now</b> &amp; save</p>"),
      "--XX--",
    ].join("\n");
    const parts = parseMail(mail);
    expect(parts.subject).toBe("Café offer");
    expect(parts.from).toBe("Élise <e@example.com>");
    expect(parts.body).toContain("Crème brûlée");
    expect(parts.body).toContain("Buy  now  & save");
    expect(parts.headers).toContain("Subject: Café offer");
  });
});
