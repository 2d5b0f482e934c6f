// Chapters 4 and 9: a GPT's parameters, memory and compute, from its shape: engine.config's formulas.

// engine.units.human(n, unit, words=True)
function humanWords(n, unit = "") {
  const bytes = [[1e12, "TB"], [1e9, "GB"], [1e6, "MB"], [1e3, "kB"]];
  const words = [[1e12, "trillion"], [1e9, "billion"], [1e6, "million"], [1e3, "thousand"]];
  for (const [div, w] of unit === "B" ? bytes : words) if (n >= div) return `${(n / div).toFixed(1)} ${w}`;
  return unit === "B" ? `${n.toFixed(0)} B` : n.toFixed(0);
}

// GPTConfig.attended_positions for the layouts the calculator offers (dense, banded)
function attended(kind, T, window) {
  if (kind === "dense") return (T + 1) / 2;
  const w = Math.min(window, T);
  return (w * (w + 1) / 2 + (T - w) * w) / T;
}

function layerLayouts(attention, n_layer) {
  return Array.from({length: n_layer}, (_, i) =>
    attention === "alternating" ? (i % 2 === 0 ? "dense" : "banded") : attention);
}

// engine.widgets.parameter_report: GPTConfig.n_params, params_per_layer, memory_bytes("float16"),
// flops_per_token()["forward"], 6 N D and GPU-years at 28 TFLOP/s.
function parameterReport({n_layer, d_model, n_ctx, vocab_size, attention = "alternating", window = 256},
                         tokens = 300e9, gpuFlops = 28e12) {
  const d = d_model, f = 4 * d;
  const perLayer = (3 * d * d + 3 * d) + (d * d + d) + (2 * d * f + f + d) + 4 * d;
  const embedding = (vocab_size + n_ctx) * d;
  const n = embedding + n_layer * perLayer + 2 * d;
  const matmul = n_layer * (4 * d * d + 2 * d * f) + vocab_size * d;
  const w = Math.min(window, n_ctx);
  let attn = 0;
  for (const kind of layerLayouts(attention, n_layer)) attn += 4 * d * attended(kind, n_ctx, w);
  const trainFlops = 6 * n * tokens;
  return {
    n_params: n, per_layer: perLayer, embedding,
    weights_fp32: 4 * n, weights_fp16: 2 * n,
    training_bytes: n * 2 * 2 + 2 * n * 4 + n * 4,   // fp16 weights + grads, fp32 Adam moments + master copy
    kv_cache_fp16: 2 * n_layer * n_ctx * d * 2,
    forward_per_token: 2 * matmul + attn,
    train_flops: trainFlops,
    gpu_years: trainFlops / gpuFlops / (365.25 * 24 * 3600),
  };
}

function render({model, el}) {
  const {controls, body} = frame(el, "cw-parameters");
  const presets = model.get("presets");
  const select = h("select", {"data-control": "preset", "aria-label": "preset"},
    h("option", {value: "custom"}, "custom"), Object.keys(presets).map((p) => h("option", {value: p}, p)));
  select.value = model.get("preset");
  select.addEventListener("change", () => {
    const p = presets[select.value];
    model.set(p ? {preset: select.value, ...p} : {preset: "custom"});
    model.save_changes();
  });
  model.on("change:preset", () => { select.value = model.get("preset"); });
  const shape = [["n_layer", "layers", 1, 128, 1], ["d_model", "d_model", 64, 16384, 64],
    ["n_ctx", "context", 128, 8192, 128], ["vocab_size", "vocabulary", 256, 262144, 1]];
  controls.append(h("label", {class: "cw-control"}, h("span", {class: "cw-label"}, "preset"), select));
  for (const [name, label, lo, hi, step] of shape) {
    const s = name === "vocab_size" ? field(model, name, label, "number", {attrs: {min: lo, max: hi}})
      : slider(model, name, label, lo, hi, step);
    s.addEventListener("input", () => { model.set("preset", "custom"); model.save_changes(); });
    s.addEventListener("change", () => { model.set("preset", "custom"); model.save_changes(); });
    controls.append(s);
  }
  controls.append(slider(model, "tokens_billions", "training tokens (billions)", 1, 2000));

  function draw() {
    const shapeNow = {n_layer: model.get("n_layer"), d_model: model.get("d_model"), n_ctx: model.get("n_ctx"),
      vocab_size: model.get("vocab_size"), attention: model.get("attention"), window: model.get("window")};
    if (!(shapeNow.vocab_size >= 1) || !Number.isInteger(shapeNow.vocab_size)) {
      body.replaceChildren(h("p", {class: "cw-error"}, "the vocabulary must be a positive whole number"));
      return;
    }
    const r = parameterReport(shapeNow, model.get("tokens_billions") * 1e9);
    const rows = [
      ["n_params", "parameters", `${r.n_params.toLocaleString("en-US")} (${humanWords(r.n_params)})`],
      ["per_layer", "per layer", r.per_layer.toLocaleString("en-US")],
      ["embedding", "embeddings (tokens + positions)", r.embedding.toLocaleString("en-US")],
      ["weights_fp32", "weights in fp32 / fp16", `${humanWords(r.weights_fp32, "B")} / ${humanWords(r.weights_fp16, "B")}`],
      ["training_bytes", "training state (fp16 weights and grads, fp32 master and Adam)", humanWords(r.training_bytes, "B")],
      ["kv_cache_fp16", "KV cache for one full context, fp16", humanWords(r.kv_cache_fp16, "B")],
      ["forward_per_token", "forward pass, FLOPs per token (full context)", r.forward_per_token.toPrecision(4)],
      ["train_flops", "training compute, 6 N D", `${r.train_flops.toPrecision(3)} FLOPs`],
      ["gpu_years", "GPU-years at 28 TFLOP/s", r.gpu_years.toLocaleString("en-US", {minimumFractionDigits: 1, maximumFractionDigits: 1})],
    ];
    body.replaceChildren(h("table", {class: "cw-table"}, h("tr", {}, h("th", {}, ""), h("th", {}, "value")),
      rows.map(([key, label, text]) => h("tr", {}, h("td", {}, label),
        h("td", {"data-key": key, "data-value": String(r[key])}, text)))));
  }
  for (const n of ["n_layer", "d_model", "n_ctx", "vocab_size", "tokens_billions", "attention", "window"]) {
    model.on(`change:${n}`, draw);
  }
  draw();
}

export {parameterReport, humanWords};
export default {render};
