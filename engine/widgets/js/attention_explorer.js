// Chapter 6: the attention layouts as masks, and how many query-key scores each one costs.

// engine.attention.keep: may query i attend to key j?
function keep(layout, i, j, window, stride, c) {
  const causal = j <= i;
  if (layout === "dense") return causal;
  if (layout === "banded") return causal && i - j < window;
  if (layout === "strided") return causal && (i - j < stride || (i - j) % stride === 0);
  if (layout === "fixed") return causal && (Math.floor(j / stride) === Math.floor(i / stride) || j % stride >= stride - c);
  throw new Error(`unknown attention layout ${layout}`);
}

// engine.widgets.attention_summary: the (T, T) mask as rows of 0/1, and its counts
function attentionSummary(kind, T, window, stride, c) {
  c = Math.min(c, stride);
  const mask = [];
  let kept = 0, perQueryMax = 0;
  for (let i = 0; i < T; i++) {
    const row = new Uint8Array(T);
    let n = 0;
    for (let j = 0; j < T; j++) if (keep(kind, i, j, window, stride, c)) { row[j] = 1; n++; }
    kept += n;
    perQueryMax = Math.max(perQueryMax, n);
    mask.push(row);
  }
  const dense = T * (T + 1) / 2;
  return {mask, kept, dense, fraction: kept / dense, per_query_max: perQueryMax};
}

function render({model, el}) {
  const {controls, body} = frame(el, "cw-attention");
  controls.append(field(model, "kind", "layout", "select", {options: model.get("layouts")}),
    slider(model, "T", "context T", 4, 128), slider(model, "window", "window", 1, 64),
    slider(model, "stride", "stride", 1, 32), slider(model, "c", "c (fixed)", 1, 32));
  const canvas = h("canvas", {width: 320, height: 320, class: "cw-mask", "aria-label": "attention mask"});
  const caption = h("p", {class: "cw-summary"});
  const title = h("p", {class: "cw-title", style: {fontSize: "0.9em", margin: "0"}});
  body.append(title, canvas, caption);

  function draw() {
    const kind = model.get("kind"), T = model.get("T");
    const s = attentionSummary(kind, T, model.get("window"), model.get("stride"), model.get("c"));
    const ctx = canvas.getContext("2d"), px = canvas.width / T;
    ctx.fillStyle = "#f4f7fb";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.fillStyle = "#2f6db3";
    for (let i = 0; i < T; i++) for (let j = 0; j < T; j++) {
      if (s.mask[i][j]) ctx.fillRect(j * px, i * px, Math.max(1, px - (px > 4 ? 1 : 0)), Math.max(1, px - (px > 4 ? 1 : 0)));
    }
    canvas.dataset.mask = s.mask.map((r) => r.join("")).join("/");
    title.textContent = `${kind}, T = ${T}: row i is a query, column j a key; blue where i sees j`;
    caption.dataset.kept = s.kept;
    caption.textContent = `${s.kept.toLocaleString("en-US")} of ${s.dense.toLocaleString("en-US")} dense scores ` +
      `(${Math.round(100 * s.fraction)}%); at most ${s.per_query_max} keys per query`;
  }
  for (const n of ["kind", "T", "window", "stride", "c"]) model.on(`change:${n}`, draw);
  draw();
}

export {keep, attentionSummary};
export default {render};
