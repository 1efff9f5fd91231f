import type { SessionContext } from "../../src/client/index.ts";
import { type EvaluationResult, PROGRAM_VARIABLES, type ProgramConfig } from "../shared/program.ts";
import { h, replaceChildren, score, showValue } from "./dom.ts";
import { type Explained, explain } from "./errors.ts";
import { type ChartPoint, renderTrialChart } from "./trial-chart.ts";
import { evaluate, runTuning, type TuneOutcome } from "./tuner.ts";

/**
 * The Tune card: trial count and seed, Tune / Stop, streaming progress, the
 * chart, and the best configuration against the initial one (dev score
 * used for the choice, held-out test score for an honest comparison).
 */
export interface TunePanel {
  readonly element: HTMLElement;
  /**
   * Another optimizer holds the lock (or nobody: undefined); `trial` is the
   * label its last write carried, e.g. "3".
   */
  setForeignLock(optimizerId: string | undefined, trial?: string): void;
  /** Tells the panel whether the session is usable. */
  setEnabled(enabled: boolean): void;
}

/** Creates the Tune card. */
export function createTunePanel(
  ctx: SessionContext,
  options: {
    readonly optimizerId: string;
    readonly trials: number;
    readonly seed: number;
    readonly onError: (error: Explained) => void;
    readonly onRunning: (running: boolean) => void;
  },
): TunePanel {
  const trialsInput = h("input", {
    type: "number",
    min: 1,
    max: 100,
    value: options.trials,
    "data-control": "trials",
    "aria-label": "Number of trials",
  });
  const seedInput = h("input", {
    type: "number",
    min: 0,
    value: options.seed,
    "data-control": "seed",
    "aria-label": "Random seed",
  });
  const tune = h("button", { type: "button", class: "primary", "data-action": "tune" }, "Tune");
  const stop = h(
    "button",
    { type: "button", class: "danger", "data-action": "stop", hidden: true },
    "Stop",
  );
  const release = h(
    "button",
    { type: "button", class: "ghost small", "data-action": "force-release", hidden: true },
    "Release the lock",
  );
  const bar = h("div", { class: "bar" });
  const progressText = h("span", { class: "progress-text", "data-progress": "" }, "Idle");
  const progress = h("div", { class: "progress" }, bar);
  const status = h("p", { class: "tune-status", "data-tune-status": "idle" });
  const chartBox = h("div", { class: "chart-box" });
  const results = h("div", { class: "results" });
  const log = h("tbody");
  const logTable = h(
    "table",
    { class: "trials", "data-trials": "" },
    h(
      "thead",
      {},
      h("tr", {}, ...["#", "dev F1", "configuration", "time"].map((label) => h("th", {}, label))),
    ),
    log,
  );
  const logBox = h("div", { class: "trial-log", hidden: true }, logTable);
  const logRow = (label: string, result: EvaluationResult, c: ProgramConfig, best: boolean) =>
    h(
      "tr",
      { class: best ? "best" : "", "data-trial-row": label },
      h("td", {}, label),
      h("td", { class: "num" }, score(result.metrics.f1)),
      h("td", { class: "config" }, describeConfig(c)),
      h("td", { class: "num" }, result.cached ? "cached" : `${(result.ms / 1000).toFixed(1)} s`),
    );
  const foreign = h("div", { class: "notice info", hidden: true, "data-foreign-lock": "" });

  const element = h(
    "section",
    { class: "card tune", "aria-labelledby": "tune-title" },
    h("h2", { id: "tune-title" }, "Tune"),
    h(
      "p",
      { class: "muted" },
      "Random search with local refinement over all seven variables. Each trial writes the candidate with one atomic batch call (as the lock holder), then the bridge trains it on the train split and scores F1 on the dev split, streaming its progress here.",
    ),
    h(
      "div",
      { class: "controls" },
      h("label", {}, "Trials ", trialsInput),
      h("label", {}, "Seed ", seedInput),
      tune,
      stop,
    ),
    foreign,
    progress,
    progressText,
    status,
    chartBox,
    logBox,
    results,
  );

  let points: ChartPoint[] = [];
  let initial: number | undefined;
  let planned = options.trials;
  let running: AbortController | undefined;
  let enabled = true;
  let foreignLock: string | undefined;

  const drawChart = () =>
    replaceChildren(
      chartBox,
      renderTrialChart(points, { ...(initial === undefined ? {} : { initial }), trials: planned }),
    );
  drawChart();

  const setStatus = (state: string, text: string) => {
    status.dataset.tuneStatus = state;
    status.textContent = text;
  };

  const refreshButtons = () => {
    const busy = running !== undefined;
    tune.hidden = busy;
    stop.hidden = !busy;
    tune.disabled = !enabled || foreignLock !== undefined;
    trialsInput.disabled = busy;
    seedInput.disabled = busy;
  };

  tune.addEventListener("click", async () => {
    const trials = Math.min(
      100,
      Math.max(1, Math.round(Number(trialsInput.value) || options.trials)),
    );
    const seed = Math.max(0, Math.round(Number(seedInput.value) || 0));
    planned = trials;
    points = [];
    initial = undefined;
    replaceChildren(results);
    replaceChildren(log);
    logBox.hidden = true;
    drawChart();
    running = new AbortController();
    options.onRunning(true);
    refreshButtons();
    setStatus("locking", "Taking the optimization lock…");
    let outcome: TuneOutcome | undefined;
    try {
      outcome = await runTuning(ctx, {
        trials,
        seed,
        optimizerId: options.optimizerId,
        signal: running.signal,
        onLock: (held) => {
          if (held) setStatus("baseline", "Scoring the initial configuration…");
        },
        onProgress: (p, trial) => {
          bar.style.width = `${Math.round((100 * p.done) / Math.max(1, p.total))}%`;
          progressText.textContent = `${trial === 0 ? "Initial" : `Trial ${trial} of ${trials}`} · ${p.message}`;
        },
        onBaseline: (result) => {
          initial = result.metrics.f1;
          drawChart();
          logBox.hidden = false;
          log.append(logRow("initial", result, result.config, false));
        },
        onTrialStart: (trial, config) =>
          setStatus("trial", `Trial ${trial} of ${trials}: ${describeConfig(config)}`),
        onTrial: (t) => {
          points.push({
            trial: t.trial,
            f1: t.result.metrics.f1,
            bestSoFar: t.bestSoFar,
            improved: t.improved,
            label: describeConfig(t.config),
          });
          drawChart();
          if (t.improved)
            for (const tr of log.querySelectorAll("tr.best")) tr.classList.remove("best");
          log.append(logRow(String(t.trial), t.result, t.config, t.improved));
          logBox.scrollTop = logBox.scrollHeight;
        },
        onFinishing: (best) =>
          setStatus(
            "finishing",
            best.trial === 0
              ? "Restoring the initial configuration (no trial beat it)…"
              : `Writing the best configuration (trial ${best.trial})…`,
          ),
      });
    } catch (e) {
      const explained = explain(e, "tuning");
      if (running.signal.aborted) {
        setStatus(
          "stopped",
          "Stopped before the first score: nothing was changed and the lock is released.",
        );
      } else {
        setStatus("failed", `Tuning failed: ${explained.detail}`);
        options.onError(explained);
      }
    } finally {
      running = undefined;
      bar.style.width = "0%";
      options.onRunning(false);
      refreshButtons();
    }
    if (outcome === undefined) return;
    progressText.textContent = "Done";
    const { best, trials: done, stopped } = outcome;
    const kept =
      best.trial === 0
        ? "No trial beat the initial configuration, so it was restored"
        : `The session now holds the best configuration (trial ${best.trial}, dev F1 ${score(best.result.metrics.f1)})`;
    setStatus(
      stopped ? "stopped" : "done",
      stopped
        ? `Stopped after ${done.length} of ${trials} trials. ${kept}; the lock is released.`
        : `Finished ${done.length} trials. ${kept}; the lock is released.`,
    );
    await showResults(outcome);
  });

  stop.addEventListener("click", () => {
    setStatus("stopping", "Stopping: finishing cleanly…");
    running?.abort();
  });

  release.addEventListener("click", async () => {
    try {
      for (const name of PROGRAM_VARIABLES) await ctx.stopOptimization(name, { force: true });
    } catch (e) {
      options.onError(explain(e, "releasing the lock"));
    }
  });

  const showResults = async (outcome: TuneOutcome) => {
    const row = (label: string, a: string, b: string, changed = a !== b) =>
      h(
        "tr",
        { class: changed ? "changed" : "" },
        h("th", {}, label),
        h("td", {}, a),
        h("td", {}, b),
      );
    const metrics = (r: EvaluationResult) => r.metrics;
    const i = metrics(outcome.initial.result);
    const b = metrics(outcome.best.result);
    const testCells = {
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
            outcome.best.trial === 0 ? "Best (= initial)" : `Best (trial ${outcome.best.trial})`,
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
        h(
          "tr",
          { class: "score-row" },
          h("th", {}, "Held-out test F1"),
          testCells.initial,
          testCells.best,
        ),
        row("Dev precision", score(i.precision), score(b.precision), false),
        row("Dev recall", score(i.recall), score(b.recall), false),
        row("Dev accuracy", score(i.accuracy), score(b.accuracy), false),
        ...PROGRAM_VARIABLES.map((name) =>
          row(name, showValue(outcome.initial.config[name]), showValue(outcome.best.config[name])),
        ),
      ),
    );
    const gain = b.f1 - i.f1;
    replaceChildren(
      results,
      h("h3", {}, "Best configuration vs the initial one"),
      h(
        "p",
        { class: "gain" },
        gain > 0
          ? `Dev F1 ${score(i.f1)} → ${score(b.f1)} (+${score(gain)}) over ${outcome.trials.length} trials.`
          : `No trial beat the initial dev F1 of ${score(i.f1)}.`,
      ),
      table,
    );
    // The dev split chose the winner; the test split has never been looked at.
    for (const [which, config] of [
      ["initial", outcome.initial.config],
      ["best", outcome.best.config],
    ] as const) {
      try {
        const result = await evaluate(ctx, { split: "test", config });
        testCells[which].textContent = score(result.metrics.f1);
      } catch (e) {
        testCells[which].textContent = "—";
        options.onError(explain(e, "scoring on the test split"));
      }
    }
  };

  return {
    element,
    setForeignLock(optimizerId, trial) {
      foreignLock = optimizerId;
      if (optimizerId === undefined) {
        foreign.hidden = true;
      } else {
        foreign.hidden = false;
        replaceChildren(
          foreign,
          h(
            "div",
            {},
            h("strong", {}, "Tuning in progress elsewhere. "),
            `Optimizer ${optimizerId} holds the lock on the program's variables; the panel shows each candidate as it is written`,
            trial !== undefined && /^\d+$/.test(trial) ? ` (now: trial ${trial}).` : ".",
            h("div", { class: "small muted" }, "Its tab closed before it could finish? ", release),
          ),
        );
        release.hidden = false;
      }
      refreshButtons();
    },
    setEnabled(value) {
      enabled = value;
      refreshButtons();
    },
  };
}

/** A configuration on one line. */
function describeConfig(c: ProgramConfig): string {
  return `${c.classifier} · ${c.feature_template} · ${c.ngrams} · ${c.vocab_size} features · α ${c.smoothing} · t ${c.threshold}${c.lowercase ? "" : " · case kept"}`;
}
