import { s, score } from "./dom.ts";

/** A point of the chart: one trial's dev F1 and the best so far. */
export interface ChartPoint {
  readonly trial: number;
  readonly f1: number;
  readonly bestSoFar: number;
  readonly improved: boolean;
  readonly label: string;
}

const W = 560;
const H = 240;
const PAD = { left: 48, right: 16, top: 14, bottom: 34 };

/**
 * Draws the metric per trial (dots), the best so far (a step line) and the
 * initial configuration's score (a dashed line) as inline SVG.
 */
export function renderTrialChart(
  points: readonly ChartPoint[],
  options: { initial?: number; trials: number },
): SVGSVGElement {
  const values = points.map((p) => p.f1);
  if (options.initial !== undefined) values.push(options.initial);
  const yMin =
    values.length === 0 ? 0.5 : Math.max(0, Math.floor((Math.min(...values) - 0.02) * 20) / 20);
  const yMax = 1;
  const xMax = Math.max(options.trials, points.length, 1);
  const x = (trial: number) => PAD.left + ((trial - 0.5) / xMax) * (W - PAD.left - PAD.right);
  const y = (v: number) => PAD.top + ((yMax - v) / (yMax - yMin)) * (H - PAD.top - PAD.bottom);

  const svg = s("svg", {
    viewBox: `0 0 ${W} ${H}`,
    class: "chart",
    role: "img",
    "aria-label": `Dev F1 per trial: ${points.length} of ${options.trials} trials`,
    "data-points": points.length,
  });

  // Horizontal grid with labels.
  const steps = Math.round((yMax - yMin) / 0.05);
  const every = steps > 8 ? 2 : 1;
  for (let i = 0; i <= steps; i += every) {
    const v = yMin + i * 0.05;
    svg.append(
      s("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: "gridline" }),
      s(
        "text",
        { x: PAD.left - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" },
        v.toFixed(2),
      ),
    );
  }
  // Trial numbers.
  const tickEvery = Math.max(1, Math.ceil(xMax / 10));
  for (let t = 1; t <= xMax; t += tickEvery) {
    svg.append(
      s("text", { x: x(t), y: H - PAD.bottom + 16, class: "axis", "text-anchor": "middle" }, t),
    );
  }
  svg.append(
    s(
      "text",
      { x: (W + PAD.left) / 2, y: H - 4, class: "axis-title", "text-anchor": "middle" },
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

  if (options.initial !== undefined) {
    svg.append(
      s("line", {
        x1: PAD.left,
        x2: W - PAD.right,
        y1: y(options.initial),
        y2: y(options.initial),
        class: "initial-line",
      }),
      s(
        "text",
        {
          x: W - PAD.right - 4,
          y: y(options.initial) - 5,
          class: "initial-label",
          "text-anchor": "end",
        },
        `initial ${score(options.initial)}`,
      ),
    );
  }

  if (points.length > 0) {
    // Best-so-far as a step line, starting from the initial score when known.
    let d = "";
    let previous = options.initial;
    for (const p of points) {
      const left = x(p.trial) - (x(1) - PAD.left);
      if (d === "") d = `M ${left} ${y(previous ?? p.bestSoFar)}`;
      else d += ` L ${left} ${y(previous ?? p.bestSoFar)}`;
      d += ` L ${left} ${y(p.bestSoFar)}`;
      previous = p.bestSoFar;
    }
    const last = points[points.length - 1] as ChartPoint;
    d += ` L ${x(last.trial)} ${y(last.bestSoFar)}`;
    svg.append(s("path", { d, class: "best-line" }));
    for (const p of points) {
      svg.append(
        s(
          "circle",
          {
            cx: x(p.trial),
            cy: y(p.f1),
            r: p.improved ? 5.5 : 4,
            class: p.improved ? "point improved" : "point",
            "data-trial": p.trial,
          },
          s("title", {}, `Trial ${p.trial}: F1 ${score(p.f1)}\n${p.label}`),
        ),
      );
    }
  } else {
    svg.append(
      s(
        "text",
        {
          x: (W + PAD.left) / 2,
          y: (H - PAD.bottom + PAD.top) / 2,
          class: "empty",
          "text-anchor": "middle",
        },
        "Press Tune: each trial's dev F1 appears here.",
      ),
    );
  }
  return svg;
}
