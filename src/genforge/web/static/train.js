// Train from the browser: a form generated from the recipe's config schema (types, choices, help),
// checked on every change by the same validation as `genforge train --dry-run`.
"use strict";

function fieldInput(field) {
  const attrs = { name: field.key, id: "f-" + field.key, "data-default": String(field.default) };
  if (field.choices && field.choices.length) {
    return GF.el("select", attrs, ...field.choices.map((c) =>
      GF.el("option", { value: c, text: c, selected: String(c) === String(field.default) })));
  }
  if (field.type === "bool") return GF.el("input", { ...attrs, type: "checkbox", checked: !!field.default });
  if (field.type === "int" || field.type === "float") {
    return GF.el("input", { ...attrs, type: "number", step: field.type === "int" ? 1 : "any", value: field.default });
  }
  return GF.el("input", { ...attrs, type: "text", value: field.default === null ? "" : field.default });
}

function fieldValue(input) {
  return input.type === "checkbox" ? String(input.checked) : input.value;
}

// The fields whose value differs from the recipe's, as key -> text (what `key=value` would say).
function changedFields(form) {
  const out = {};
  form.querySelectorAll("[data-default]").forEach((input) => {
    const value = fieldValue(input), base = input.dataset.default;
    const same = input.type === "number" ? value !== "" && +value === +base : value === base;
    if (!same) out[input.name] = value;
  });
  return out;
}

function schemaForm(schema) {
  const sections = {};
  for (const field of schema.fields) {
    const section = field.key.includes(".") ? field.key.split(".")[0] : "general";
    (sections[section] = sections[section] || []).push(field);
  }
  // What people change most comes first and open; the long model and data sections start folded.
  const order = (name) => ["optim", "train", "model", "data"].indexOf(name) >>> 0;
  const named = Object.entries(sections).sort(([a], [b]) => order(a) - order(b));
  return named.map(([name, fields]) => GF.el("details", { open: name === "optim" || name === "train" },
    GF.el("summary", { text: name }),
    ...fields.map((f) => GF.el("div", { class: "field" },
      GF.el("label", { for: "f-" + f.key, text: f.key }), fieldInput(f),
      GF.el("span", { class: "help", text: f.help || "" }),
      GF.el("div", { class: "field-error", "data-error-for": f.key })))));
}

// Unreadable numbers are refused before a request (they would send the recipe's value, or its budget).
const unreadableNumber = (form) => GF.unreadableNumber(form.querySelectorAll("input[type=number]"), "2.5e-4");

function budgetOf(form) {
  const kind = form.querySelector("[name=budget-kind]:checked").value, value = form.querySelector("#budget").value;
  if (!value) return {};
  // Number, not parseInt: "1e3" is 1000 steps and "2.7" is refused by the server, not read as 1 and 2
  return kind === "steps" ? { steps: Number(value) } : { minutes: Number(value) };
}

function showError(form, note, error) {
  form.querySelectorAll(".field-error").forEach((e) => (e.textContent = ""));
  form.querySelectorAll(".invalid").forEach((e) => e.classList.remove("invalid"));
  if (!error) { GF.notice(note, ""); return; }
  const key = error.data && error.data.key;
  const spot = key && form.querySelector(`[data-error-for="${CSS.escape(key)}"]`);
  if (spot) {
    spot.textContent = error.message;
    form.querySelector(`[name="${CSS.escape(key)}"]`).classList.add("invalid");
    GF.notice(note, "");
  } else GF.notice(note, error.message);
}

function trainForm(schema, recipe) {
  const note = GF.el("div", { id: "train-note" });
  const form = GF.el("form", { id: "train-form", onsubmit: (e) => e.preventDefault() });
  const request = () => ({ recipe, overrides: changedFields(form), ...budgetOf(form),
                           name: form.querySelector("#run-name").value || null });
  // Each answer is shown only if no later check or Start was sent since: a slow check that passed must
  // not wipe the refusal Start got a moment after it.
  let pending = null, sent = 0;
  const answer = (ticket) => (error) => { if (ticket === sent) showError(form, note, error); };
  const check = () => {
    const ticket = ++sent, unreadable = unreadableNumber(form);
    if (unreadable) return answer(ticket)(unreadable);
    GF.post("/api/check", request()).then(() => answer(ticket)(null)).catch(answer(ticket));
  };
  form.addEventListener("input", () => { clearTimeout(pending); pending = setTimeout(check, 300); });
  const start = GF.el("button", { id: "start", type: "button", onclick: () => {
    clearTimeout(pending);
    const ticket = ++sent, unreadable = unreadableNumber(form);
    if (unreadable) return answer(ticket)(unreadable);
    start.disabled = true;
    GF.post("/api/train", request()).then((d) => { location.hash = `#/run?id=${GF.q(d.run)}`; })
      .catch(answer(ticket)).finally(() => (start.disabled = false));
  } }, "Start training");
  form.append(GF.el("p", { class: "muted", text: schema.description || "" }),
    GF.el("div", { class: "controls" }, GF.el("label", {}, "budget ", GF.el("input", { id: "budget", type: "number",
      min: 0, step: "any", class: "short", placeholder: "recipe's" })),
      GF.el("label", {}, GF.el("input", { type: "radio", name: "budget-kind", value: "steps", checked: true }), " steps"),
      GF.el("label", {}, GF.el("input", { type: "radio", name: "budget-kind", value: "minutes" }), " minutes"),
      GF.el("label", {}, "run name ", GF.el("input", { id: "run-name", type: "text", placeholder: `${recipe}-TIME` }))),
    ...schemaForm(schema), note, start);
  return form;
}

GF.trainView = function (view, params) {
  const note = GF.el("div", {}), slot = GF.el("div", {});
  const pick = GF.el("select", { id: "recipe" });
  const load = () => {
    GF.setParams("/train", { recipe: pick.value });
    GF.get(`/api/recipes/${GF.q(pick.value)}`).then((schema) => slot.replaceChildren(trainForm(schema, pick.value)))
      .catch((e) => GF.notice(note, e.message));
  };
  pick.onchange = load;
  view.append(GF.el("h1", {}, "Train"), GF.el("p", { class: "muted" },
    "The same training as `genforge train`, in its own process: the studio keeps answering, and a crash stays in its run."),
    GF.el("label", {}, "recipe ", pick), note, slot);
  GF.get("/api/recipes").then((d) => {
    pick.replaceChildren(...d.recipes.map((r) => GF.el("option", { value: r.name, text: `${r.name} (${r.family})` })));
    const asked = params.get("recipe");
    if (asked && d.recipes.some((r) => r.name === asked)) pick.value = asked;
    load();
    if (asked && pick.value !== asked) GF.notice(note, `no recipe '${asked}': showing ${pick.value}; pick one from the list`);
  }).catch((e) => GF.notice(note, e.message));
};
