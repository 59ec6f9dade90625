// The toy lab's page: controls, the play loop and its update rate, drawing and uploading points.
"use strict";

function labControls(lab) {
  const num = (id, value, step) => GF.el("input", { id, type: "number", value, step: step || "any", class: "short" });
  const c = {
    recipe: GF.el("select", { id: "lab-recipe" }), seed: num("lab-seed", 0, 1), perUpdate: num("lab-per-update", 1, 1),
    auto: GF.el("input", { type: "checkbox", id: "lab-auto", checked: true }),
    loss: GF.el("select", { id: "lab-loss" }), lrD: num("lab-lr-d", ""), lrG: num("lab-lr-g", ""),
    dSteps: num("lab-d-steps", 1, 1), metrics: GF.el("div", { id: "lab-metrics", class: "metrics" }),
    rate: GF.el("span", { id: "lab-rate", class: "muted", text: "" }), note: GF.el("div", {}),
  };
  const button = (id, text, fn) => GF.el("button", { id, onclick: fn }, text);
  c.play = button("lab-play", "Play", () => lab.toggle());
  c.play.disabled = true;  // until the first game exists
  c.node = GF.el("div", { class: "lab-controls" },
    GF.el("div", { class: "controls" }, GF.el("label", {}, "toy ", c.recipe), GF.el("label", {}, "seed ", c.seed),
          button("lab-new", "New game", () => lab.create())),
    GF.el("div", { class: "controls" }, c.play, button("lab-step-d", "Step D", () => lab.once("d")),
          button("lab-step-g", "Step G", () => lab.once("g")), button("lab-step", "Step both", () => lab.once("both")),
          GF.el("label", {}, "steps per update ", c.perUpdate),
          GF.el("label", { title: "as many steps per update as keep about 12 updates a second" }, c.auto, " auto"), c.rate),
    GF.el("div", { class: "controls" }, GF.el("label", {}, "loss ", c.loss), GF.el("label", {}, "lr D ", c.lrD),
          GF.el("label", {}, "lr G ", c.lrG), GF.el("label", {}, "D steps ", c.dSteps),
          button("lab-apply", "Apply", () => lab.apply())), c.note, c.metrics);
  return c;
}

function showLabConfig(c, config) {
  c.loss.replaceChildren(...(config.losses || [config.loss]).map((l) => GF.el("option", { value: l, text: l })));
  c.loss.value = config.loss; c.lrD.value = config.lr_d; c.lrG.value = config.lr_g; c.dSteps.value = config.d_steps;
}

function showLabMetrics(c, s) {
  const m = s.metrics || {};
  const shown = ["modes", "hq", "d_loss", "g_loss"].filter((k) => m[k] !== null && m[k] !== undefined)
    .map((k) => GF.el("span", { class: "metric" }, GF.el("b", { text: k }), " " + GF.fmt(m[k])));
  c.metrics.replaceChildren(GF.el("span", { class: "metric", id: "lab-step-count" }, GF.el("b", { text: "step" }), " " + s.step),
                            ...shown);
}

// Steps per update for a steady picture: more while an update takes under 60 ms, fewer past 90 ms
// (about 12 updates a second whatever the CPU's other load; one step per update at the least).
function adaptSteps(n, ms) {
  if (ms < 60) return Math.min(n + 1, 50);
  if (ms > 90) return Math.max(n - 1, 1);
  return n;
}

function drawingTools(lab) {
  const status = GF.el("span", { class: "muted", id: "draw-count", text: "" });
  const drawMode = GF.el("input", { type: "checkbox", id: "lab-draw" });
  const upload = GF.el("input", { type: "file", id: "lab-csv", accept: ".csv,text/csv,text/plain",
    onchange: () => upload.files[0] && lab.fromCsv(upload.files[0]) });
  const node = GF.el("div", { class: "controls" }, GF.el("label", {}, drawMode, " draw points (click and drag)"),
    GF.el("button", { id: "lab-train-drawn", onclick: () => lab.fromDrawn() }, "Train on my points"),
    GF.el("button", { onclick: () => { lab.drawn = []; lab.redraw(); status.textContent = ""; } }, "Clear"),
    status, GF.el("label", {}, "or upload a CSV of x,y ", upload));
  return { node, drawMode, status };
}

GF.labView = function (view) {
  const canvas = GF.el("canvas", { id: "lab-canvas", width: 520, height: 520 });
  const lab = { id: null, state: null, playing: false, drawn: [], updates: [] };
  const c = labControls(lab), tools = drawingTools(lab);
  const fail = (e) => { GF.notice(c.note, e.message); lab.playing = false; c.play.textContent = "Play"; };
  lab.redraw = () => GF.drawLab(canvas, lab.state, lab.drawn);
  lab.show = (s) => { lab.state = s; lab.redraw(); showLabMetrics(c, s); };
  lab.started = (d) => {
    lab.id = d.id; lab.show(d.state); showLabConfig(c, d.state.config); GF.notice(c.note, ""); c.play.disabled = false;
  };
  lab.create = (extra) => GF.post("/api/lab", { recipe: c.recipe.value, seed: +c.seed.value, ...(extra || {}) })
    .then(lab.started).catch(fail);
  // A 32x32 heatmap (drawn smoothed) and 80 arrows: the picture reads the same as at 40x40 and costs less a frame.
  lab.step = (which, n) => GF.post(`/api/lab/${lab.id}/step`, { which, n, grid: 32, arrows: 80 }).then((d) => lab.show(d.state));
  lab.once = (which) => lab.id && lab.step(which, 1).catch(fail);
  const given = (input) => (input.value === "" ? null : Number(input.value));  // 0 is a value (refused), not "no change"
  lab.apply = () => {
    const unreadable = GF.unreadableNumber([c.lrD, c.lrG, c.dSteps], "2e-4");  // not sent as "no change"
    if (unreadable) return fail(unreadable);
    return GF.post(`/api/lab/${lab.id}/set`, { loss: c.loss.value, lr_d: given(c.lrD), lr_g: given(c.lrG),
                                                d_steps: given(c.dSteps) })
      .then((d) => { lab.show(d.state); showLabConfig(c, d.state.config); GF.notice(c.note, "changed", "ok"); }).catch(fail);
  };
  lab.loop = async () => {
    while (lab.playing && lab.id) {
      const started = performance.now(), n = Math.max(1, +c.perUpdate.value || 1);
      try { await lab.step("both", n); } catch (e) { fail(e); return; }
      const now = performance.now();
      if (c.auto.checked) c.perUpdate.value = adaptSteps(n, now - started);
      lab.updates = lab.updates.filter((t) => now - t < 2000).concat([now]);
      if (lab.updates.length > 1) {
        const rate = (lab.updates.length - 1) / ((now - lab.updates[0]) / 1000);
        c.rate.textContent = `${rate.toFixed(1)} updates/s`; c.rate.dataset.rate = rate.toFixed(2);
      }
    }
  };
  lab.toggle = () => { lab.playing = !lab.playing; c.play.textContent = lab.playing ? "Pause" : "Play"; if (lab.playing) lab.loop(); };
  lab.fromDrawn = () => {
    if (lab.drawn.length < 8) return GF.notice(c.note, "draw at least 8 points first");
    lab.create({ recipe: "ring-8", points: lab.drawn }).then(() => { lab.drawn = []; tools.status.textContent = ""; });
  };
  lab.fromCsv = (file) => GF.call("POST", `/api/lab/csv?recipe=ring-8&seed=${+c.seed.value}`, undefined, file)
    .then(lab.started).catch(fail);
  GF.stopLab = () => { lab.playing = false; GF.stopLab = null; };
  enableDrawing(canvas, lab, tools);
  view.append(GF.el("h1", {}, "Toy lab"), GF.el("p", { class: "muted" },
    "Green: real points and where D says real; purple: G's points and where D says fake; arrows: where G's step moves its points; grey mesh: G's image of a grid of noise."),
    c.node, GF.el("div", { class: "lab" }, canvas), tools.node);
  GF.get("/api/lab/recipes").then((d) => {
    c.recipe.replaceChildren(...d.recipes.map((r) => GF.el("option", { value: r, text: r })));
    lab.create();
  }).catch(fail);
};

function enableDrawing(canvas, lab, tools) {
  let down = false;
  const add = (e) => {
    if (!tools.drawMode.checked) return;
    const rect = canvas.getBoundingClientRect();
    const bounds = lab.state && lab.state.kind !== "gan1d" ? lab.state.bounds : [-2, 2, -2, 2];
    const px = (e.clientX - rect.left) * canvas.width / rect.width, py = (e.clientY - rect.top) * canvas.height / rect.height;
    const [x0, x1, y0, y1] = bounds;
    lab.drawn.push([x0 + px / canvas.width * (x1 - x0), y0 + (canvas.height - py) / canvas.height * (y1 - y0)]);
    tools.status.textContent = `${lab.drawn.length} points drawn`;
    lab.redraw();
  };
  canvas.addEventListener("mousedown", (e) => { down = true; add(e); });
  canvas.addEventListener("mousemove", (e) => down && add(e));
  window.addEventListener("mouseup", () => (down = false));
}
