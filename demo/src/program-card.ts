import type { SessionContext } from "../../src/client/index.ts";
import { CLASSIFY_TOOL, DATASET_TOOL, type ProgramVariable } from "../shared/program.ts";
import { h, replaceChildren, showValue } from "./dom.ts";
import { type Explained, explain } from "./errors.ts";

/**
 * The program card: the pipeline the variables control (with their live
 * values), the data it learns from, and a box to run it on one message.
 */
export interface ProgramCard {
  readonly element: HTMLElement;
  /** Shows a variable's current value in the pipeline. */
  show(name: ProgramVariable, value: unknown): void;
  /** Loads the dataset summary (the bridge reads the corpus on first use). */
  loadDataset(): Promise<void>;
}

const SAMPLE = `Subject: You have been selected for a FREE vacation!!!

Dear friend, CLICK HERE to claim your prize. Limited time offer, act now and
receive $500 cash back. To be removed from our mailing list reply REMOVE.`;

/** Creates the program card. */
export function createProgramCard(
  ctx: SessionContext,
  options: { readonly onError: (error: Explained) => void },
): ProgramCard {
  const chips = new Map<ProgramVariable, HTMLElement>();
  const chip = (name: ProgramVariable) => {
    const el = h("code", { class: "chip", "data-chip": name }, "…");
    chips.set(name, el);
    return el;
  };
  const step = (title: string, ...body: (Node | string)[]) =>
    h("li", { class: "step" }, h("span", { class: "step-title" }, title), h("span", {}, ...body));

  const dataset = h(
    "p",
    { class: "muted small", "data-dataset": "" },
    "Asking the bridge about the corpus…",
  );
  // Trying the program changes nothing in the session: a view-only page keeps it.
  const text = h("textarea", {
    rows: 5,
    spellcheck: "false",
    "aria-label": "Message to classify",
    "data-reads": "",
  });
  text.value = SAMPLE;
  const verdict = h("div", { class: "verdict", "data-verdict": "" });
  const run = h(
    "button",
    { type: "button", class: "small", "data-reads": "" },
    "Run the program on this message",
  );
  run.addEventListener("click", async () => {
    run.disabled = true;
    replaceChildren(verdict, h("span", { class: "muted" }, "running…"));
    try {
      const result = (await ctx.callTool(CLASSIFY_TOOL, { text: text.value })) as {
        probability: number;
        spam: boolean;
        evidence: { feature: string; weight: number }[];
      };
      replaceChildren(
        verdict,
        h("strong", { class: result.spam ? "spam" : "ham" }, result.spam ? "Spam" : "Not spam"),
        ` · P(spam) = ${result.probability.toFixed(3)}`,
        h(
          "p",
          { class: "small muted" },
          "The features that weighed most, with their weight: positive pushes towards spam, negative towards legitimate.",
        ),
        h(
          "ul",
          { class: "evidence", "data-evidence": "" },
          ...result.evidence.map((e) =>
            h(
              "li",
              { class: e.weight > 0 ? "ev spam" : "ev ham", "data-weight": e.weight.toFixed(3) },
              h("code", {}, e.feature),
              h(
                "span",
                { class: "weight" },
                `${e.weight > 0 ? "+" : "−"}${Math.abs(e.weight).toFixed(2)}`,
              ),
              h("span", { class: "direction" }, e.weight > 0 ? "→ spam" : "→ legitimate"),
            ),
          ),
        ),
      );
    } catch (e) {
      replaceChildren(verdict);
      options.onError(explain(e, "running the program"));
    } finally {
      run.disabled = false;
    }
  });

  const element = h(
    "section",
    { class: "card program", "aria-labelledby": "program-title" },
    h("h2", { id: "program-title" }, "The program"),
    h(
      "p",
      { class: "muted" },
      "A spam filter written as a DSPy-style program: each stage is a module whose behaviour is set by a session variable. The browser and the bridge read the same variables, so whatever writes them (you, the optimizer, another tab, a Python worker) changes what runs next.",
    ),
    h(
      "ol",
      { class: "pipeline" },
      step("Read", "the parts ", chip("feature_template"), " of each e-mail"),
      step("Tokenize", "lowercase ", chip("lowercase"), " · ", chip("ngrams")),
      step("Vocabulary", "the ", chip("vocab_size"), " most frequent training features"),
      step("Classify", chip("classifier"), " with smoothing ", chip("smoothing")),
      step("Decide", "spam when P(spam) ≥ ", chip("threshold")),
    ),
    dataset,
    h("details", { class: "try" }, h("summary", {}, "Try it on a message"), text, run, verdict),
  );

  return {
    element,
    show(name, value) {
      const el = chips.get(name);
      if (el !== undefined)
        el.textContent = typeof value === "boolean" ? (value ? "on" : "off") : showValue(value);
    },
    async loadDataset() {
      try {
        const info = (await ctx.callTool(DATASET_TOOL)) as {
          messages: number;
          spam: number;
          splits: Record<"train" | "dev" | "test", { total: number; spam: number }>;
        };
        const n = (x: number) => x.toLocaleString("en-US");
        const split = (name: "train" | "dev" | "test") =>
          `${name} ${n(info.splits[name].total)} (${n(info.splits[name].spam)} spam)`;
        dataset.textContent = `Data: the SpamAssassin public corpus, ${n(info.messages)} real e-mails of which ${n(info.spam)} spam, split deterministically by a seeded hash of each message's id: ${split("train")} · ${split("dev")} · ${split("test")}. The metric is F1 on the spam class.`;
      } catch (e) {
        dataset.textContent = "The corpus summary is unavailable.";
        options.onError(explain(e, "loading the corpus summary"));
      }
    },
  };
}
