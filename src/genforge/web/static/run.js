// One run, live: loss curves from an event stream, the samples timeline, plots, config, evaluation;
// and several runs compared (curves overlaid, grids at one step, the config keys that differ).
"use strict";

const LOG4 = -Math.log(4);  // the GAN value V(D, G) at the game's equilibrium (Goodfellow et al. 2014)

// Metric keys grouped into charts: losses, the GAN value (with its -log 4 line), D's outputs, speed, the rest.
// Training's final metrics (the row marked stage "final") are the table's, not a curve's last point.
GF.curveRows = (rows) => rows.filter((r) => r.stage !== "final");
GF.metricGroups = function (rows) {
  const keys = new Set();
  GF.curveRows(rows).forEach((r) => Object.entries(r).forEach(([k, v]) => k !== "step" && typeof v === "number" && keys.add(k)));
  const groups = { losses: [], "GAN value": [], "D outputs": [], "images/s": [], other: [] };
  for (const key of [...keys].sort()) {
    const last = key.split("/").pop();
    if (last === "images_per_s") groups["images/s"].push(key);
    else if (last === "value") groups["GAN value"].push(key);
    else if (last.startsWith("d_real") || last.startsWith("d_fake")) groups["D outputs"].push(key);
    else if (last.includes("loss") || last === "recon" || last === "kl" || last.includes("elbo")) groups.losses.push(key);
    else groups.other.push(key);
  }
  return Object.entries(groups).filter(([, ks]) => ks.length);
};

// Figures logged as NaN or infinite reach the page as null (JSON has neither) and draw no point: each
// key's first such step, so a diverged run says so rather than showing a curve that just stops.
GF.nonFinite = function (rows) {
  const first = {};
  GF.curveRows(rows).forEach((r) => Object.entries(r).forEach(([k, v]) => {
    if (v === null && !(k in first)) first[k] = r.step;
  }));
  return first;
};

GF.seriesOf = (rows, key, name) => ({ name: name || key,
  points: GF.curveRows(rows).filter((r) => typeof r[key] === "number").map((r) => [r.step, r[key]]) });

function chartPanel(getRows) {
  const smooth = GF.el("input", { type: "range", min: 0, max: 0.99, step: 0.01, value: 0.6, id: "smooth" });
  const log = GF.el("input", { type: "checkbox", id: "logscale" });
  const charts = GF.el("div", { class: "charts" });
  const draw = () => {
    const rows = getRows();
    charts.replaceChildren();
    for (const [title, keys] of GF.metricGroups(rows)) {
      const canvas = GF.el("canvas", { width: 460, height: 220, class: "chart", "data-title": title });
      charts.append(canvas);
      const series = keys.map((k) => GF.seriesOf(rows, k));
      // A log axis only where every value is positive (the GAN value is negative: it stays linear).
      const positive = series.every((ser) => ser.points.every(([, y]) => y > 0));
      GF.lineChart(canvas, { title: title + (log.checked && !positive ? " (linear: values <= 0)" : ""), series,
                             smooth: +smooth.value, log: log.checked && positive,
                             refLines: title === "GAN value" ? [{ y: LOG4, label: "-log 4" }] : [] });
    }
    if (!rows.length) charts.append(GF.el("p", { class: "muted", text: "no metrics logged yet" }));
    const broken = Object.entries(GF.nonFinite(rows));
    if (broken.length) charts.prepend(GF.el("div", { class: "notice error", id: "non-finite" },
      "not a number (NaN or infinite), so not drawn: " + broken.map(([k, step]) => `${k} from step ${step}`).join(", ") +
      " — the training diverged there; resume from an earlier checkpoint with a lower learning rate"));
  };
  smooth.oninput = draw; log.onchange = draw;
  const controls = GF.el("div", { class: "controls" }, GF.el("label", {}, "smoothing ", smooth),
                         GF.el("label", {}, log, " log scale"));
  return { node: GF.el("section", {}, GF.el("h2", {}, "Curves"), controls, charts), draw };
}

function timelinePanel(runId) {
  const img = GF.el("img", { class: "timeline-img", alt: "sample at this step" });
  const slider = GF.el("input", { type: "range", min: 0, max: 0, value: 0, id: "timeline" });
  const label = GF.el("span", { class: "muted", id: "timeline-step" });
  const link = GF.el("a", { class: "dl", download: "sample.png", title: "download PNG" }, "⤓");
  let frames = [], timer = null;
  const show = () => {
    const f = frames[+slider.value];
    img.hidden = link.hidden = !f;
    if (!f) { label.textContent = "no samples yet"; return; }
    img.src = GF.fileUrl(runId, f.name); link.href = img.src; link.download = f.name.replace("/", "-");
    label.textContent = `step ${f.step} (${+slider.value + 1} of ${frames.length})`;
  };
  const play = GF.el("button", { id: "play", onclick: () => {
    if (timer) { clearInterval(timer); timer = null; play.textContent = "Play"; return; }
    play.textContent = "Pause";
    if (+slider.value >= frames.length - 1) slider.value = 0;
    timer = setInterval(() => {
      if (+slider.value >= frames.length - 1) { play.click(); return; }
      slider.value = +slider.value + 1; show();
    }, 400);
    GF.timers.push(timer);
  } }, "Play");
  slider.oninput = show;
  const update = (timeline) => {
    const atEnd = +slider.value >= frames.length - 1;
    frames = timeline; slider.max = Math.max(0, frames.length - 1);
    if (atEnd) slider.value = slider.max;
    show();
  };
  return { node: GF.el("section", {}, GF.el("h2", {}, "Samples timeline"),
                       GF.el("div", { class: "controls" }, slider, play, label, link), img), update };
}

function metricsTable(result) {
  const rows = Object.entries(result || {}).filter(([, v]) => typeof v === "number" || typeof v === "string");
  return GF.el("table", { class: "kv" }, ...rows.map(([k, v]) =>
    GF.el("tr", {}, GF.el("th", { text: k }), GF.el("td", { text: typeof v === "number" ? GF.fmt(v) : v }))));
}

// eval.json's numbers beside the real-data floor (held-out real images scored the same way): the best a model can do.
function evalTable(result) {
  const floor = result.floor || {}, units = result.units || {};
  const keys = Object.keys(result).filter((k) => typeof result[k] === "number");
  return GF.el("table", { class: "kv eval", id: "eval-table" },
    GF.el("tr", {}, GF.el("th", { text: "metric" }), GF.el("th", { text: "this run" }), GF.el("th", { text: "real-data floor" }),
          GF.el("th", { text: "" })),
    ...keys.map((k) => GF.el("tr", {}, GF.el("th", { text: k }), GF.el("td", { text: GF.fmt(result[k]) }),
      GF.el("td", { text: typeof floor[k] === "number" ? GF.fmt(floor[k]) : "" }), GF.el("td", { class: "muted", text: units[k] || "" }))));
}

function evalPanel(runId, onDone) {
  const result = GF.el("div", { id: "eval-result" }), note = GF.el("div", {});
  const bar = GF.el("progress", { id: "eval-progress", max: 1, value: 0, hidden: true });
  const stage = GF.el("span", { class: "muted" });
  const n = GF.el("input", { type: "number", value: 2000, min: 10, id: "eval-n", class: "short",
    title: "samples to generate; toy points are judged by their protocol's own count (2,500, or every test point)" });
  const poll = (job) => {
    bar.hidden = false; bar.max = job.total || 1; bar.value = job.done;
    const words = [job.state, job.stage].filter((w, i, all) => w && all.indexOf(w) === i);  // not "done done"
    stage.textContent = `${words.join(" ")} ${job.done}/${job.total}`;
    if (job.state === "done") { bar.value = bar.max; onDone(); return; }
    if (job.state === "failed") { GF.notice(note, job.error); return; }
    setTimeout(() => GF.get(`/api/eval/job?id=${job.id}`).then(poll).catch((e) => GF.notice(note, e.message)), 500);
  };
  const start = GF.el("button", { id: "evaluate", onclick: () => {
    GF.notice(note, "");
    GF.post("/api/eval", { run: runId, n: +n.value }).then(poll).catch((e) => GF.notice(note, e.message));
  } }, "Evaluate");
  const show = (evalResult, finals, training) => {
    result.replaceChildren();
    // while a run trains, its eval/ figures are the latest training-time evaluation's, not its end's
    const title = training ? "metrics so far (the latest evaluation during training)" : "final metrics (training's end)";
    if (finals && Object.keys(finals).length) result.append(GF.el("h3", {}, title), metricsTable(finals));
    if (evalResult) result.append(GF.el("h3", {}, `eval.json (${evalResult.samples || "?"} samples, ${evalResult.reference || ""})`),
                                  evalTable(evalResult));
    if (!evalResult) result.append(GF.el("p", { class: "muted", text: "not evaluated yet" }));
  };
  const node = GF.el("section", {}, GF.el("h2", {}, "Evaluation"),
    GF.el("div", { class: "controls" }, GF.el("label", {}, "samples ", n), start, bar, stage), note, result);
  return { node, show };
}

function runHeader(runId, refresh) {
  const title = GF.el("h1", {}, runId), info = GF.el("span", { class: "muted", id: "run-info" });
  const badge = GF.el("span", { id: "run-status" }), note = GF.el("div", {});
  const act = (url, body) => GF.post(url, body).then(refresh).catch((e) => GF.notice(note, e.message));
  const stop = GF.el("button", { id: "stop", onclick: () => act("/api/stop", { run: runId }) }, "Stop");
  const toStep = GF.el("input", { id: "resume-steps", type: "number", min: 1, class: "short", placeholder: "to step",
                                  title: "the run's total steps after resuming (empty: its budget)" });
  const resume = GF.el("button", { id: "resume", onclick: () =>
    act("/api/resume", { run: runId, steps: toStep.value ? Number(toStep.value) : null }) }, "Resume");
  const explore = GF.el("a", { class: "button", href: `#/explore?id=${GF.q(runId)}` }, "Explore");
  // Fetched first, so a refusal (no checkpoint yet) is said on the page, not left as a cancelled download.
  const download = (format, label) => {
    const link = GF.el("a", { class: "button", id: `export-${format}`, download: "",
      title: `genforge export ${runId} --format ${format} (zipped)`,
      href: `/api/explore/export?run=${GF.q(runId)}&format=${format}` }, label);
    link.onclick = (event) => {
      event.preventDefault();
      GF.notice(note, `exporting ${format}…`, "ok");
      fetch(link.href).then(async (res) => {
        if (!res.ok) {
          const text = await res.text();
          let message = text;
          try { message = JSON.parse(text).error || text; } catch (e) { /* not JSON: the text itself */ }
          throw new Error(message || `${res.status} ${res.statusText}`);
        }
        const named = /filename="?([^";]+)"?/.exec(res.headers.get("Content-Disposition") || "");
        const url = URL.createObjectURL(await res.blob());
        const save = GF.el("a", { href: url, download: named ? named[1] : `${runId}-${format}.zip` });
        document.body.append(save); save.click(); save.remove();
        setTimeout(() => URL.revokeObjectURL(url), 60_000);
        GF.notice(note, "");
      }).catch((e) => GF.notice(note, e.message));
    };
    return link;
  };
  const exports = GF.el("span", { class: "muted" }, "export: ", download("onnx", "ONNX"),
                        download("torchscript", "TorchScript"), download("folder", "model folder"));
  const wait = GF.el("span", { class: "muted", id: "no-checkpoint" });
  // ready: a complete checkpoint (a model to explore, export or resume); every: train.checkpoint_every
  const update = (summary, ready, every) => {
    badge.replaceChildren(GF.statusBadge(summary.status));
    const total = summary.total_steps ? ` of ${summary.total_steps}` : "";
    info.textContent = `${summary.recipe} (${summary.family}) · step ${summary.step}${total}` +
      (summary.images_per_s ? ` · ${GF.fmt(summary.images_per_s)} img/s` : "");
    stop.hidden = summary.status !== "training";
    resume.hidden = toStep.hidden = summary.status === "training" || !ready;
    explore.hidden = exports.hidden = !ready;
    wait.textContent = ready ? "" : summary.status === "training"
      ? `explore and export from the first checkpoint${every ? ` (step ${every})` : ""}`
      : "no checkpoint: nothing to resume, explore or export; train it anew";
  };
  const missing = () => { stop.hidden = resume.hidden = toStep.hidden = explore.hidden = exports.hidden = true; };
  return { node: GF.el("div", {}, title, GF.el("div", { class: "controls" }, badge, info, stop, toStep, resume, explore, exports,
                                                 wait), note),
           update, missing, note };
}

// A view for one run opened with no run in its address (#/run, #/explore): say so, not "no run 'null'".
GF.noRunNamed = function (view, title) {
  view.append(GF.el("h1", {}, title), GF.el("div", { class: "notice error",
    text: "no run named in the address: open one from the Runs page" }));
};

GF.runView = function (view, params) {
  const runId = params.get("id");
  if (!runId) return GF.noRunNamed(view, "Run");
  let rows = [], lastRefresh = 0, shownStatus = null;
  const refresh = () => GF.get(`/api/run?run=${GF.q(runId)}`).then(fill).catch((e) => GF.notice(header.note, e.message));
  const header = runHeader(runId, refresh), charts = chartPanel(() => rows), timeline = timelinePanel(runId);
  const evaluation = evalPanel(runId, refresh);
  const plots = GF.el("div", { class: "plots" }), config = GF.el("pre", { class: "config" });
  const log = GF.el("pre", { class: "log" });
  const fill = (d) => {
    lastRefresh = Date.now(); shownStatus = d.summary.status;
    header.update(d.summary, d.checkpoint_step !== null, d.checkpoint_every); timeline.update(d.timeline);
    evaluation.show(d.eval, d.summary.headline, d.summary.status === "training");
    plots.replaceChildren(...d.plots.map((p) => GF.el("figure", {}, GF.el("img", { src: GF.fileUrl(runId, p) }),
                                                   GF.el("figcaption", { text: p }))));
    config.textContent = JSON.stringify(d.config, null, 2);
    log.textContent = (d.log_tail || []).join("\n");
  };
  view.append(header.node, charts.node, timeline.node, evaluation.node,
    GF.el("section", {}, GF.el("h2", {}, "Plots"), plots),
    GF.el("section", {}, GF.el("h2", {}, "Config"), config), GF.el("section", {}, GF.el("h2", {}, "train.log"), log));
  // A run the studio started a moment ago answers already (from its process.json): a 404 is no run at all.
  const open = () => GF.get(`/api/run?run=${GF.q(runId)}`).then((d) => { fill(d); live(); }).catch((e) => {
    header.missing(); GF.notice(header.note, e.message);
  });
  const live = () => GF.get(`/api/run/metrics?run=${GF.q(runId)}`).then((d) => {
    GF.notice(header.note, "");
    rows = d.rows; charts.draw();
    // The stream counts rows (the page has these); a resume that rewrote the log sends them all again.
    GF.listen(() => `/api/events/metrics?run=${GF.q(runId)}&after=${rows.length}`, (event) => {
      rows = event.reset ? event.rows : rows.concat(event.rows); charts.draw();
      const changed = event.status !== shownStatus;  // stopped, finished or failed: new buttons, final pictures
      if (changed || Date.now() - lastRefresh > 3000) refresh();
    });
  }).catch((e) => GF.notice(header.note, e.message));
  open();
  // The stream speaks only when the rows or the status it last saw change: a resumed child that is stopped
  // while it starts goes interrupted -> training -> interrupted between two of its polls, and the page
  // showed "training" for good. While it shows training, the page reads the run again after 3 s of silence.
  GF.every(1000, () => { if (shownStatus === "training" && Date.now() - lastRefresh > 3000) refresh(); });
};

function compareGrids(runs, step) {
  return GF.el("div", { class: "grids" }, ...runs.map((r) => {
    const frames = r.timeline.filter((f) => f.step <= step);
    const f = frames.length ? frames[frames.length - 1] : r.timeline[0];
    return GF.el("figure", {}, f ? GF.el("img", { src: GF.fileUrl(r.id, f.name) }) : "no samples",
                 GF.el("figcaption", { text: `${r.id} · step ${f ? f.step : "-"}` }));
  }));
}

// The runs to compare: one id= each (a run's name may hold a comma); ids=a,b is the older links' form.
GF.compareIds = (params) => params.getAll("id").length ? params.getAll("id")
  : (params.get("ids") || "").split(",").filter(Boolean);

GF.compareView = function (view, params) {
  const ids = GF.compareIds(params), note = GF.el("div", {});
  view.append(GF.el("h1", {}, "Compare runs"), note);
  GF.get("/api/compare?" + ids.map((id) => "runs=" + GF.q(id)).join("&")).then((d) => {
    const keys = [...new Set(d.runs.flatMap((r) => GF.metricGroups(r.metrics).flatMap(([, ks]) => ks)))];
    const pick = GF.el("select", { id: "compare-key" }, ...keys.map((k) => GF.el("option", { value: k, text: k })));
    const canvas = GF.el("canvas", { width: 900, height: 300, class: "chart" });
    const draw = () => {
      const series = d.runs.map((r) => GF.seriesOf(r.metrics, pick.value, r.id));
      const without = series.filter((ser) => !ser.points.length).map((ser) => ser.name);  // e.g. a VAE has no d/loss
      GF.lineChart(canvas, { title: pick.value + (without.length ? ` (not logged by ${without.join(", ")})` : ""),
                             smooth: 0.6, series });
    };
    pick.onchange = draw;
    const steps = [...new Set(d.runs.flatMap((r) => r.timeline.map((f) => f.step)))].sort((a, b) => a - b);
    const stepPick = GF.el("select", { id: "compare-step" }, ...steps.map((s) => GF.el("option", { value: s, text: s })));
    stepPick.value = steps[steps.length - 1];
    const grids = GF.el("div", {});
    const showGrids = () => grids.replaceChildren(compareGrids(d.runs, +stepPick.value));
    stepPick.onchange = showGrids;
    const diff = GF.el("table", { class: "diff", id: "config-diff" }, GF.el("tr", {}, GF.el("th", { text: "key" }),
      ...d.runs.map((r) => GF.el("th", { text: r.id }))), ...d.diff.map((row) => GF.el("tr", {},
      GF.el("td", { text: row.key }), ...row.values.map((v) => GF.el("td", { text: JSON.stringify(v) })))));
    view.append(GF.el("section", {}, GF.el("h2", {}, "Curves overlaid"), pick, canvas),
      GF.el("section", {}, GF.el("h2", {}, "Samples at one step"), GF.el("label", {}, "step ", stepPick), grids),
      GF.el("section", {}, GF.el("h2", {}, "Config diff"), d.diff.length ? diff : GF.el("p", { text: "same configs" })));
    draw(); showGrids();
  }).catch((e) => GF.notice(note, e.message));
};
