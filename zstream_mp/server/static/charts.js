"use strict";
// Two small charts in plain SVG (no library, nothing remote, nothing inline for the CSP):
// bars of events/s per bucket, and lines of a numeric payload field over receive time.
// The SVG is stretched to its box (preserveAspectRatio none, strokes not scaled); every
// label is HTML beside it, so text never stretches.
const PALETTE = ["#3a6df0", "#1f9d55", "#c77d0a", "#9b4dca", "#c0392b", "#1aa3b8", "#7a869a", "#e05a9d"];
const W = 600, H = 120;

const charts = {
  // `values`: events/s per bucket, oldest first.
  bars(svg, values) {
    const max = Math.max(1, ...values);
    const step = W / values.length;
    const nodes = [zs.svg("line", { x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5, class: "axis", "vector-effect": "non-scaling-stroke" })];
    values.forEach((v, i) => {
      if (v <= 0) return;
      const h = Math.max(1.5, (v / max) * (H - 6));
      nodes.push(zs.svg("rect", { x: (i * step + step * 0.12).toFixed(2), y: (H - h).toFixed(2),
        width: (step * 0.76).toFixed(2), height: h.toFixed(2), class: "bar-fill" },
        zs.svg("title", {}, `${zs.rate(v)} events/s`)));
    });
    svg.replaceChildren(...nodes);
    return max;
  },
  // `series`: Map name -> [{t, v}], drawn against [t0, t1]; returns [min, max] of values.
  lines(svg, series, t0, t1) {
    let lo = Infinity, hi = -Infinity;
    for (const pts of series.values()) for (const p of pts) { if (p.v < lo) lo = p.v; if (p.v > hi) hi = p.v; }
    const nodes = [zs.svg("line", { x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5, class: "axis", "vector-effect": "non-scaling-stroke" })];
    if (!isFinite(lo)) { svg.replaceChildren(...nodes); return null; }
    if (hi === lo) { hi += 1; lo -= 1; }
    const span = Math.max(1e-3, t1 - t0);
    const x = (t) => ((t - t0) / span) * W;
    const y = (v) => H - 4 - ((v - lo) / (hi - lo)) * (H - 8);
    let colour = 0;
    for (const [name, pts] of series) {
      const stroke = PALETTE[colour++ % PALETTE.length];
      const d = pts.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join("");
      nodes.push(zs.svg("path", { d, fill: "none", stroke, "stroke-width": 2, "vector-effect": "non-scaling-stroke",
        "data-series": name }, zs.svg("title", {}, name)));
      if (pts.length === 1) {
        nodes.push(zs.svg("circle", { cx: x(pts[0].t), cy: y(pts[0].v), r: 2.5, fill: stroke }));
      }
    }
    svg.replaceChildren(...nodes);
    return [lo, hi];
  },
  colour(i) { return PALETTE[i % PALETTE.length]; },
  formatValue(v) {
    if (!isFinite(v)) return "–";
    const a = Math.abs(v);
    if (a !== 0 && (a < 0.01 || a >= 1e6)) return v.toExponential(2);
    return String(Number(v.toPrecision(4)));
  },
};
