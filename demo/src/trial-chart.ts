import type { Runtime } from "../shared/program.ts";
import { h, s, score } from "./dom.ts";

/** A point of the chart: one trial's dev F1, or a configuration someone evaluated. */
export interface ChartPoint {
  /** Trial number; for "you" points, their order among the hand evaluations. */
  readonly trial: number;
  readonly f1: number;
  readonly bestSoFar: number;
  readonly improved: boolean;
  readonly label: string;
  readonly runtime: Runtime;
  readonly kind: "optimizer" | "you";
  /** Identifies the point for a click: "trial:3", "you:2". */
  readonly key: string;
}

const W = 560;
const H = 250;
const PAD = { left: 48, right: 16, top: 14, bottom: 34 };
/** Width kept right of the trials for the "you" column. */
const YOU = 44;

/**
 * Draws dev F1 per trial (dots; filled: a new best; orange ring: trained in
 * Python), the best so far (a step line), the initial configuration's score
 * (dashed) and the configurations people evaluated ("you", diamonds). The
 * axis focuses on the band around the best scores: a trial far below it is
 * drawn on the bottom edge as a marker that says its real score. Clicking a
 * point calls `onSelect` with its key.
 */
export function renderTrialChart(
  points: readonly ChartPoint[],
  options: {
    initial?: number;
    trials: number;
    you?: readonly ChartPoint[];
    selected?: string;
    onSelect?: (key: string) => void;
    /** What an empty chart says. */
    empty?: string;
  },
): HTMLElement {
  const you = options.you ?? [];
  const all = [...points, ...you];
  const best = Math.max(options.initial ?? 0, ...all.map((p) => p.f1));
  // The useful band: from a little below the initial score (or the weakest
  // trial near the best) up to 1; anything further down is an outlier.
  const near = all.map((p) => p.f1).filter((v) => v >= best - 0.25);
  const low = Math.min(options.initial ?? best, ...near, best);
  const yMin =
    all.length === 0 && options.initial === undefined
      ? 0.5
      : Math.max(0, Math.floor((low - 0.03) * 20) / 20);
  const yMax = 1;
  const xMax = Math.max(options.trials, points.length, 1);
  const plotRight = W - PAD.right - (you.length > 0 ? YOU : 0);
  const x = (trial: number) => PAD.left + ((trial - 0.5) / xMax) * (plotRight - PAD.left);
  const y = (v: number) =>
    PAD.top + ((yMax - Math.max(v, yMin)) / (yMax - yMin)) * (H - PAD.top - PAD.bottom);

  const svg = s("svg", {
    viewBox: `0 0 ${W} ${H}`,
    class: "chart",
    role: "img",
    "aria-label": `Dev F1 per trial: ${points.length} of ${options.trials} trials`,
    "data-points": points.length,
    "data-y-min": yMin.toFixed(2),
  });

  const steps = Math.round((yMax - yMin) / 0.05);
  const every = steps > 8 ? 2 : 1;
  for (let i = 0; i <= steps; i += every) {
    const v = yMin + i * 0.05;
    svg.append(
      s("line", { x1: PAD.left, x2: plotRight, y1: y(v), y2: y(v), class: "gridline" }),
      s(
        "text",
        { x: PAD.left - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" },
        v.toFixed(2),
      ),
    );
  }
  const tickEvery = Math.max(1, Math.ceil(xMax / 10));
  for (let t = 1; t <= xMax; t += tickEvery) {
    svg.append(
      s("text", { x: x(t), y: H - PAD.bottom + 16, class: "axis", "text-anchor": "middle" }, t),
    );
  }
  svg.append(
    s(
      "text",
      { x: (plotRight + PAD.left) / 2, y: H - 4, class: "axis-title", "text-anchor": "middle" },
      "trial",
    ),
    s(
      "text",
      {
        x: 12,
        y: (H - PAD.bottom + PAD.top) / 2,
        class: "axis-title",
        "text-anchor": "middle",
        transform: `rotate(-90 12 ${(H - PAD.bottom + PAD.top) / 2})`,
      },
      "dev F1 (spam)",
    ),
  );
  if (you.length > 0) {
    const cx = plotRight + YOU / 2;
    svg.append(
      s("line", {
        x1: plotRight + 4,
        x2: plotRight + 4,
        y1: PAD.top,
        y2: H - PAD.bottom,
        class: "gridline",
      }),
      s("text", { x: cx, y: H - PAD.bottom + 16, class: "axis", "text-anchor": "middle" }, "you"),
    );
  }

  if (options.initial !== undefined) {
    svg.append(
      s("line", {
        x1: PAD.left,
        x2: plotRight,
        y1: y(options.initial),
        y2: y(options.initial),
        class: "initial-line",
      }),
      s(
        "text",
        {
          x: plotRight - 4,
          y: y(options.initial) - 5,
          class: "initial-label",
          "text-anchor": "end",
        },
        `initial ${score(options.initial)}`,
      ),
    );
  }

  const clickable = (el: SVGElement, key: string) => {
    if (options.onSelect === undefined) return el;
    el.setAttribute("tabindex", "0");
    el.setAttribute("role", "button");
    el.addEventListener("click", () => options.onSelect?.(key));
    el.addEventListener("keydown", (e) => {
      if ((e as KeyboardEvent).key === "Enter") options.onSelect?.(key);
    });
    return el;
  };
  const selectedClass = (key: string) => (key === options.selected ? " selected" : "");

  if (points.length > 0) {
    let d = "";
    let previous = options.initial;
    for (const p of points) {
      const left = x(p.trial) - (x(1) - PAD.left);
      d += `${d === "" ? "M" : " L"} ${left} ${y(previous ?? p.bestSoFar)} L ${left} ${y(p.bestSoFar)}`;
      previous = p.bestSoFar;
    }
    const last = points[points.length - 1] as ChartPoint;
    d += ` L ${x(last.trial)} ${y(last.bestSoFar)}`;
    svg.append(s("path", { d, class: "best-line" }));
  }
  for (const p of points) {
    const title = s(
      "title",
      {},
      `Trial ${p.trial}: F1 ${score(p.f1)}${p.runtime === "python" ? " (trained in Python)" : ""}\n${p.label}`,
    );
    const classes = `point${p.improved ? " improved" : ""}${p.runtime === "python" ? " python" : ""}${selectedClass(p.key)}`;
    if (p.f1 < yMin) {
      // An outlier: a marker on the bottom edge with its real score.
      const px = x(p.trial);
      const py = H - PAD.bottom;
      svg.append(
        clickable(
          s(
            "path",
            {
              d: `M ${px - 5} ${py - 8} L ${px + 5} ${py - 8} L ${px} ${py - 1} Z`,
              class: `${classes} clamped`,
              "data-trial": p.trial,
              "data-clamped": score(p.f1),
            },
            title,
          ),
          p.key,
        ),
        s(
          "text",
          { x: px, y: py - 11, class: "clamp-label", "text-anchor": "middle" },
          score(p.f1),
        ),
      );
      continue;
    }
    svg.append(
      clickable(
        s(
          "circle",
          {
            cx: x(p.trial),
            cy: y(p.f1),
            r: p.improved ? 5.5 : 4,
            class: classes,
            "data-trial": p.trial,
          },
          title,
        ),
        p.key,
      ),
    );
  }
  you.forEach((p) => {
    const cx = plotRight + YOU / 2;
    const cy = y(p.f1);
    svg.append(
      clickable(
        s(
          "path",
          {
            d: `M ${cx} ${cy - 6} L ${cx + 6} ${cy} L ${cx} ${cy + 6} L ${cx - 6} ${cy} Z`,
            class: `you-point${selectedClass(p.key)}`,
            "data-you": p.trial,
          },
          s("title", {}, `You: F1 ${score(p.f1)}\n${p.label}`),
        ),
        p.key,
      ),
    );
  });
  if (points.length === 0 && you.length === 0) {
    svg.append(
      s(
        "text",
        {
          x: (W + PAD.left) / 2,
          y: (H - PAD.bottom + PAD.top) / 2,
          class: "empty",
          "text-anchor": "middle",
        },
        options.empty ?? "Press Tune: each trial's dev F1 appears here.",
      ),
    );
  }

  const item = (swatch: string, text: string) =>
    h("span", { class: "legend-item" }, h("span", { class: `swatch ${swatch}` }), text);
  const legend = h(
    "div",
    { class: "legend", "data-legend": "" },
    item("improved", "new best"),
    item("point", "other trial"),
    item("best-line", "best so far"),
    item("initial-line", "initial"),
    item("you-point", "you (Evaluate)"),
    item("python", "trained in Python"),
    all.some((p) => p.f1 < yMin) ? item("clamped", `below ${yMin.toFixed(2)} (score shown)`) : null,
  );
  // Shown instead of the axis titles where the chart is too narrow for both
  // them and legible tick labels (styles.css).
  const caption = h("figcaption", { class: "chart-caption" }, "Dev F1 (spam) per trial");
  return h("figure", { class: "chart-figure" }, caption, svg, legend);
}

/** The knobs the second plot can show. */
export const KNOBS = ["threshold", "vocab_size", "smoothing"] as const;
export type Knob = (typeof KNOBS)[number];

/** A point of the knob plot. */
export interface KnobPoint {
  readonly value: number;
  readonly f1: number;
  readonly kind: "optimizer" | "you" | "initial";
}

/** Dev F1 against one knob (log scale for vocab_size and smoothing). */
export function renderKnobChart(points: readonly KnobPoint[], knob: Knob): SVGSVGElement {
  const w = 560;
  const hh = 170;
  const pad = { left: 48, right: 16, top: 10, bottom: 32 };
  const log = knob !== "threshold";
  const tx = (v: number) => (log ? Math.log10(Math.max(v, 1e-9)) : v);
  const xs = points.map((p) => tx(p.value));
  const lo = xs.length === 0 ? 0 : Math.min(...xs);
  const hi = xs.length === 0 ? 1 : Math.max(...xs);
  const span = hi - lo || 1;
  const x = (v: number) =>
    pad.left + ((tx(v) - lo + span * 0.05) / (span * 1.1)) * (w - pad.left - pad.right);
  const f1s = points.map((p) => p.f1);
  const yMin = f1s.length === 0 ? 0 : Math.max(0, Math.floor((Math.min(...f1s) - 0.02) * 10) / 10);
  const y = (v: number) => pad.top + ((1 - v) / (1 - yMin || 1)) * (hh - pad.top - pad.bottom);
  const svg = s("svg", {
    viewBox: `0 0 ${w} ${hh}`,
    class: "knob-chart",
    role: "img",
    "aria-label": `Dev F1 against ${knob}`,
    "data-knob": knob,
    "data-points": points.length,
  });
  for (const v of [yMin, (1 + yMin) / 2, 1]) {
    svg.append(
      s("line", { x1: pad.left, x2: w - pad.right, y1: y(v), y2: y(v), class: "gridline" }),
      s(
        "text",
        { x: pad.left - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" },
        v.toFixed(2),
      ),
    );
  }
  if (points.length > 0) {
    const ticks = [lo, lo + span / 2, hi].map((t) => (log ? 10 ** t : t));
    for (const t of ticks) {
      const label =
        knob === "vocab_size" ? String(Math.round(t)) : Number(t.toPrecision(2)).toString();
      svg.append(
        s(
          "text",
          { x: x(t), y: hh - pad.bottom + 16, class: "axis", "text-anchor": "middle" },
          label,
        ),
      );
    }
  }
  svg.append(
    s(
      "text",
      { x: (w + pad.left) / 2, y: hh - 3, class: "axis-title", "text-anchor": "middle" },
      `${knob}${log ? " (log scale)" : ""}`,
    ),
  );
  for (const p of points) {
    const cx = x(p.value);
    const cy = y(p.f1);
    svg.append(
      p.kind === "you"
        ? s("path", {
            d: `M ${cx} ${cy - 5} L ${cx + 5} ${cy} L ${cx} ${cy + 5} L ${cx - 5} ${cy} Z`,
            class: "you-point",
          })
        : s("circle", { cx, cy, r: 4, class: p.kind === "initial" ? "point initial" : "point" }),
    );
  }
  return svg;
}
