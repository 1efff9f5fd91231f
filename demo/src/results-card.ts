import type { Metrics, ProgramConfig } from "../shared/program.ts";
import { PROGRAM_VARIABLES } from "../shared/program.ts";
import { h, score, showValue } from "./dom.ts";

/**
 * The best configuration of a run against the initial one: dev F1 (what
 * chose it), held-out test F1 (filled in later: tuning never looked at that
 * split), precision and recall, each configuration's confusion matrix in
 * plain words, and the variables that changed.
 */
export function renderResults(input: {
  readonly initial: { readonly config: ProgramConfig; readonly metrics: Metrics };
  readonly best: {
    readonly config: ProgramConfig;
    readonly metrics: Metrics;
    readonly trial: number;
  };
  readonly trials: number;
}): { element: HTMLElement; test: { initial: HTMLElement; best: HTMLElement } } {
  const i = input.initial.metrics;
  const b = input.best.metrics;
  const row = (label: string, a: string, c: string, changed = a !== c) =>
    h(
      "tr",
      { class: changed ? "changed" : "" },
      h("th", {}, label),
      h("td", {}, a),
      h("td", {}, c),
    );
  const test = {
    initial: h("td", { "data-test": "initial" }, "…"),
    best: h("td", { "data-test": "best" }, "…"),
  };
  const table = h(
    "table",
    { class: "compare", "data-compare": "" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", {}, ""),
        h("th", {}, "Initial"),
        h(
          "th",
          {},
          input.best.trial === 0 ? "Best (= initial)" : `Best (trial ${input.best.trial})`,
        ),
      ),
    ),
    h(
      "tbody",
      {},
      h(
        "tr",
        { class: "score-row" },
        h("th", {}, "Dev F1 (spam)"),
        h("td", { "data-score": "initial" }, score(i.f1)),
        h("td", { "data-score": "best" }, score(b.f1)),
      ),
      h("tr", { class: "score-row" }, h("th", {}, "Held-out test F1"), test.initial, test.best),
      row("Dev precision", score(i.precision), score(b.precision), false),
      row("Dev recall", score(i.recall), score(b.recall), false),
      ...PROGRAM_VARIABLES.map((name) =>
        row(name, showValue(input.initial.config[name]), showValue(input.best.config[name])),
      ),
    ),
  );
  const gain = b.f1 - i.f1;
  const element = h(
    "div",
    {},
    h("h3", {}, "Best configuration vs the initial one"),
    h(
      "p",
      { class: "gain" },
      gain > 0
        ? `Dev F1 ${score(i.f1)} → ${score(b.f1)} (+${score(gain)}) over ${input.trials} trials.`
        : `No trial beat the initial dev F1 of ${score(i.f1)}.`,
    ),
    h(
      "div",
      { class: "in-words", "data-in-words": "" },
      confusion("Initial", i, "initial"),
      confusion(input.best.trial === 0 ? "Best (= initial)" : "Best", b, "best"),
    ),
    table,
  );
  return { element, test };
}

/** A confusion matrix on the dev split, and what it means for a mailbox. */
function confusion(title: string, m: Metrics, which: string): HTMLElement {
  const spam = m.tp + m.fn;
  const ham = m.fp + m.tn;
  const pct = (n: number, of: number) =>
    `${of === 0 ? 0 : Number(((100 * n) / of).toPrecision(2))}%`;
  return h(
    "div",
    { class: "confusion", "data-confusion": which },
    h("strong", {}, title),
    h(
      "p",
      { class: "words" },
      `Catches ${pct(m.tp, spam)} of spam (${m.tp} of ${spam}), ${pct(m.fp, ham)} false alarms (${m.fp} of ${ham} legitimate e-mails sent to spam).`,
    ),
    h(
      "table",
      { class: "matrix" },
      h(
        "thead",
        {},
        h("tr", {}, h("th", {}, ""), h("th", {}, "called spam"), h("th", {}, "called legitimate")),
      ),
      h(
        "tbody",
        {},
        h(
          "tr",
          {},
          h("th", {}, "spam"),
          h("td", { class: "good" }, m.tp),
          h("td", { class: "bad" }, m.fn),
        ),
        h(
          "tr",
          {},
          h("th", {}, "legitimate"),
          h("td", { class: "bad" }, m.fp),
          h("td", { class: "good" }, m.tn),
        ),
      ),
    ),
  );
}
