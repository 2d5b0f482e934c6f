// Shared by every widget of the book (concatenated in front of each widget's module by base.py).
const PALETTE = ["#fbb4ae", "#b3cde3", "#ccebc5", "#decbe4", "#fed9a6", "#ffffcc",
  "#e5d8bd", "#fddaec", "#d9d9d9", "#bfe5e0", "#f2c9a0", "#c9d4f2"];

// An element: h("div", {class: "x", onclick: f}, child, "text", ...)
function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "style" && typeof v === "object") Object.assign(e.style, v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {  // nested lists of children too (rows of [span, " "])
    if (c !== null && c !== undefined) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// A token piece as the reader should see it: spaces and newlines made visible (they matter in BPE).
function showPiece(s) {
  return s.replace(/ /g, "\u00b7").replace(/\n/g, "\u21b5");
}

// A labelled range control bound to trait `name`: the page updates the model (and the kernel, when
// there is one) and redraws; a change made elsewhere (Python) moves the control.
function slider(model, name, label, min, max, step = 1) {
  const input = h("input", {type: "range", min, max, step, value: model.get(name), "data-control": name,
    "aria-label": label});
  const out = h("output", {}, String(model.get(name)));
  input.addEventListener("input", () => {
    const v = step % 1 === 0 ? parseInt(input.value, 10) : parseFloat(input.value);
    out.textContent = String(v);
    model.set(name, v);
    model.save_changes();
  });
  model.on(`change:${name}`, () => {
    input.value = model.get(name);
    out.textContent = String(model.get(name));
  });
  return h("label", {class: "cw-control"}, h("span", {class: "cw-label"}, label), input, out);
}

// The same for a number box, a text box, a text area and a select.
function field(model, name, label, kind = "text", opts = {}) {
  let input;
  if (kind === "textarea") input = h("textarea", {rows: opts.rows || 3, "data-control": name, "aria-label": label});
  else if (kind === "select") input = h("select", {"data-control": name, "aria-label": label},
    ...opts.options.map((o) => h("option", {value: o}, o)));
  else input = h("input", {type: kind, "data-control": name, "aria-label": label, ...(opts.attrs || {})});
  input.value = model.get(name);
  const event = kind === "select" ? "change" : (opts.event || "change");
  input.addEventListener(event, () => {
    const v = kind === "number" ? Number(input.value) : input.value;
    model.set(name, v);
    model.save_changes();
  });
  model.on(`change:${name}`, () => { if (input.value !== String(model.get(name))) input.value = model.get(name); });
  return h("label", {class: "cw-control" + (kind === "textarea" || opts.wide ? " cw-wide" : "")},
    h("span", {class: "cw-label"}, label), input);
}

// Where the static book serves its files (`_static/`), or null in a live notebook.
function siteStatic() {
  const s = document.querySelector('script[src*="_static/wm/require.js"]');
  return s ? s.src.replace(/wm\/require\.js(\?.*)?$/, "") : null;
}

// A float32 array saved as base64 (the exact values the engine computed).
function float32FromBase64(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Float32Array(bytes.buffer);
}

function fmt(x, digits = 3) {
  return Number(x).toFixed(digits);
}

const COURSE_CSS = `
.course-widget { font-size: 0.95em; border: 1px solid #ddd; border-radius: 6px; padding: 8px 10px; margin: 4px 0; }
.course-widget .cw-controls { display: flex; flex-wrap: wrap; gap: 4px 18px; margin-bottom: 6px; }
.course-widget .cw-control { display: inline-flex; align-items: center; gap: 6px; }
.course-widget .cw-wide { display: flex; width: 100%; }
.course-widget .cw-wide input, .course-widget .cw-wide textarea { flex: 1; font-family: monospace; }
.course-widget .cw-label { color: #444; }
.course-widget output { min-width: 3em; font-family: monospace; }
.course-widget table { border-collapse: collapse; }
.course-widget td, .course-widget th { padding: 2px 8px; text-align: left; }
.course-widget .cw-error { color: #b00; }
.course-widget .cw-tok { padding: 1px 0; margin: 0 1px; font-family: monospace; }
.course-widget .cw-status { color: #666; font-style: italic; }
`;

function withCss() {
  if (!document.getElementById("course-widget-css")) {
    document.head.append(h("style", {id: "course-widget-css"}, COURSE_CSS));
  }
}

// The frame every widget draws into: controls on top, the result below, errors in place of the result.
function frame(el, cls) {
  withCss();
  const controls = h("div", {class: "cw-controls"});
  const body = h("div", {class: "cw-body"});
  const root = h("div", {class: `course-widget ${cls}`}, controls, body);
  el.append(root);
  return {root, controls, body};
}
