// Explore a trained model: a sample grid by seed (the URL reproduces it), per class, rejection on/off;
// interpolation between two clicked samples; arithmetic a - b + c by clicking; a VAE's latent map and
// reconstructions; a DiscoGAN's A -> B -> A of an upload; nearest training images; PNG downloads.
"use strict";

function pictureStrip(images, names, prefix) {
  return GF.el("div", { class: "strip" }, ...images.map((src, i) => GF.el("figure", {},
    GF.el("img", { src }), GF.el("figcaption", {}, (names && names[i]) || "", GF.downloadLink(src, `${prefix}-${i}.png`)))));
}

function sampleControls(params, info) {
  const num = (id, value) => GF.el("input", { id, type: "number", value, class: "short" });
  const c = { seed: num("seed", params.get("seed") || 0), n: num("n", params.get("n") || 16),
              reject: GF.el("input", { type: "checkbox", id: "reject", checked: params.get("reject") === "1" }),
              byClass: GF.el("input", { type: "checkbox", id: "by-class", checked: params.get("byclass") === "1" }),
              label: GF.el("select", { id: "label" }, GF.el("option", { value: "", text: "any class" })),
              mode: GF.el("select", { id: "click-mode" }, ...[["ab", "pick interpolation ends A, B"], ["a", "add to a"],
                ["b", "add to b"], ["c", "add to c"]].map(([v, t]) => GF.el("option", { value: v, text: t }))) };
  for (let k = 0; k < info.capabilities.classes; k++) c.label.append(GF.el("option", { value: k, text: `class ${k}` }));
  c.label.value = params.get("label") || "";
  const caps = info.capabilities;
  c.node = GF.el("div", { class: "controls" }, GF.el("label", {}, "seed ", c.seed), GF.el("label", {}, "n ", c.n),
    caps.classes ? GF.el("label", {}, c.label) : null, caps.classes ? GF.el("label", {}, c.byClass, " one row per class") : null,
    caps.rejection ? GF.el("label", {}, c.reject, " rejection sampling (q 0.99)") : null,
    caps.data === "images" ? GF.el("label", {}, "click a sample to ", c.mode) : null);
  return c;
}

function explorePicks(runId, c, out, note) {
  const picks = { ab: [], a: [], b: [], c: [] };
  const show = GF.el("div", { class: "muted", id: "picks" });
  const refresh = () => (show.textContent = `A/B: ${picks.ab.length}/2 · a: ${picks.a.length} · b: ${picks.b.length} · c: ${picks.c.length}`);
  const spherical = GF.el("input", { type: "checkbox", id: "slerp" });
  const fail = (e) => GF.notice(note, e.message);
  const interpolate = GF.el("button", { id: "interpolate", onclick: () => {
    if (picks.ab.length < 2) return GF.notice(note, "click two samples first (A and B)");
    GF.post("/api/explore/interpolate", { run: runId, a: picks.ab[0], b: picks.ab[1], steps: 10, spherical: spherical.checked })
      .then((d) => out.replaceChildren(GF.el("h3", {}, "A → B"), pictureStrip(d.images, null, "interpolation"))).catch(fail);
  } }, "Interpolate A → B");
  const arithmetic = GF.el("button", { id: "arithmetic", onclick: () => {
    if (!picks.a.length || !picks.b.length || !picks.c.length) return GF.notice(note, "add samples to a, b and c first");
    GF.post("/api/explore/arithmetic", { run: runId, a: picks.a, b: picks.b, c: picks.c })
      .then((d) => out.replaceChildren(GF.el("h3", {}, "mean a, mean b, mean c, a − b + c"),
                                       pictureStrip(d.images, ["a", "b", "c", "a − b + c"], "arithmetic"))).catch(fail);
  } }, "a − b + c");
  const marked = { ab: [], a: [], b: [], c: [] };  // the pictures outlined for each list
  const unmark = (mode) => { marked[mode].forEach((img) => img.classList.remove("picked")); marked[mode].length = 0; };
  const clear = GF.el("button", { id: "clear-picks", onclick: () => {
    Object.keys(picks).forEach((mode) => { picks[mode].length = 0; unmark(mode); }); refresh(); } }, "Clear picks");
  const pick = (ref, img) => {
    const mode = c.mode.value, list = picks[mode];
    if (mode === "ab" && list.length >= 2) { list.length = 0; unmark(mode); }
    list.push(ref); marked[mode].push(img); img.classList.add("picked"); refresh(); GF.notice(note, "");
  };
  refresh();
  return { pick, node: GF.el("div", { class: "controls" }, show, GF.el("label", {}, spherical, " spherical"),
                               interpolate, arithmetic, clear) };
}

function sampleGrid(runId, c, picks, grid, note) {
  return () => {
    const body = { run: runId, seed: +c.seed.value, n: +c.n.value, label: c.label.value === "" ? null : +c.label.value,
                   reject: c.reject.checked ? 0.99 : null, by_class: c.byClass.checked };
    GF.post("/api/explore/sample", body).then((d) => {
      GF.setParams("/explore", { id: runId, seed: body.seed, n: body.n, label: c.label.value,
                                 reject: c.reject.checked ? 1 : "", byclass: c.byClass.checked ? 1 : "" });
      if (d.kind === "points") {  // one scatter of every sample over the data, at its own size
        grid.replaceChildren(GF.el("figure", {}, GF.el("img", { src: d.images[0], class: "scatter", id: "scatter" }),
          GF.el("figcaption", {}, `${body.n} samples, seed ${body.seed}`, GF.downloadLink(d.images[0], `seed${body.seed}.png`))));
        grid.dataset.seed = body.seed;
        return GF.notice(note, "");
      }
      const cell = (src, index) => {
        const img = GF.el("img", { src, class: "sample", "data-index": index, title: `seed ${body.seed} #${index}` });
        if (!body.reject && !body.by_class) img.onclick = () => picks.pick({ seed: body.seed, n: body.n, index, label: body.label }, img);
        return GF.el("span", { class: "cell" }, img, GF.downloadLink(src, `seed${body.seed}-${index}.png`));
      };
      if (body.by_class && d.per_class) {  // a labelled row per class, however wide the page
        const rows = [];
        for (let k = 0; k < d.classes; k++) rows.push(GF.el("div", { class: "class-row", "data-class": k },
          GF.el("span", { class: "class-label", text: `class ${k}` }),
          ...d.images.slice(k * d.per_class, (k + 1) * d.per_class).map((src, i) => cell(src, k * d.per_class + i))));
        grid.replaceChildren(...rows);
      } else grid.replaceChildren(...d.images.map(cell));
      grid.dataset.seed = body.seed;
      GF.notice(note, body.reject || body.by_class ? "rejection and per-class grids are not clickable" : "", "ok");
    }).catch((e) => GF.notice(note, e.message));
  };
}

function uploadTool(label, id, url, captions, out, note) {
  const input = GF.el("input", { type: "file", id, accept: "image/*", onchange: () => {
    const file = input.files[0];
    if (!file) return;
    GF.call("POST", url, undefined, file).then((d) => {
      GF.notice(note, "");  // an earlier upload's refusal is over
      out.replaceChildren(GF.el("h3", {}, label), pictureStrip(d.images, captions, id));
    }).catch((e) => { out.replaceChildren(); GF.notice(note, e.message); });
  } });
  return GF.el("div", { class: "controls" }, GF.el("label", {}, label + " ", input));
}

function nearestTool(runId, c, out, note) {
  return GF.el("button", { id: "nearest", onclick: () => GF.post("/api/explore/nearest", { run: runId, seed: +c.seed.value,
    n: Math.min(+c.n.value, 16) }).then((d) => out.replaceChildren(GF.el("h3", {}, `nearest training images (${d.space})`),
    GF.el("div", { class: "pairs" }, ...d.images.map((src, i) => GF.el("figure", {}, GF.el("img", { src }),
      GF.el("img", { src: d.nearest[i] }), GF.el("figcaption", { text: `${GF.fmt(d.distances[i])} ${d.names[i] || ""}` }))))))
    .catch((e) => GF.notice(note, e.message)) }, "Nearest training images");
}

GF.exploreView = function (view, params) {
  const runId = params.get("id"), note = GF.el("div", {}), out = GF.el("div", { id: "explore-out" });
  if (!runId) return GF.noRunNamed(view, "Explore");
  view.append(GF.el("h1", {}, "Explore ", GF.el("a", { href: `#/run?id=${GF.q(runId)}` }, runId)), note);
  GF.get(`/api/explore/info?run=${GF.q(runId)}`).then((info) => {
    const caps = info.capabilities, tools = GF.el("div", {});
    view.append(GF.el("p", { class: "muted", text: `${info.recipe} (${info.family}) at step ${info.step}` }), tools, out);
    if (caps.latent) {
      const c = sampleControls(params, info), grid = GF.el("div", { class: "grid", id: "sample-grid" });
      const picks = explorePicks(runId, c, out, note), draw = sampleGrid(runId, c, picks, grid, note);
      tools.append(c.node, GF.el("div", { class: "controls" }, GF.el("button", { id: "sample", onclick: draw }, "Sample"),
        GF.el("button", { id: "random-seed", onclick: () => { c.seed.value = Math.floor(Math.random() * 1e6); draw(); } }, "New seed"),
        caps.data === "images" ? nearestTool(runId, c, out, note) : null),
        // a toy run draws one scatter per seed, with no single sample to click
        caps.data === "images" ? picks.node : GF.el("p", { class: "muted", id: "picks-toy", text: "a toy run's samples " +
          "are points of one scatter: genforge interpolate RUN and genforge arithmetic RUN walk its latent space" }), grid);
      draw();
    }
    if (caps.encoder) tools.append(GF.latentMap(runId, info, out, note),
      uploadTool("upload an image to reconstruct", "upload-reconstruct", `/api/explore/reconstruct?run=${GF.q(runId)}`,
                 ["input", "reconstruction"], out, note));
    if (caps.translator && caps.data === "images") tools.append(uploadTool("upload an image of domain A", "upload-translate",
      `/api/explore/translate?run=${GF.q(runId)}&direction=a2b`, ["A", "A → B", "A → B → A"], out, note));
    if (!tools.childElementCount) tools.append(GF.el("p", { class: "muted", id: "nothing-to-explore", text:
      caps.translator ? "a toy DiscoGAN translates points: its run page's samples timeline shows where each mode goes, " +
        "genforge eval RUN scores the mapping, and genforge compare RUN ... sets variants side by side"
        : `nothing to explore for the ${info.family} family here: see its run page` }));
  }).catch((e) => GF.notice(note, e.message));
};

// A VAE's latent plane (the first two latent dimensions, the rest 0) decoded on a grid; a click decodes that point.
GF.latentMap = function (runId, info, out, note) {
  const side = 10, extent = 2.5, canvas = GF.el("canvas", { id: "latent-map", width: 400, height: 400 });
  const codes = [];
  for (let r = 0; r < side; r++) for (let col = 0; col < side; col++)
    codes.push([-extent + (col + 0.5) * 2 * extent / side, extent - (r + 0.5) * 2 * extent / side]);
  GF.post("/api/explore/decode", { run: runId, z: codes }).then((d) => {
    const ctx = canvas.getContext("2d"), tile = canvas.width / side;
    d.images.forEach((src, i) => {
      const img = new Image();
      img.onload = () => ctx.drawImage(img, (i % side) * tile, Math.floor(i / side) * tile, tile, tile);
      img.src = src;
    });
  }).catch((e) => GF.notice(note, e.message));
  canvas.onclick = (e) => {
    const rect = canvas.getBoundingClientRect();
    const x = -extent + (e.clientX - rect.left) / rect.width * 2 * extent, y = extent - (e.clientY - rect.top) / rect.height * 2 * extent;
    GF.post("/api/explore/decode", { run: runId, z: [[x, y]] }).then((d) => out.replaceChildren(
      GF.el("h3", {}, `decoded z = (${x.toFixed(2)}, ${y.toFixed(2)})`), pictureStrip(d.images, null, "decoded")))
      .catch((err) => GF.notice(note, err.message));
  };
  return GF.el("section", {}, GF.el("h2", {}, "Latent map"), GF.el("p", { class: "muted",
    text: info.latent_dim > 2 ? `the first two of ${info.latent_dim} latent dimensions (the rest 0); click to decode` :
      "click to decode that point" }), canvas);
};
