// Chapter 5: the X-ray. The logit lens (what the model would predict if it stopped after each layer)
// at the last position, and any layer's and head's attention map. A new prompt is run by the kernel in a
// notebook, by the page's copy of the model (model.js: its lens_logits and attn outputs) in the book.

// The logit-lens table from lens_logits (L + 1, 1, T, V): top-k (piece, p) per stage at the last position.
function lensTable(lens, k, pieceOf) {
  const [stages, , T, V] = lens.dims;
  const rows = [];
  for (let s = 0; s < stages; s++) {
    const logits = lens.data.subarray((s * T + T - 1) * V, (s * T + T) * V);
    const p = nextTokenProbs(logits);
    rows.push(argsortDesc(p).slice(0, k).map((i) => [pieceOf(i), p[i]]));
  }
  return rows;
}

function render({model, el}) {
  const {controls, body} = frame(el, "cw-xray");
  controls.append(field(model, "prompt", "prompt", "textarea", {rows: 2}),
    slider(model, "layer", "layer", 0, model.get("n_layer") - 1), slider(model, "head", "head", 0, model.get("n_head") - 1));
  const inPage = siteStatic() !== null && model.get("model_name") !== "";
  const status = h("p", {class: "cw-status"});
  let ticket = 0;

  async function rerun() {
    if (!inPage) return;
    const mine = ++ticket;
    if (!model.get("prompt")) { model.set("error", "the prompt is empty"); return; }
    try {
      status.textContent = "running the model in your browser\u2026";
      const [m, enc] = await Promise.all([pageModel(model.get("model_name")),
        pageTokenizer(model.get("encoding_name"), model.get("encoding"))]);
      const ids = tokenizeWith(enc, model.get("prompt")).ids.slice(-m.meta.n_ctx);
      const {out} = await forwardPage(m, ids, null, ["lens_logits", "attn"]);
      if (mine !== ticket) return;
      const pieceOf = (i) => UTF8.decode(enc.decode_single_token_bytes(i));
      const attn = new Float32Array(out.attn.data);   // (L, 1, H, T, T) = (L, H, T, T)
      let bin = "";
      const bytes = new Uint8Array(attn.buffer);
      for (let i = 0; i < bytes.length; i += 8192) bin += String.fromCharCode(...bytes.subarray(i, i + 8192));
      model.set({error: "", pieces: ids.map(pieceOf), lens: lensTable(out.lens_logits, model.get("k"), pieceOf),
        attn_b64: btoa(bin)});
      status.textContent = "computed in your browser (onnxruntime-web)";
    } catch (e) {
      if (mine === ticket) model.set("error", `could not run the model in the page: ${e}`);
    }
  }
  model.on("change:prompt", rerun);

  const canvas = h("canvas", {width: 360, height: 360, class: "cw-attn", "aria-label": "attention map"});
  function draw() {
    if (model.get("error")) {
      body.replaceChildren(h("p", {class: "cw-error"}, model.get("error")), status);
      return;
    }
    const pieces = model.get("pieces"), T = pieces.length, lens = model.get("lens");
    const L = model.get("n_layer"), H = model.get("n_head");
    const layer = Math.min(model.get("layer"), L - 1), head = Math.min(model.get("head"), H - 1);
    const table = h("table", {class: "cw-table cw-lens"}, h("tr", {}, h("th", {}, "stage"), h("th", {}, `top ${model.get("k")}`)),
      lens.map((row, s) => h("tr", {"data-stage": s, "data-top": row.map(([p]) => p).join("\u241f")},
        h("td", {}, s === 0 ? "embedding" : `after layer ${s - 1}`),
        h("td", {}, row.map(([p, q], r) => [r ? ", " : "", h("code", {}, showPiece(p)), ` ${fmt(q, 2)}`])))));
    const att = float32FromBase64(model.get("attn_b64"));
    const off = (layer * H + head) * T * T;
    const ctx = canvas.getContext("2d"), cell = canvas.width / T;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const row = [];
    for (let i = 0; i < T; i++) for (let j = 0; j < T; j++) {
      const a = att[off + i * T + j];
      ctx.fillStyle = `rgba(31, 95, 168, ${Math.min(1, a).toFixed(3)})`;
      ctx.fillRect(j * cell, i * cell, cell, cell);
    }
    for (let j = 0; j < T; j++) row.push(att[off + (T - 1) * T + j]);
    canvas.dataset.lastRow = row.map((x) => x.toFixed(4)).join(",");
    body.replaceChildren(
      h("p", {}, "next-token guesses for the last position (", h("code", {}, showPiece(pieces[T - 1] || "")),
        "), read after each layer (the logit lens):"), table,
      h("p", {class: "cw-title"}, `attention of layer ${layer} (${model.get("layouts")[layer]}), head ${head}: ` +
        "row i is a query, column j a key; darker is more weight"),
      h("div", {style: {display: "flex", gap: "8px", alignItems: "flex-start"}}, canvas,
        h("ol", {start: 0, class: "cw-pieces", style: {fontFamily: "monospace", fontSize: "0.8em", margin: 0}},
          pieces.map((p) => h("li", {}, showPiece(p))))), status);
  }
  for (const n of ["pieces", "lens", "attn_b64", "layer", "head", "error"]) model.on(`change:${n}`, draw);
  draw();
}

export {lensTable};
export default {render};
