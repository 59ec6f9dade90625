// The toy lab: GAN Lab's view on genforge's toys. D's surface as a heatmap, real and generated points,
// G's gradient arrows, G's manifold; play / pause / step D, G or both; change the game between steps;
// draw your own points or upload a CSV. The server plays the game (genforge.lab); this file draws it.
"use strict";

const REAL = "#1f9d55", FAKE = "#8e44ad", SOURCE = "#d97706";

function labView(bounds, W, H) {
  const [x0, x1, y0, y1] = bounds;
  return { x: (x) => (x - x0) / (x1 - x0) * W, y: (y) => H - (y - y0) / (y1 - y0) * H,
           back: (px, py) => [x0 + px / W * (x1 - x0), y0 + (H - py) / H * (y1 - y0)] };
}

// D's probability (or normalised critic) per cell: purple where D says fake, green where it says real.
function drawHeatmap(ctx, heat, W, H) {
  const n = Math.round(Math.sqrt(heat.values.length)), cells = document.createElement("canvas");
  cells.width = n; cells.height = n;
  const c = cells.getContext("2d"), img = c.createImageData(n, n);
  heat.values.forEach((v, i) => {
    const row = n - 1 - Math.floor(i / n), col = i % n, at = (row * n + col) * 4;  // row 0 of the data is y0 (bottom)
    img.data[at] = 142 + (31 - 142) * v; img.data[at + 1] = 68 + (157 - 68) * v; img.data[at + 2] = 173 + (85 - 173) * v;
    img.data[at + 3] = 70 + 90 * Math.abs(v - 0.5) * 2;
  });
  c.putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(cells, 0, 0, W, H);
}

function drawManifold(ctx, v, points, shape) {
  if (!points || !points.length || !shape || shape.length !== 2) return;
  const [rows, cols] = shape;
  ctx.strokeStyle = "rgba(60,60,60,0.35)"; ctx.lineWidth = 1;
  const at = (r, c) => points[r * cols + c];
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) {
    const p = at(r, c);
    for (const q of [c + 1 < cols ? at(r, c + 1) : null, r + 1 < rows ? at(r + 1, c) : null]) {
      if (!p || !q) continue;
      ctx.beginPath(); ctx.moveTo(v.x(p[0]), v.y(p[1])); ctx.lineTo(v.x(q[0]), v.y(q[1])); ctx.stroke();
    }
  }
}

function drawPoints(ctx, v, points, color, radius) {
  ctx.fillStyle = color;
  for (const p of points || []) { ctx.beginPath(); ctx.arc(v.x(p[0]), v.y(p[1]), radius, 0, 2 * Math.PI); ctx.fill(); }
}

function drawArrows(ctx, v, arrows, scale) {
  if (!arrows || !scale) return;
  ctx.strokeStyle = "rgba(20,20,20,0.7)"; ctx.lineWidth = 1;
  for (const [x, y, dx, dy] of arrows) {
    const ax = v.x(x), ay = v.y(y), bx = v.x(x + dx * scale), by = v.y(y + dy * scale);
    const angle = Math.atan2(by - ay, bx - ax);
    ctx.beginPath(); ctx.moveTo(ax, ay); ctx.lineTo(bx, by);
    ctx.lineTo(bx - 4 * Math.cos(angle - 0.5), by - 4 * Math.sin(angle - 0.5));
    ctx.moveTo(bx, by); ctx.lineTo(bx - 4 * Math.cos(angle + 0.5), by - 4 * Math.sin(angle + 0.5));
    ctx.stroke();
  }
}

// 1-D toys: D(x) as a curve over x (y is the probability axis), real and fake values as ticks, G's push as arrows.
function draw1d(ctx, s, v, W) {
  const values = s.heatmap.values, n = values.length, [x0, x1] = s.bounds;
  ctx.strokeStyle = "#2f6fde"; ctx.lineWidth = 2; ctx.beginPath();
  values.forEach((p, i) => { const x = x0 + (i + 0.5) * (x1 - x0) / n; i ? ctx.lineTo(v.x(x), v.y(p)) : ctx.moveTo(v.x(x), v.y(p)); });
  ctx.stroke();
  const ticks = (xs, y, color) => { ctx.fillStyle = color; for (const x of xs) ctx.fillRect(v.x(x) - 1, v.y(y) - 6, 2, 12); };
  ticks(s.real, 0.08, REAL); ticks(s.fake, 0.2, FAKE);
  const arrows = (s.arrows || []).map(([x, dx]) => [x, 0.2, dx, 0]);
  drawArrows(ctx, v, arrows, s.arrow_scale);
  ctx.fillStyle = "#555"; ctx.fillText("D(x)", 6, 14); ctx.fillText(`${GF.fmt(x0)} … ${GF.fmt(x1)}`, W - 90, 14);
}

GF.drawLab = function (canvas, s, drawn) {
  const ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height;
  ctx.clearRect(0, 0, W, H);
  ctx.font = "12px sans-serif";
  if (!s) { drawPoints(ctx, labView([-2, 2, -2, 2], W, H), drawn, REAL, 3); return; }
  const v = labView(s.bounds, W, H);
  if (s.kind === "gan1d") return draw1d(ctx, s, v, W);
  drawHeatmap(ctx, s.heatmap, W, H);
  drawManifold(ctx, v, s.manifold, s.manifold_shape);
  if (s.source) drawPoints(ctx, v, s.source, SOURCE, 1.5);
  drawPoints(ctx, v, s.real, REAL, 2);
  drawPoints(ctx, v, s.fake, FAKE, 2);
  drawArrows(ctx, v, s.arrows, s.arrow_scale);
  drawPoints(ctx, v, drawn, "#111", 3);
};
