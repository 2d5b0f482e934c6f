// Chapter 2: the window slides over a sentence; each position is one (context -> next token) example.

// The examples a window of `context` tokens makes: engine.widgets.sliding_window_examples.
function slidingWindowExamples(tokens, context) {
  const out = [];
  for (let t = 1; t < tokens.length; t++) out.push([tokens.slice(Math.max(0, t - context), t), tokens[t]]);
  return out;
}

function render({model, el}) {
  const {controls, body} = frame(el, "cw-sliding-window");
  const tokens = model.get("tokens");
  const n = Math.max(1, tokens.length - 1);
  controls.append(slider(model, "position", "example", 1, n), slider(model, "context", "context", 1, n));
  function draw() {
    const ex = slidingWindowExamples(tokens, model.get("context"));
    const t = Math.min(model.get("position"), ex.length);
    const [ctx, target] = ex[t - 1];
    const line = h("div", {class: "cw-sentence", style: {lineHeight: "2"}}, tokens.map((tok, k) => {
      const role = (t - ctx.length <= k && k < t) ? "context" : (k === t ? "target" : "rest");
      const style = role === "context" ? {background: "#b3cde3"}
        : role === "target" ? {background: "#fed9a6", fontWeight: "bold"} : {color: "#999"};
      return [h("span", {class: `cw-tok cw-${role}`, style}, showPiece(tok)), " "];
    }));
    const summary = h("p", {class: "cw-summary"}, `example ${t} of ${ex.length}: input `,
      h("code", {class: "cw-example-input"}, showPiece(ctx.join(" "))), " \u2192 target ",
      h("code", {class: "cw-example-target"}, showPiece(target)));
    body.replaceChildren(line, summary);
  }
  model.on("change:position", draw);
  model.on("change:context", draw);
  draw();
}

export {slidingWindowExamples};
export default {render};
