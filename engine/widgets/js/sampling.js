// Chapter 7: the page applies engine.generate.next_token_probs to the saved logits.

function render({model, el}) {
  const {controls, body} = frame(el, "cw-sampling");
  const logits = float32FromBase64(model.get("logits_b64"));
  const raw = nextTokenProbs(logits);
  controls.append(slider(model, "temperature", "temperature", 0, 2, 0.1),
    slider(model, "top_k", "top-k (0 = off)", 0, 50), slider(model, "top_p", "top-p", 0.05, 1, 0.05));
  function draw() {
    const p = nextTokenProbs(logits, model.get("temperature"), model.get("top_k") || null, model.get("top_p"));
    let kept = 0;
    for (const x of p) if (x > 0) kept++;
    const ids = model.get("top_ids"), pieces = model.get("top_pieces");
    const rows = ids.map((i, r) => h("tr", {"data-id": i, "data-p": String(p[i]), "data-raw": String(raw[i])},
      h("td", {}, h("code", {}, showPiece(pieces[r]))), h("td", {}, fmt(raw[i])), h("td", {}, fmt(p[i])),
      h("td", {}, h("div", {style: {background: "#1f5fa8", height: "0.8em", width: `${Math.round(200 * p[i])}px`}}))));
    body.replaceChildren(
      h("p", {class: "cw-summary", "data-kept": kept}, "next token after ", h("code", {}, showPiece(model.get("prompt"))),
        `; ${kept.toLocaleString("en-US")} of ${logits.length.toLocaleString("en-US")} tokens can be drawn`),
      h("table", {class: "cw-table"}, h("tr", {}, ["token", "p (T=1)", "p sampled", ""].map((x) => h("th", {}, x))), rows));
  }
  for (const n of ["temperature", "top_k", "top_p"]) model.on(`change:${n}`, draw);
  draw();
}

export {nextTokenProbs, argsortDesc};
export default {render};
