import type { SessionContext } from "../../src/client/index.ts";
import { PROGRAM_VARIABLES, type ProgramConfig } from "../shared/program.ts";
import {
  bestOf,
  type EvaluationRecord,
  type FailedTrial,
  type RunRecord,
  type ScoredConfig,
} from "../shared/tuning-runs.ts";
import { h, replaceChildren, score, showValue } from "./dom.ts";
import { type Explained, explain } from "./errors.ts";
import { renderResults } from "./results-card.ts";
import {
  type ChartPoint,
  KNOBS,
  type Knob,
  type KnobPoint,
  renderKnobChart,
  renderTrialChart,
} from "./trial-chart.ts";
import { evaluate } from "./tuner.ts";

/**
 * What the Tune card shows of a run, drawn from the session's run log
 * alone, so every tab (and a reload) shows the same: the chart with the
 * hand evaluations, the plot against one knob, the selected point's
 * configuration (with "Apply"), the trial log and the best-vs-initial card.
 */
export interface RunView {
  readonly element: HTMLElement;
  /** Redraws for the latest run (undefined: none yet) and the hand evaluations. */
  show(run: RunRecord | undefined, evaluations: readonly EvaluationRecord[]): void;
  /** Whether writes are possible now (no one holds the lock). */
  setWritable(writable: boolean): void;
}

export function createRunView(
  ctx: SessionContext,
  options: { readonly editorId: string; readonly onError: (error: Explained) => void },
): RunView {
  const chartBox = h("div", { class: "chart-box" });
  const knobSelect = h(
    "select",
    { "data-control": "knob", "aria-label": "Knob to plot against" },
    ...KNOBS.map((k) => h("option", { value: k }, k)),
  );
  const knobBox = h("div", { class: "knob-box" });
  const knobCard = h(
    "div",
    { class: "knob-plot", hidden: true },
    h("div", { class: "knob-head" }, h("span", {}, "Dev F1 against "), knobSelect),
    knobBox,
  );
  const detail = h("div", { class: "point-detail", hidden: true, "data-point-detail": "" });
  const log = h("tbody");
  const logBox = h(
    "div",
    { class: "trial-log", hidden: true },
    h(
      "table",
      { class: "trials", "data-trials": "" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ...["#", "dev F1", "configuration", "ran in", "time"].map((l) => h("th", {}, l)),
        ),
      ),
      log,
    ),
  );
  const results = h("div", { class: "results" });
  const element = h("div", { class: "run-view" }, chartBox, detail, knobCard, logBox, results);

  let run: RunRecord | undefined;
  let evaluations: readonly EvaluationRecord[] = [];
  let selected: string | undefined;
  let writable = true;
  /** Test-split scores per run, fetched once per tab (the bridge caches them too). */
  const testScores = new Map<string, Promise<[number, number]>>();
  let resultsFor: string | undefined;

  const scoredOf = (key: string): { title: string; scored: ScoredConfig } | undefined => {
    const [kind, n] = key.split(":");
    if (kind === "trial") {
      const t = Number(n);
      if (t === 0 && run?.initial !== undefined) return { title: "Initial", scored: run.initial };
      const r = run?.results.find((x) => x.trial === t);
      return r === undefined ? undefined : { title: `Trial ${t}`, scored: r };
    }
    const e = evaluations.filter((x) => x.kind === "you")[Number(n)];
    return e === undefined ? undefined : { title: "You (Evaluate)", scored: e };
  };

  const drawDetail = () => {
    const found = selected === undefined ? undefined : scoredOf(selected);
    detail.hidden = found === undefined;
    if (found === undefined) return;
    const { title, scored } = found;
    const apply = h(
      "button",
      { type: "button", class: "small", "data-action": "apply" },
      "Apply this configuration",
    );
    apply.disabled = !writable;
    apply.title = writable ? "" : "An optimizer holds the lock: wait until the run ends.";
    apply.addEventListener("click", async () => {
      apply.disabled = true;
      try {
        const batch = await ctx.setMany(
          { ...scored.config },
          { atomic: true, metadata: { source: options.editorId, applied: title } },
        );
        if (!batch.success) throw new Error(Object.values(batch.errors).join("; "));
        apply.textContent = "Applied: the session holds it now";
      } catch (e) {
        options.onError(explain(e, "applying a configuration"));
        apply.disabled = false;
      }
    });
    const close = h("button", { type: "button", class: "ghost small", "aria-label": "Close" }, "✕");
    close.addEventListener("click", () => {
      selected = undefined;
      draw();
    });
    replaceChildren(
      detail,
      h(
        "div",
        { class: "detail-head" },
        h("strong", {}, `${title}: dev F1 ${score(scored.metrics.f1)}`),
        close,
      ),
      h(
        "p",
        { class: "small muted" },
        `precision ${score(scored.metrics.precision)} · recall ${score(scored.metrics.recall)} · ${scored.runtime === "python" ? "trained in the Python worker" : "trained on the bridge"} · ${scored.cached ? "cached" : `${(scored.ms / 1000).toFixed(1)} s`}`,
      ),
      h(
        "table",
        { class: "detail-config" },
        h(
          "tbody",
          {},
          ...PROGRAM_VARIABLES.map((name) =>
            h("tr", {}, h("th", {}, name), h("td", {}, showValue(scored.config[name]))),
          ),
        ),
      ),
      apply,
    );
  };

  const knobPoints = (knob: Knob): KnobPoint[] => {
    const points: KnobPoint[] = [];
    if (run?.initial !== undefined) {
      points.push({ value: run.initial.config[knob], f1: run.initial.metrics.f1, kind: "initial" });
    }
    for (const r of run?.results ?? []) {
      points.push({ value: r.config[knob], f1: r.metrics.f1, kind: "optimizer" });
    }
    for (const e of evaluations) {
      if (e.kind === "you") points.push({ value: e.config[knob], f1: e.metrics.f1, kind: "you" });
    }
    return points;
  };

  const draw = () => {
    const results_ = run?.results ?? [];
    let best = run?.initial?.metrics.f1 ?? Number.NEGATIVE_INFINITY;
    const points: ChartPoint[] = results_.map((r) => {
      const improved = r.metrics.f1 > best;
      best = Math.max(best, r.metrics.f1);
      return {
        trial: r.trial,
        f1: r.metrics.f1,
        bestSoFar: best,
        improved,
        label: describeConfig(r.config),
        runtime: r.runtime,
        kind: "optimizer",
        key: `trial:${r.trial}`,
      };
    });
    const you: ChartPoint[] = evaluations
      .filter((e) => e.kind === "you")
      .map((e, i) => ({
        trial: i,
        f1: e.metrics.f1,
        bestSoFar: e.metrics.f1,
        improved: false,
        label: describeConfig(e.config),
        runtime: e.runtime,
        kind: "you",
        key: `you:${i}`,
      }));
    replaceChildren(
      chartBox,
      renderTrialChart(points, {
        ...(run?.initial === undefined ? {} : { initial: run.initial.metrics.f1 }),
        trials: run?.planned ?? 20,
        you,
        ...(selected === undefined ? {} : { selected }),
        ...(run?.status === "running"
          ? { empty: `Run by ${run.optimizerId}: waiting for its first trial…` }
          : {}),
        onSelect: (key) => {
          selected = key;
          draw();
        },
      }),
    );
    drawDetail();
    const knob = knobSelect.value as Knob;
    const kp = knobPoints(knob);
    knobCard.hidden = kp.length < 2;
    replaceChildren(knobBox, renderKnobChart(kp, knob));
    drawLog();
    drawResults();
  };
  knobSelect.addEventListener("change", draw);

  const drawLog = () => {
    logBox.hidden = run?.initial === undefined;
    if (run === undefined) return replaceChildren(log);
    const bestTrial = bestOf(run)?.trial;
    const row = (label: string, trial: number, r: ScoredConfig) =>
      h(
        "tr",
        {
          class: trial === bestTrial ? "best" : "",
          "data-trial-row": label,
          "data-runtime": r.runtime,
        },
        h("td", {}, label),
        h("td", { class: "num" }, score(r.metrics.f1)),
        h("td", { class: "config" }, describeConfig(r.config)),
        h(
          "td",
          {},
          r.runtime === "python"
            ? h(
                "span",
                { class: "badge python", title: "scikit-learn, in the Python worker" },
                "Python",
              )
            : h("span", { class: "badge" }, "bridge"),
        ),
        h("td", { class: "num" }, r.cached ? "cached" : `${(r.ms / 1000).toFixed(1)} s`),
      );
    // A failed trial (its module's worker died under it): no score, and why.
    const failedRow = (f: FailedTrial) =>
      h(
        "tr",
        { class: "failed", "data-trial-row": String(f.trial), "data-trial-failed": "" },
        h("td", {}, String(f.trial)),
        h("td", { class: "num" }, "failed"),
        h(
          "td",
          { class: "config" },
          describeConfig(f.config),
          h("div", { class: "why" }, f.message),
        ),
        h("td", {}, h("span", { class: "badge" }, "—")),
        h("td", { class: "num" }, ""),
      );
    // Newest first, right under the header: the latest trial is in view
    // without scrolling the box, and no row sits half under the sticky header.
    const trials: { trial: number; el: HTMLElement }[] = [
      ...run.results.map((r) => ({ trial: r.trial, el: row(String(r.trial), r.trial, r) })),
      ...(run.failures ?? []).map((f) => ({ trial: f.trial, el: failedRow(f) })),
    ].sort((a, b) => b.trial - a.trial);
    replaceChildren(
      log,
      ...trials.map((t) => t.el),
      run.initial === undefined ? null : row("initial", 0, run.initial),
    );
  };

  const drawResults = () => {
    const ended = run !== undefined && run.status !== "running" && run.initial !== undefined;
    if (!ended || run === undefined || run.initial === undefined) {
      resultsFor = undefined;
      replaceChildren(results);
      return;
    }
    const best = bestOf(run);
    if (best === undefined) return;
    const key = `${run.id}:${run.results.length}`;
    if (resultsFor === key) return;
    resultsFor = key;
    const card = renderResults({
      initial: run.initial,
      best: { ...best.scored, trial: best.trial },
      trials: run.results.length,
    });
    replaceChildren(results, card.element);
    // The dev split chose the winner; the test split has never been looked at.
    const configs: [ProgramConfig, ProgramConfig] = [run.initial.config, best.scored.config];
    let pending = testScores.get(key);
    if (pending === undefined) {
      pending = Promise.all(
        configs.map((config) => evaluate(ctx, { split: "test", config }).then((r) => r.metrics.f1)),
      ) as Promise<[number, number]>;
      testScores.set(key, pending);
    }
    pending.then(
      ([initial, bestF1]) => {
        card.test.initial.textContent = score(initial);
        card.test.best.textContent = score(bestF1);
      },
      (e: unknown) => {
        testScores.delete(key);
        card.test.initial.textContent = "—";
        card.test.best.textContent = "—";
        options.onError(explain(e, "scoring on the test split"));
      },
    );
  };

  draw();
  return {
    element,
    show(next, evals) {
      if (next?.id !== run?.id) selected = undefined;
      run = next;
      evaluations = evals;
      draw();
    },
    setWritable(value) {
      if (writable === value) return;
      writable = value;
      drawDetail();
    },
  };
}

/** A configuration on one line. */
export function describeConfig(c: ProgramConfig): string {
  return `${c.classifier} · ${c.feature_template} · ${c.ngrams} · ${c.vocab_size} features · α ${c.smoothing} · t ${c.threshold}${c.lowercase ? "" : " · case kept"}`;
}
