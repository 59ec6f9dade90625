// Line charts drawn on a canvas: several series, smoothing, log scale and reference lines.
// No library: the studio ships nothing it did not write and fetches nothing at run time.
"use strict";
window.GF = window.GF || {};

GF.COLORS = ["#2f6fde", "#e0552d", "#2a9d57", "#9b4dca", "#c7961c", "#1aa3b8", "#d6457c", "#6b7280"];

// Exponential moving average with the start-up bias removed (a 0.9 smoothing does not start at 0).
GF.smooth = function (points, weight) {
  if (!weight) return points;
  let avg = 0, norm = 0;
  return points.map(([x, y]) => {
    avg = weight * avg + (1 - weight) * y;
    norm = weight * norm + (1 - weight);
    return [x, avg / norm];
  });
};

// At most `max` points, evenly picked, so a long run draws as fast as a short one.
GF.thin = function (points, max) {
  if (points.length <= max) return points;
  const every = points.length / max, out = [];
  for (let i = 0; i < max; i++) out.push(points[Math.floor(i * every)]);
  out.push(points[points.length - 1]);
  return out;
};

GF.niceTicks = function (lo, hi, count) {
  const span = hi - lo || Math.abs(hi) || 1;
  const raw = span / count, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(+t.toPrecision(12));
  return ticks;
};

// Ticks of a log axis (``lo``, ``hi``: log10 of the range) at round values: 1, 2 and 5 times a power of
// ten, only the powers when that is too many, linear round values inside one short decade.
GF.logTicks = function (lo, hi, count) {
  const round = [];
  for (let e = Math.floor(lo); e <= Math.ceil(hi); e++) {
    for (const m of [1, 2, 5]) { const t = e + Math.log10(m); if (t >= lo - 1e-9 && t <= hi + 1e-9) round.push(t); }
  }
  if (round.length > 2 * count) {
    const decades = round.filter((t) => Math.abs(t - Math.round(t)) < 1e-9), every = Math.ceil(decades.length / (2 * count));
    return decades.filter((t, i) => i % every === 0);
  }
  if (round.length >= 2) return round;
  return GF.niceTicks(Math.pow(10, lo), Math.pow(10, hi), count).filter((v) => v > 0).map(Math.log10);
};

GF.fmt = function (v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "-";
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
  return +v.toPrecision(4) + "";
};

function chartRange(series, refLines, log) {
  let xs = [Infinity, -Infinity], ys = [Infinity, -Infinity];
  const take = (x, y) => {
    if (log && y <= 0) return;
    const v = log ? Math.log10(y) : y;
    xs = [Math.min(xs[0], x), Math.max(xs[1], x)];
    ys = [Math.min(ys[0], v), Math.max(ys[1], v)];
  };
  series.forEach((s) => s.points.forEach(([x, y]) => Number.isFinite(y) && take(x, y)));
  (refLines || []).forEach((r) => xs[0] < Infinity && take(xs[0], r.y));
  if (xs[0] === Infinity) return null;
  if (ys[0] === ys[1]) ys = [ys[0] - 1, ys[1] + 1];
  if (xs[0] === xs[1]) xs = [xs[0] - 1, xs[1] + 1];
  const pad = (ys[1] - ys[0]) * 0.05;
  return { x: xs, y: [ys[0] - pad, ys[1] + pad] };
}

function drawAxes(ctx, box, range, log) {
  ctx.strokeStyle = "#d5d9e0"; ctx.fillStyle = "#555"; ctx.lineWidth = 1; ctx.font = "11px sans-serif";
  ctx.textAlign = "right"; ctx.textBaseline = "middle";
  for (const t of (log ? GF.logTicks : GF.niceTicks)(range.y[0], range.y[1], 4)) {
    const y = box.y(t);
    ctx.beginPath(); ctx.moveTo(box.left, y); ctx.lineTo(box.right, y); ctx.stroke();
    ctx.fillText(log ? GF.fmt(+Math.pow(10, t).toPrecision(6)) : GF.fmt(t), box.left - 4, y);
  }
  ctx.textAlign = "center"; ctx.textBaseline = "top";
  for (const t of GF.niceTicks(range.x[0], range.x[1], 5)) ctx.fillText(GF.fmt(t), box.x(t), box.bottom + 4);
}

function drawLine(ctx, box, points, log, color, width, dash) {
  ctx.strokeStyle = color; ctx.lineWidth = width; ctx.setLineDash(dash || []);
  ctx.beginPath();
  let started = false;
  for (const [x, y] of points) {
    if (!Number.isFinite(y) || (log && y <= 0)) { started = false; continue; }
    const px = box.x(x), py = box.y(log ? Math.log10(y) : y);
    if (started) ctx.lineTo(px, py); else ctx.moveTo(px, py);
    started = true;
  }
  ctx.stroke(); ctx.setLineDash([]);
}

// Draws `opts.series` ([{name, points: [[x, y]], color}]) on `canvas`; returns whether anything was drawn.
GF.lineChart = function (canvas, opts) {
  const ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height;
  ctx.clearRect(0, 0, W, H);
  const series = opts.series.map((s, i) => ({ ...s, color: s.color || GF.COLORS[i % GF.COLORS.length],
                                               points: GF.thin(s.points, 1500) }));
  const range = chartRange(series, opts.refLines, opts.log);
  ctx.fillStyle = "#333"; ctx.font = "bold 12px sans-serif"; ctx.textAlign = "left"; ctx.textBaseline = "top";
  ctx.fillText(opts.title || "", 6, 4);
  if (!range) { ctx.fillStyle = "#888"; ctx.fillText("no data yet", W / 2 - 30, H / 2); return false; }
  const lines = drawLegend(ctx, series, W, ctx.measureText(opts.title || "").width + 6);
  const box = { left: 52, right: W - 10, top: 10 + 13 * lines, bottom: H - 20 };
  box.x = (x) => box.left + (x - range.x[0]) / (range.x[1] - range.x[0]) * (box.right - box.left);
  box.y = (y) => box.bottom - (y - range.y[0]) / (range.y[1] - range.y[0]) * (box.bottom - box.top);
  drawAxes(ctx, box, range, opts.log);
  for (const r of opts.refLines || []) {
    drawLine(ctx, box, [[range.x[0], r.y], [range.x[1], r.y]], opts.log, "#999", 1, [5, 4]);
    ctx.fillStyle = "#777"; ctx.textAlign = "right"; ctx.textBaseline = "bottom";
    if (!opts.log || r.y > 0) ctx.fillText(r.label, box.right, box.y(opts.log ? Math.log10(r.y) : r.y) - 2);
  }
  series.forEach((s) => {
    if (opts.smooth) drawLine(ctx, box, s.points, opts.log, s.color + "40", 1);
    drawLine(ctx, box, GF.smooth(s.points, opts.smooth), opts.log, s.color, 1.6);
  });
  return true;
};

// The series' names after the title, wrapped onto more lines when they do not fit; returns the lines used.
function drawLegend(ctx, series, width, titleWidth) {
  ctx.font = "11px sans-serif"; ctx.textAlign = "left"; ctx.textBaseline = "top";
  let x = titleWidth + 20, line = 0;
  for (const s of series) {
    const w = 18 + ctx.measureText(s.name).width;
    if (x + w > width - 6 && x > 60) { x = 60; line += 1; }
    const y = 2 + 13 * line;
    ctx.fillStyle = s.color; ctx.fillRect(x, y + 4, 10, 3);
    ctx.fillStyle = "#333"; ctx.fillText(s.name, x + 13, y);
    x += w;
  }
  return line + 1;
}
