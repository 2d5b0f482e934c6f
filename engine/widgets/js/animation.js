// The book's animation player: frames computed by the engine (engine/widgets/animation.py), drawn
// here with a few primitives, with play, pause, step and a scrubber. What each primitive shows is
// also in its data-value attribute, so tests can read the frame on display.

const ROLE_COLOURS = {
  prompt: "#e5d8bd", generated: "#ccebc5", new: "#fed9a6", context: "#b3cde3", target: "#fed9a6",
  rest: "transparent", even: "#deebf7", odd: "#fde0dd", right: "#ccebc5", wrong: "#fbb4ae",
  current: "#fdae61", done: "#74add1", todo: "#eeeeee", dense: "#d73027", banded: "#4575b4",
};
const LINE_COLOURS = ["#4575b4", "#d73027", "#1a9850", "#984ea3"];
const SVGNS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function colour(role) {
  return ROLE_COLOURS[role] || role || "transparent";
}

const ANIMATION_CSS = `
.cw-animation .cw-anim-title { font-weight: bold; margin-bottom: 4px; }
.cw-animation button { font: inherit; padding: 1px 10px; border: 1px solid #aaa; border-radius: 4px; background: #f7f7f7; cursor: pointer; }
.cw-animation button:focus-visible { outline: 2px solid #4575b4; }
.cw-animation input[type=range] { width: 14em; }
.cw-animation .cw-caption { margin: 4px 0 6px; min-height: 1.4em; }
.cw-animation .cw-item { margin: 6px 0; }
.cw-animation .cw-item-label { color: #555; font-size: 0.9em; margin-bottom: 2px; }
.cw-animation .cw-tokens { line-height: 2; }
.cw-animation .cw-tok { border: 1px solid #ccc; border-radius: 3px; padding: 1px 2px; white-space: pre; }
.cw-animation .cw-tok[data-role=new], .cw-animation .cw-tok[data-role=target], .cw-animation .cw-tok[data-role=current] { font-weight: bold; border-color: #d08000; }
.cw-animation .cw-bar-row { display: flex; align-items: center; gap: 6px; font-family: monospace; }
.cw-animation .cw-bar-label { width: 14em; text-align: right; overflow: hidden; white-space: pre; }
.cw-animation .cw-bar-track { flex: 1; max-width: 24em; background: #f3f3f3; height: 1em; }
.cw-animation .cw-bar { height: 100%; }
.cw-animation .cw-counter-value { font-size: 1.5em; font-family: monospace; }
.cw-animation .cw-legend { font-size: 0.85em; color: #444; display: flex; gap: 12px; flex-wrap: wrap; }
.cw-animation .cw-swatch { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 3px; vertical-align: middle; border: 1px solid #bbb; }
.cw-animation .cw-row { display: flex; flex-wrap: wrap; gap: 6px 24px; align-items: flex-start; }
`;

function itemBox(item, ...children) {
  return h("div", {class: `cw-item cw-${item.kind}`, "data-kind": item.kind, "data-key": item.key},
    item.label ? h("div", {class: "cw-item-label"}, item.label) : null, ...children);
}

function drawTokens(item) {
  const row = h("div", {class: "cw-tokens"}, item.tokens.map(([text, role]) =>
    [h("span", {class: "cw-tok", "data-role": role, style: {background: colour(role)}}, showPiece(text)), " "]));
  const box = itemBox(item, row);
  box.dataset.value = JSON.stringify(item.tokens.map((p) => p[0]));
  return box;
}

function drawBars(item) {
  const rows = item.bars.map(([label, value, text, role]) => h("div", {class: "cw-bar-row", "data-value": text},
    h("span", {class: "cw-bar-label"}, showPiece(label)),
    h("span", {class: "cw-bar-track"}, h("div", {class: "cw-bar",
      style: {width: `${Math.max(0, Math.min(1, value / (item.max || 1))) * 100}%`, background: colour(role === "rest" ? "done" : role)}})),
    h("span", {class: "cw-bar-text"}, text)));
  const box = itemBox(item, ...rows);
  box.dataset.value = JSON.stringify(item.bars.map((b) => [b[0], b[2]]));
  return box;
}

function drawGrid(item) {
  const nr = item.rows.length, nc = nr ? item.rows[0].length : 0;
  const cell = Math.max(3, Math.min(14, Math.floor(360 / Math.max(nc, 1))));
  const pic = svg("svg", {width: nc * cell, height: nr * cell, role: "img", "aria-label": item.label || item.key});
  item.rows.forEach((r, i) => {
    for (let j = 0; j < r.length; j++) {
      const lg = item.legend[r[j]];
      if (lg) pic.append(svg("rect", {x: j * cell, y: i * cell, width: cell - 1, height: cell - 1, fill: colour(lg[0])}));
    }
  });
  const legend = h("div", {class: "cw-legend"}, Object.values(item.legend).filter((v) => v[1]).map(([role, text]) =>
    h("span", {}, h("span", {class: "cw-swatch", style: {background: colour(role)}}), text)));
  const box = itemBox(item, pic, legend);
  box.dataset.value = item.rows.join("/");
  return box;
}

function drawCounter(item) {
  const box = itemBox({...item, label: ""}, h("div", {class: "cw-item-label"}, item.label),
    h("div", {class: "cw-counter-value"}, item.text));
  box.dataset.value = String(item.value);
  return box;
}

function drawSeries(item) {
  const W = 360, H = 150, L = 40, B = 22;
  const x = (i) => L + (W - L - 8) * (i / Math.max(1, item.x_max));
  const span = (item.y_max - item.y_min) || 1;
  const y = (v) => 6 + (H - B - 6) * (1 - (v - item.y_min) / span);
  const pic = svg("svg", {width: W, height: H, role: "img", "aria-label": item.label || item.key},
    svg("line", {x1: L, y1: H - B, x2: W - 8, y2: H - B, stroke: "#888"}),
    svg("line", {x1: L, y1: 6, x2: L, y2: H - B, stroke: "#888"}),
    svg("text", {x: L - 4, y: 12, "text-anchor": "end", "font-size": 10}, fmt(item.y_max, 1)),
    svg("text", {x: L - 4, y: H - B, "text-anchor": "end", "font-size": 10}, fmt(item.y_min, 1)),
    svg("text", {x: W - 8, y: H - 6, "text-anchor": "end", "font-size": 10}, `${item.x_label} ${item.x_max}`));
  const names = Object.keys(item.lines);
  // a line named after a role (dense, banded) takes that role's colour, as in the grids
  const lineColour = (name, k) => ROLE_COLOURS[name] || LINE_COLOURS[k % LINE_COLOURS.length];
  names.forEach((name, k) => {
    const vs = item.lines[name];
    const pts = vs.map((v, i) => `${x(i + 1).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    pic.append(svg("polyline", {points: pts, fill: "none", stroke: lineColour(name, k), "stroke-width": 2}));
    if (vs.length) pic.append(svg("circle", {cx: x(vs.length), cy: y(vs[vs.length - 1]), r: 3, fill: lineColour(name, k)}));
  });
  const legend = names.length > 1 ? h("div", {class: "cw-legend"}, names.map((n, k) =>
    h("span", {}, h("span", {class: "cw-swatch", style: {background: lineColour(n, k)}}), n))) : null;
  const box = itemBox(item, pic, legend);
  box.dataset.value = JSON.stringify(Object.fromEntries(names.map((n) => [n, item.lines[n].length])));
  return box;
}

function drawNote(item) {
  const box = itemBox(item, h("div", {class: "cw-note-text"}, item.text));
  box.dataset.value = item.text;
  return box;
}

const DRAW = {tokens: drawTokens, bars: drawBars, grid: drawGrid, counter: drawCounter, series: drawSeries, note: drawNote};

function reducedMotion() {
  return !!(window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches);
}

function render({model, el}) {
  const {root, controls, body} = frame(el, "cw-animation");
  if (!document.getElementById("cw-animation-css")) document.head.append(h("style", {id: "cw-animation-css"}, ANIMATION_CSS));
  const frames = model.get("frames");
  const n = frames.length;
  root.dataset.animation = model.get("name");
  root.dataset.frames = String(n);
  if (model.get("title")) root.prepend(h("div", {class: "cw-anim-title"}, model.get("title")));
  let index = Math.max(0, Math.min(n - 1, model.get("index")));
  let timer = null;

  const playBtn = h("button", {type: "button", "data-action": "play", "aria-label": "play"}, "\u25b6 play");
  const prevBtn = h("button", {type: "button", "data-action": "prev", "aria-label": "previous frame"}, "\u25c0 step");
  const nextBtn = h("button", {type: "button", "data-action": "next", "aria-label": "next frame"}, "step \u25b6");
  const scrub = h("input", {type: "range", min: 0, max: n - 1, step: 1, value: index, "data-control": "index",
    "aria-label": "frame"});
  const where = h("output", {class: "cw-where"});
  controls.append(playBtn, prevBtn, nextBtn, h("label", {class: "cw-control"}, scrub, where));
  const caption = h("div", {class: "cw-caption", "data-key": "caption", "aria-live": "polite"});
  const items = h("div", {class: "cw-items"});
  body.append(caption, items);

  function draw() {
    const f = frames[index];
    root.dataset.frame = String(index);
    scrub.value = index;
    where.textContent = `frame ${index + 1} of ${n}`;
    caption.textContent = f.caption;
    caption.dataset.value = f.caption;
    items.replaceChildren(...f.items.map((it) => (DRAW[it.kind] || drawNote)(it)));
  }
  function show(i, sync = true) {
    index = Math.max(0, Math.min(n - 1, i));
    draw();
    if (sync && model.get("index") !== index) {
      model.set("index", index);
      model.save_changes();
    }
  }
  function setPlaying(on) {
    if (timer) clearInterval(timer);
    timer = null;
    if (on && n > 1) {
      if (index >= n - 1) show(0);  // play again from the start
      timer = setInterval(() => {
        if (!root.isConnected) return setPlaying(false);
        show(index + 1);
        if (index >= n - 1) setPlaying(false);  // stop on the last frame
      }, 1000 / Math.max(0.1, model.get("fps")));
    }
    root.dataset.playing = timer ? "true" : "false";
    playBtn.textContent = timer ? "\u275a\u275a pause" : "\u25b6 play";
    playBtn.setAttribute("aria-label", timer ? "pause" : "play");
  }
  playBtn.addEventListener("click", () => setPlaying(!timer));
  prevBtn.addEventListener("click", () => { setPlaying(false); show(index - 1); });
  nextBtn.addEventListener("click", () => { setPlaying(false); show(index + 1); });
  scrub.addEventListener("input", () => { setPlaying(false); show(parseInt(scrub.value, 10)); });
  model.on("change:index", () => { if (model.get("index") !== index) show(model.get("index"), false); });
  draw();
  setPlaying(false);

  // Play once the reader can see it, unless they asked the system for reduced motion.
  root.dataset.reducedMotion = reducedMotion() ? "true" : "false";
  if (model.get("autoplay") && !reducedMotion() && n > 1) {
    if (window.IntersectionObserver) {
      const seen = new IntersectionObserver((entries) => {
        if (entries.some((e) => e.isIntersecting)) {
          seen.disconnect();
          setPlaying(true);
        }
      });
      seen.observe(root);
    } else {
      setPlaying(true);
    }
  }
  return () => setPlaying(false);
}

export default {render};
