// Chapters 1, 7, 8: the model continues the reader's prompt. In a notebook the kernel generates; in
// the static book the page does (model.js), token by token, showing each one as it comes.

function render({model, el}) {
  const {controls, body} = frame(el, "cw-generation");
  controls.append(field(model, "prompt", "prompt", "textarea", {rows: 2}),
    slider(model, "max_new_tokens", "new tokens", 1, model.get("max_tokens")),
    slider(model, "temperature", "temperature", 0, 2, 0.1),
    field(model, "seed", "seed", "number", {attrs: {min: 0, max: 1000000, style: "width:7em"}}));
  const inPage = siteStatic() !== null && model.get("model_name") !== "";
  const status = h("p", {class: "cw-status"});
  let ticket = 0;

  async function regenerate() {
    if (!inPage) return;   // the kernel answers with a new continuation
    const mine = ++ticket;
    const prompt = model.get("prompt");
    if (!prompt) { model.set("error", "the prompt is empty: type at least one character"); return; }
    try {
      status.textContent = "loading the model in your browser\u2026";
      const [m, enc] = await Promise.all([pageModel(model.get("model_name")),
        pageTokenizer(model.get("encoding_name"), model.get("encoding"))]);
      const maxNew = model.get("max_new_tokens");
      const room = m.meta.n_ctx - maxNew;
      const ids = tokenizeWith(enc, prompt).ids.slice(-room);
      model.set({error: "", shown_prompt: decodeWith(enc, ids), continuation: ""});
      status.textContent = "generating in your browser\u2026";
      const tokens = await generatePage(m, ids, maxNew, {temperature: model.get("temperature"),
        seed: model.get("seed"), onStep: (sofar) => {
          if (mine === ticket) model.set("continuation", decodeWith(enc, sofar));
        }});
      if (mine !== ticket) return;
      body.dataset.tokens = tokens.join(",");
      status.textContent = `${tokens.length} tokens generated in your browser (onnxruntime-web)`;
    } catch (e) {
      if (mine === ticket) model.set("error", `could not run the model in the page: ${e}`);
    }
  }
  for (const n of ["prompt", "max_new_tokens", "temperature", "seed"]) model.on(`change:${n}`, regenerate);

  const text = h("pre", {class: "cw-text", style: {whiteSpace: "pre-wrap"}});
  function draw() {
    if (model.get("error")) {
      body.replaceChildren(h("p", {class: "cw-error"}, model.get("error")), status);
      return;
    }
    text.replaceChildren(model.get("shown_prompt"),
      h("b", {class: "cw-new", style: {color: "#1f5fa8"}}, model.get("continuation")));
    body.replaceChildren(text, status);
  }
  for (const n of ["shown_prompt", "continuation", "error"]) model.on(`change:${n}`, draw);
  draw();
}

export {generatePage, seededRandom, drawFrom};
export default {render};
