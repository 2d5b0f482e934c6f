// Chapter 3: the text the reader types, cut into tokens. In the static book the page tokenises with
// tiktoken's WASM build (npm `tiktoken`, the same Rust core as the Python package) and the ranks files
// the site serves; in a notebook the kernel does, and this module only draws.
function countWords(text) {
  return text.split(/\s+/).filter((w) => w.length > 0).length;
}

function render({model, el}) {
  const {controls, body} = frame(el, "cw-tokenizer");
  const specs = model.get("specs");
  const names = Object.keys(specs);
  const select = h("select", {"data-control": "encoding", "aria-label": "vocabulary"},
    names.map((n) => h("option", {value: n}, specs[n].label || n)));
  select.value = model.get("encoding");
  const area = h("textarea", {rows: 3, "data-control": "text", "aria-label": "text"});
  area.value = model.get("text");
  controls.append(h("label", {class: "cw-control"}, h("span", {class: "cw-label"}, "vocabulary"), select),
    h("label", {class: "cw-control cw-wide"}, h("span", {class: "cw-label"}, "text"), area));
  const inPage = siteStatic() !== null;
  let pending = 0;

  async function retokenize() {
    if (!inPage) return;  // the kernel answers with new ids and pieces
    const ticket = ++pending;
    try {
      const enc = await pageTokenizer(model.get("encoding"), specs[model.get("encoding")]);
      if (ticket !== pending) return;
      const r = tokenizeWith(enc, model.get("text"));
      model.set({ids: r.ids, pieces: r.pieces, error: ""});
    } catch (e) {
      model.set("error", `could not tokenise in the page: ${e}`);
    }
  }
  function send(name, value) {
    model.set(name, value);
    model.save_changes();
    retokenize();
  }
  area.addEventListener("input", () => send("text", area.value));
  select.addEventListener("change", () => send("encoding", select.value));

  function draw() {
    if (model.get("error")) {
      body.replaceChildren(h("p", {class: "cw-error"}, model.get("error")));
      return;
    }
    const ids = model.get("ids"), pieces = model.get("pieces"), text = model.get("text");
    const spans = pieces.map((p, k) => h("span", {class: "cw-tok", title: String(ids[k]), "data-id": ids[k],
      style: {background: PALETTE[k % PALETTE.length]}}, showPiece(p)));
    const nChars = Array.from(text).length;  // code points, as Python counts
    const cpt = ids.length ? (nChars / ids.length).toFixed(2) : "0.00";
    body.replaceChildren(
      h("div", {class: "cw-tokens", style: {lineHeight: "1.9"}}, spans),
      h("p", {class: "cw-counts", "data-tokens": ids.length},
        `${nChars} characters, ${countWords(text)} words, ${ids.length} tokens (${cpt} characters per token)`),
      h("p", {class: "cw-ids", style: {fontFamily: "monospace"}}, `ids: [${ids.join(", ")}]`));
  }
  for (const n of ["ids", "pieces", "error"]) model.on(`change:${n}`, draw);
  draw();
}

export {tokenizeWith, countWords};
export default {render};
