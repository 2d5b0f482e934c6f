// Sampling rules shared by the sampling explorer and the page's generation (engine.generate).

// Indices sorted by descending value, ties in index order (np.argsort(-p, kind="stable")).
function argsortDesc(p) {
  return Array.from(p.keys()).sort((a, b) => (p[b] - p[a]) || (a - b));
}

// engine.generate.next_token_probs(logits, temperature, top_k, top_p): float64 probabilities.
function nextTokenProbs(logits, temperature = 1.0, topK = null, topP = null) {
  const V = logits.length;
  const p = new Float64Array(V);
  let argmax = 0, max = -Infinity;
  for (let i = 0; i < V; i++) if (logits[i] > max) { max = logits[i]; argmax = i; }
  if (temperature === 0) { p[argmax] = 1; return p; }
  let sum = 0;
  for (let i = 0; i < V; i++) { p[i] = Math.exp((logits[i] - max) / temperature); sum += p[i]; }
  for (let i = 0; i < V; i++) p[i] /= sum;
  if (topK !== null && topK < V) {   // keep exactly k by rank, not by value
    const order = argsortDesc(p);
    for (let r = topK; r < V; r++) p[order[r]] = 0;
  }
  if (topP !== null && topP < 1.0) {  // keep a token while the mass before it is short of top_p
    const order = argsortDesc(p);
    let total = 0;
    for (const i of order) total += p[i];
    let cum = 0;
    const drop = [];
    for (const i of order) { if (cum >= topP * total) drop.push(i); cum += p[i]; }
    for (const i of drop) p[i] = 0;
  }
  let s = 0;
  for (let i = 0; i < V; i++) s += p[i];
  for (let i = 0; i < V; i++) p[i] /= s;
  return p;
}

