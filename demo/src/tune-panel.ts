import type { SessionContext } from "../../src/client/index.ts";
import {
  BRIDGE_CLASSIFIERS,
  type Classifier,
  type EvaluationProgress,
  type ProgramConfig,
  PYTHON_CLASSIFIER,
} from "../shared/program.ts";
import { emptyLog, type RunLog, type RunRecord, trialsDone } from "../shared/tuning-runs.ts";
import { h, score } from "./dom.ts";
import { type Explained, explain } from "./errors.ts";
import { createLockNotice } from "./lock-notice.ts";
import { createRunEstimate } from "./run-estimate.ts";
import { createRunView, describeConfig } from "./run-view.ts";
import { describeEnd, evaluate, runTuning } from "./tuner.ts";

/**
 * The Tune card: trial count and seed, Tune / Stop, the current
 * configuration's score with "Evaluate", run-level progress, and the run
 * itself (chart, log, comparison) as the session's run log holds it, so
 * every tab shows the same run live and a reload restores it. (About 500
 * lines: the controls, the current score, the run they start and the
 * progress of that run share their state; the lock notice, the run's
 * drawing and its time estimate live in lock-notice.ts, run-view.ts and
 * run-estimate.ts.)
 */
export interface TunePanel {
  readonly element: HTMLElement;
  /** Another optimizer holds the lock (or nobody: undefined); `trial` is its last write's label. */
  setForeignLock(optimizerId: string | undefined, trial?: string): void;
  /**
   * Tells the panel whether the session is usable now; when it is not,
   * `reason` says why beside Tune (and as Tune's and Evaluate's title).
   */
  setEnabled(enabled: boolean, reason?: string): void;
  /** The session's run log changed (or was read). */
  setLog(log: RunLog): void;
  /** The program's current values (undefined while some are unknown). */
  setCurrent(config: ProgramConfig | undefined): void;
  /** Whether the Python worker's module is registered, with its runtime. */
  setPython(runtime: string | undefined): void;
  /** Scores the current configuration once, if the log has no score for it. */
  scoreOnLoad(): Promise<void>;
}

/** Share of one trial's progress each stage of an evaluation ends at. */
const STAGE_END = { load: 0.3, features: 0.6, train: 0.9, score: 0.99 } as const;

export function createTunePanel(
  ctx: SessionContext,
  options: {
    readonly optimizerId: string;
    /** This browser (its tabs may stop each other's runs). */
    readonly owner: string;
    /** This tab, for hand evaluations. */
    readonly editorId: string;
    readonly trials: number;
    readonly seed: number;
    readonly onError: (error: Explained) => void;
    readonly onRunning: (running: boolean) => void;
    /** Names of variables with an unsaved edit in the variables panel. */
    readonly pendingDrafts: () => string[];
    /** Told whether the Python worker's module can be used now. */
    readonly onPython?: (available: boolean) => void;
  },
): TunePanel {
  const control = (name: string, label: string, value: number, min: number, max?: number) =>
    h("input", {
      type: "number",
      min,
      ...(max === undefined ? {} : { max }),
      value,
      "data-control": name,
      "aria-label": label,
    });
  const trialsInput = control("trials", "Number of trials", options.trials, 1, 100);
  const seedInput = control("seed", "Random seed", options.seed, 0);
  const tune = h("button", { type: "button", class: "primary", "data-action": "tune" }, "Tune");
  const stop = h(
    "button",
    { type: "button", class: "danger", "data-action": "stop", hidden: true },
    "Stop",
  );
  const evaluateButton = h(
    "button",
    { type: "button", class: "small", "data-action": "evaluate" },
    "Evaluate",
  );
  const current = h("span", { "data-current-score": "" }, "Scoring the current configuration…");
  const pythonNote = h("p", { class: "small muted", "data-python": "off" }, "");
  const disabledNote = h("p", {
    class: "disabled-note small",
    "data-tune-disabled": "",
    hidden: true,
  });
  const bar = h("div", { class: "bar" });
  const progress = h(
    "div",
    { class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100 },
    bar,
  );
  const progressText = h("span", { class: "progress-text", "data-progress": "" }, "Idle");
  const stageText = h("span", { class: "stage-text small muted", "data-stage": "" }, "");
  const status = h("p", { class: "tune-status", "data-tune-status": "idle" });
  const notice = createLockNotice(ctx, { owner: options.owner, onError: options.onError });
  const view = createRunView(ctx, { editorId: options.editorId, onError: options.onError });

  const element = h(
    "section",
    { class: "card tune", "aria-labelledby": "tune-title" },
    h("h2", { id: "tune-title" }, "Tune"),
    h(
      "p",
      { class: "muted" },
      "Random search with local refinement over all seven variables. Each trial writes the candidate with one atomic batch call (as the lock holder), then the bridge trains it on the train split and scores F1 on the dev split. Every score is recorded in the session, so every tab draws the same chart.",
    ),
    pythonNote,
    h("div", { class: "current" }, h("span", { class: "muted" }, "Now: "), current, evaluateButton),
    h(
      "div",
      { class: "controls" },
      h("label", {}, "Trials ", trialsInput),
      h("label", {}, "Seed ", seedInput),
      tune,
      stop,
    ),
    disabledNote,
    notice.element,
    progress,
    h("div", { class: "progress-line" }, progressText, stageText),
    status,
    view.element,
  );

  let log: RunLog = emptyLog;
  let currentConfig: ProgramConfig | undefined;
  let python: string | undefined;
  let running: { controller: AbortController; runId: string } | undefined;
  let enabled = true;
  let disabledReason = "";
  /**
   * The current configuration is being scored: by the page on load (from
   * the start until scoreOnLoad has settled) or by Evaluate.
   */
  let scoring: "load" | "evaluate" | undefined = "load";
  /** Dev scores this tab got back (the run log may bring them a moment later), by configuration. */
  const scoredHere = new Map<string, { f1: number; byYou: boolean }>();
  let foreignLock: string | undefined;
  let foreignTrial: string | undefined;
  /** Local state of this tab's run: its status line and the stage within the trial. */
  let localStatus: { state: string; text: string } | undefined;
  /** How this tab's last run ended, shown until the run log says so too. */
  let ended: { runId: string; state: string; text: string } | undefined;
  let stage: { runId: string; unit: number; share: number; message: string } | undefined;
  /** The time left shown for the latest run. */
  const estimate = createRunEstimate();
  /** Progress shown per run: it never goes back. */
  let shown = { runId: "", fraction: 0 };

  const latest = (): RunRecord | undefined => log.runs[log.runs.length - 1];
  const locked = () => foreignLock !== undefined || running !== undefined;

  /** This tab's own trials and seed, kept while the fields show another tab's run. */
  let ownSettings: { trials: string; seed: string } | undefined;
  /** The fields show the settings of a run another tab is running (read-only), else this tab's. */
  const showSettings = (): boolean => {
    const run = latest();
    const watched = run?.status === "running" && running?.runId !== run.id ? run : undefined;
    if (watched !== undefined) {
      ownSettings ??= { trials: trialsInput.value, seed: seedInput.value };
      trialsInput.value = String(watched.planned);
      seedInput.value = String(watched.seed);
    } else if (ownSettings !== undefined) {
      trialsInput.value = ownSettings.trials;
      seedInput.value = ownSettings.seed;
      ownSettings = undefined;
    }
    const title = watched === undefined ? "" : `The settings of the run by ${watched.optimizerId}`;
    trialsInput.title = title;
    seedInput.title = title;
    return watched !== undefined;
  };

  const refreshButtons = () => {
    const busy = running !== undefined;
    const watching = showSettings();
    tune.hidden = busy;
    stop.hidden = !busy;
    tune.disabled = !enabled || foreignLock !== undefined;
    disabledNote.hidden = enabled;
    disabledNote.textContent = enabled ? "" : disabledReason;
    tune.title = enabled ? "" : disabledReason;
    evaluateButton.title = enabled ? "" : disabledReason;
    trialsInput.disabled = busy || watching;
    seedInput.disabled = busy || watching;
    evaluateButton.disabled =
      !enabled || locked() || currentConfig === undefined || scoring !== undefined;
    view.setWritable(enabled && !locked());
    drawCurrent();
  };

  const setStatus = (state: string, text: string) => {
    status.dataset.tuneStatus = state;
    status.textContent = text;
  };

  /** The score the log knows for a configuration (a trial, an initial score, an evaluation). */
  const knownScore = (config: ProgramConfig): number | undefined => {
    const same = JSON.stringify(config);
    const here = scoredHere.get(same);
    if (here !== undefined) return here.f1;
    for (const e of [...log.evaluations].reverse())
      if (JSON.stringify(e.config) === same) return e.metrics.f1;
    for (const run of [...log.runs].reverse()) {
      for (const r of [run.initial, ...run.results]) {
        if (r !== undefined && JSON.stringify(r.config) === same) return r.metrics.f1;
      }
    }
    return undefined;
  };

  const drawCurrent = () => {
    if (currentConfig === undefined) return;
    const known = knownScore(currentConfig);
    current.dataset.score = known === undefined ? "" : score(known);
    if (known !== undefined) {
      const byYou = scoredHere.get(JSON.stringify(currentConfig))?.byYou === true;
      current.textContent = `the current configuration scores dev F1 ${score(known)}${byYou ? " (your point on the chart)" : ""}`;
      return;
    }
    // "press Evaluate" only where Evaluate can be pressed and is the way to a score.
    current.textContent =
      scoring === "evaluate"
        ? "Evaluating the current configuration…"
        : locked()
          ? "the current configuration has not been scored yet: the run is scoring it"
          : !enabled
            ? "the current configuration has not been scored yet"
            : scoring === "load"
              ? "Scoring the current configuration…"
              : "the current configuration has not been scored yet: press Evaluate";
  };

  const elapsed = (ms: number) => {
    const s = Math.max(0, Math.round(ms / 1000));
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  };

  const drawProgress = () => {
    const run = latest();
    if (run === undefined) {
      progressText.textContent = "Idle: no run yet on this session";
      stageText.textContent = "";
      bar.style.width = "0%";
      return;
    }
    const units = run.planned + 1; // the initial score, then each trial
    const done = (run.initial === undefined ? 0 : 1) + trialsDone(run);
    let fraction = run.status === "running" ? done / units : 1;
    const mine = running?.runId === run.id;
    if (mine && stage !== undefined && stage.runId === run.id && stage.unit === done) {
      fraction = (done + stage.share) / units;
    }
    if (shown.runId !== run.id) shown = { runId: run.id, fraction: 0 };
    shown.fraction = Math.max(shown.fraction, Math.min(1, fraction));
    const pct = Math.round(shown.fraction * 1000) / 10;
    bar.style.width = `${pct}%`;
    progress.setAttribute("aria-valuenow", String(pct));
    progress.dataset.progressValue = String(pct);
    const now = Date.now();
    const spent = (run.finishedAt ?? now) - run.startedAt;
    if (run.status === "running") {
      const leftMs = estimate.next(run, now);
      const left =
        leftMs === undefined
          ? "estimating…"
          : leftMs < 1000
            ? "almost done"
            : `about ${elapsed(leftMs)} left`;
      progressText.textContent = `${trialsDone(run)} of ${run.planned} trials done${failedNote(run)} · ${elapsed(spent)} elapsed · ${left}`;
      stageText.textContent = mine
        ? (stage?.message ?? "")
        : `run by ${run.optimizerId} in another tab${run.stopRequested ? " · stop requested" : ""}`;
    } else {
      progressText.textContent = `${run.status === "done" ? "Done" : run.status === "stopped" ? "Stopped" : run.status === "failed" ? "Failed" : "Abandoned"}: ${trialsDone(run)} of ${run.planned} trials${failedNote(run)} in ${elapsed(spent)}`;
      stageText.textContent = "";
    }
  };

  const drawStatus = () => {
    if (localStatus !== undefined) return setStatus(localStatus.state, localStatus.text);
    const run = latest();
    if (ended !== undefined) {
      const recorded = log.runs.find((r) => r.id === ended?.runId);
      const newer = run !== undefined && run.id !== ended.runId && run.status === "running";
      if (newer) ended = undefined;
      else if (recorded === undefined || recorded.status === "running") {
        return setStatus(ended.state, ended.text);
      }
    }
    if (run === undefined) return setStatus("idle", "");
    if (run.status === "running") {
      return setStatus(
        "running",
        `A run by ${run.optimizerId} is in progress: ${run.results.length} of ${run.planned} trials so far.`,
      );
    }
    setStatus(run.status, run.message ?? "");
  };

  const redraw = () => {
    const run = latest();
    view.show(run, log.evaluations);
    drawProgress();
    drawStatus();
    notice.show(foreignLock, foreignTrial, log);
    drawCurrent();
    refreshButtons();
  };
  // The estimate, the elapsed time and "no sign of life" move with the clock.
  setInterval(() => {
    if (latest()?.status === "running" || foreignLock !== undefined) {
      drawProgress();
      notice.show(foreignLock, foreignTrial, log);
    }
  }, 1000);

  tune.addEventListener("click", async () => {
    const trials = Math.min(
      100,
      Math.max(1, Math.round(Number(trialsInput.value) || options.trials)),
    );
    const seed = Math.max(0, Math.round(Number(seedInput.value) || 0));
    const runId = `run-${Date.now().toString(36)}-${crypto.randomUUID().slice(0, 4)}`;
    const controller = new AbortController();
    running = { controller, runId };
    stage = undefined;
    notice.clearReleased();
    options.onRunning(true);
    const drafts = options.pendingDrafts();
    const keptNote =
      drafts.length === 0
        ? ""
        : ` Your unsaved edit${drafts.length > 1 ? "s" : ""} of ${drafts.join(", ")} stay${drafts.length > 1 ? "" : "s"} in the table, not part of the run; save after it ends.`;
    localStatus = { state: "locking", text: `Taking the optimization lock…${keptNote}` };
    redraw();
    const classifiers: Classifier[] = [
      ...BRIDGE_CLASSIFIERS,
      ...(python === undefined ? [] : [PYTHON_CLASSIFIER as Classifier]),
    ];
    const say = (state: string, text: string) => {
      localStatus = { state, text: `${text}${keptNote}` };
      drawStatus();
    };
    try {
      const outcome = await runTuning(ctx, {
        trials,
        seed,
        optimizerId: options.optimizerId,
        runId,
        owner: options.owner,
        classifiers,
        signal: controller.signal,
        onLock: (held) => {
          if (held) say("baseline", "Scoring the initial configuration…");
        },
        onProgress: (p: EvaluationProgress, trial) => {
          const start =
            p.stage === "load"
              ? 0
              : p.stage === "features"
                ? STAGE_END.load
                : p.stage === "train"
                  ? STAGE_END.features
                  : STAGE_END.train;
          const share =
            start + (STAGE_END[p.stage] - start) * Math.min(1, p.done / Math.max(1, p.total));
          const unit = trial; // unit 0 is the initial score, unit t is trial t
          const before = stage?.runId === runId && stage.unit === unit ? stage.share : 0;
          stage = { runId, unit, share: Math.max(before, share), message: p.message };
          drawProgress();
        },
        onTrialStart: (trial, config) =>
          say("trial", `Trial ${trial} of ${trials}: ${describeConfig(config)}`),
        onTrialFailed: (trial, _config, message) => {
          // Its module is gone for now: not offered until the worker is back.
          setPython(undefined);
          say(
            "trial",
            `Trial ${trial} failed: ${message}. The run goes on with the bridge's modules.`,
          );
        },
        onFinishing: (best) =>
          say(
            "finishing",
            best.trial === 0
              ? "Restoring the initial configuration (no trial beat it)…"
              : `Writing the best configuration (trial ${best.trial})…`,
          ),
      });
      ended = {
        runId,
        state: outcome.stopped ? "stopped" : "done",
        text:
          log.runs.find((r) => r.id === runId && r.status !== "running")?.message ??
          describeEnd(outcome),
      };
    } catch (e) {
      const explained = explain(e, "tuning");
      if (controller.signal.aborted) {
        ended = {
          runId,
          state: "stopped",
          text: "Stopped before the first score: nothing was changed and the lock is released.",
        };
      } else {
        ended = { runId, state: "failed", text: `Tuning failed: ${explained.detail}` };
        options.onError(explained);
      }
    } finally {
      running = undefined;
      stage = undefined;
      localStatus = undefined;
      options.onRunning(false);
    }
    redraw();
  });

  stop.addEventListener("click", () => {
    localStatus = { state: "stopping", text: "Stopping after the current evaluation…" };
    drawStatus();
    running?.controller.abort();
  });

  evaluateButton.addEventListener("click", async () => {
    scoring = "evaluate";
    refreshButtons();
    try {
      const result = await evaluate(ctx, { record: { record: "you", by: options.editorId } });
      scoredHere.set(JSON.stringify(result.config), { f1: result.metrics.f1, byYou: true });
    } catch (e) {
      options.onError(explain(e, "evaluating the current configuration"));
    } finally {
      scoring = undefined;
      refreshButtons();
    }
  });

  redraw();
  function setPython(runtime: string | undefined): void {
    python = runtime;
    pythonNote.dataset.python = runtime === undefined ? "off" : "on";
    pythonNote.textContent =
      runtime === undefined
        ? "The Python worker is not running: the optimizer tries the bridge's three modules."
        : `A Python worker (${runtime}) hosts the module ${PYTHON_CLASSIFIER}: the optimizer tries it too, and its trials are marked "Python".`;
    options.onPython?.(runtime !== undefined);
  }

  return {
    element,
    setForeignLock(optimizerId, trial) {
      foreignLock = optimizerId;
      foreignTrial = trial;
      notice.show(foreignLock, foreignTrial, log);
      refreshButtons();
    },
    setEnabled(value, reason) {
      enabled = value;
      disabledReason = reason ?? "";
      refreshButtons();
    },
    setLog(next) {
      log = next;
      notice.observe(log);
      const mine =
        running === undefined ? undefined : log.runs.find((r) => r.id === running?.runId);
      if (
        mine?.stopRequested === true &&
        running !== undefined &&
        !running.controller.signal.aborted
      ) {
        localStatus = {
          state: "stopping",
          text: "Stopping after the current evaluation (asked from another tab)…",
        };
        running.controller.abort();
      }
      redraw();
    },
    setCurrent(config) {
      currentConfig = config;
      drawCurrent();
      refreshButtons();
    },
    setPython,
    async scoreOnLoad() {
      try {
        if (currentConfig === undefined || knownScore(currentConfig) !== undefined || locked())
          return;
        refreshButtons();
        const result = await evaluate(ctx, { record: { record: "load", by: options.editorId } });
        scoredHere.set(JSON.stringify(result.config), { f1: result.metrics.f1, byYou: false });
      } catch (e) {
        options.onError(explain(e, "scoring the current configuration"));
      } finally {
        scoring = undefined;
        refreshButtons();
      }
    },
  };
}

/** " (1 failed)" when trials of the run failed. */
function failedNote(run: RunRecord): string {
  const n = run.failures?.length ?? 0;
  return n === 0 ? "" : ` (${n} failed)`;
}
