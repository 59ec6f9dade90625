// The studio's page: a hash router over a few views (runs, run, train, toy lab, explore, compare).
// Every view calls the studio's JSON API; live views listen to Server-Sent Events.
"use strict";
window.GF = window.GF || {};

GF.el = function (tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
  return node;
};

// A JSON request to the studio; a refusal or bad input throws an Error carrying the server's one line.
GF.call = async function (method, url, body, raw) {
  const init = { method, headers: {} };
  if (raw !== undefined) init.body = raw;
  else if (body !== undefined) { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
  const res = await fetch(url, init);
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = { error: text }; }
  if (!res.ok) {
    const detail = data && (data.error || (data.detail && JSON.stringify(data.detail)));
    const err = new Error(detail || res.status + " " + res.statusText);
    err.data = data; err.status = res.status;
    throw err;
  }
  return data;
};
GF.get = (url) => GF.call("GET", url);
GF.post = (url, body) => GF.call("POST", url, body);
GF.q = encodeURIComponent;

GF.fileUrl = (run, name) => `/api/run/file?run=${GF.q(run)}&name=${GF.q(name)}`;

// One event stream per view: closing the view closes it. A browser keeps at most six connections to
// one host, and an open stream holds one: a hidden tab closes its streams and opens them again when
// shown (``url`` may be a function, asked again then: a stream that resumes where the page is), so
// studio tabs left open in the background do not stop a seventh from loading.
GF.streams = [];
GF.listen = function (url, onData) {
  const stream = { url, onData, source: null };
  stream.open = () => {
    if (stream.source) return;
    stream.source = new EventSource(typeof url === "function" ? url() : url);
    stream.source.onmessage = (e) => onData(JSON.parse(e.data));
  };
  stream.close = () => { if (stream.source) stream.source.close(); stream.source = null; };
  if (!document.hidden) stream.open();
  GF.streams.push(stream);
  return stream;
};
document.addEventListener("visibilitychange", () => GF.streams.forEach((s) => (document.hidden ? s.close() : s.open())));
GF.timers = [];
GF.every = function (ms, fn) { GF.timers.push(setInterval(fn, ms)); };

GF.notice = function (box, message, kind) {
  box.replaceChildren(message ? GF.el("div", { class: "notice " + (kind || "error"), text: message }) : "");
};

// A number field the browser could not read ("1e400", "2,5") has the value "", as if left empty: the
// first such of ``inputs`` as an Error naming it (``data.key``: its config key), so a form refuses it
// rather than sending it as "no change". null when every one reads.
GF.unreadableNumber = function (inputs, example) {
  const bad = [...inputs].find((input) => input.validity.badInput);
  if (!bad) return null;
  const err = new Error(`${bad.name || bad.id}: not a number this form can read (a finite decimal like ${example})`);
  err.data = { key: bad.name || null };
  return err;
};

GF.statusBadge = (status) => GF.el("span", { class: "badge " + status, text: status });

GF.downloadLink = (src, name) => GF.el("a", { href: src, download: name, class: "dl", title: "download PNG" }, "⤓");

GF.route = function () {
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  const params = new URLSearchParams(query || "");
  GF.streams.forEach((s) => s.close()); GF.streams = [];
  GF.timers.forEach((t) => clearInterval(t)); GF.timers = [];
  if (GF.stopLab) GF.stopLab();
  const view = document.getElementById("view");
  view.replaceChildren();
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.getAttribute("href") === "#" + path));
  const views = { "/": GF.runsView, "/run": GF.runView, "/train": GF.trainView, "/lab": GF.labView,
                  "/explore": GF.exploreView, "/compare": GF.compareView };
  (views[path] || GF.runsView)(view, params);
};

GF.setParams = function (path, values) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(values)) if (v !== null && v !== undefined && v !== "") params.set(k, v);
  history.replaceState(null, "", "#" + path + "?" + params.toString());
};

function runRow(run, chosen) {
  const total = run.total_steps ? ` / ${run.total_steps}` : "";
  const headline = Object.entries(run.headline || {}).slice(0, 2).map(([k, v]) => `${k} ${GF.fmt(v)}`).join(", ");
  const pick = GF.el("input", { type: "checkbox", class: "pick", checked: chosen.has(run.id),
                                onchange: (e) => e.target.checked ? chosen.add(run.id) : chosen.delete(run.id) });
  return GF.el("tr", { "data-run": run.id, "data-status": run.status },
    GF.el("td", {}, pick),
    GF.el("td", {}, GF.el("a", { href: `#/run?id=${GF.q(run.id)}`, class: "run-link" }, run.id)),
    GF.el("td", { text: run.recipe }), GF.el("td", {}, GF.statusBadge(run.status)),
    GF.el("td", { class: "num", text: `${run.step}${total}` }),
    GF.el("td", { class: "num", text: run.images_per_s ? GF.fmt(run.images_per_s) : "-" }),
    GF.el("td", {}, run.newest_sample ? GF.el("img", { class: "thumb", src: GF.fileUrl(run.id, run.newest_sample) }) : "-"),
    run.problem ? GF.el("td", { class: "problem", text: run.problem }) : GF.el("td", { text: headline || "-" }));
}

GF.runsView = function (view) {
  const chosen = new Set(), body = GF.el("tbody", {}), note = GF.el("div", {});
  const compare = GF.el("button", { onclick: () => {
    if (chosen.size < 2) return GF.notice(note, "tick two runs or more to compare them");
    location.hash = "#/compare?" + [...chosen].map((id) => "id=" + GF.q(id)).join("&");
  } }, "Compare ticked runs");
  view.append(GF.el("h1", {}, "Runs"), GF.el("p", { class: "muted" },
    "Every run under the runs folder, live: runs started from the CLI appear here too."), note,
    GF.el("table", { class: "runs" }, GF.el("thead", {}, GF.el("tr", {},
      ...["", "run", "recipe", "status", "step", "img/s", "newest sample", "headline"].map((h) => GF.el("th", { text: h })))),
      body), compare);
  const show = (runs) => {
    body.replaceChildren(...runs.map((r) => runRow(r, chosen)));
    if (!runs.length) body.append(GF.el("tr", {}, GF.el("td", { colspan: 8, class: "muted" },
      "no runs yet: start one from Train, or with `genforge train`")));
  };
  GF.get("/api/runs").then((d) => show(d.runs)).catch((e) => GF.notice(note, e.message));
  GF.listen("/api/events/runs", (d) => show(d.runs));
};

window.addEventListener("hashchange", GF.route);
window.addEventListener("DOMContentLoaded", GF.route);
