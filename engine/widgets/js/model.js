// A model in the page: onnxruntime-web (npm, its wasm files served by the site) runs the graph that
// engine.onnx exports (published by engine/widgets/site.py), with the key/value cache carried from
// one call to the next exactly as engine.generate does. Needs probs.js and tiktoken.js before it.

function ortModule() {
  const base = siteStatic();
  COURSE.ort = COURSE.ort || (async () => {
    const ort = await import(base + "wm/ort/ort.wasm.min.mjs");
    ort.env.wasm.wasmPaths = base + "wm/ort/";
    ort.env.wasm.numThreads = 1;   // a static host is not cross-origin isolated: one thread
    ort.env.logLevel = "error";
    return ort;
  })();
  return COURSE.ort;
}

// {ort, meta (model.json), session} for the published model `name`.
function pageModel(name) {
  const dir = siteStatic() + `course/models/${name}/`;
  COURSE.models[name] = COURSE.models[name] || (async () => {
    const ort = await ortModule();
    const meta = await (await fetch(dir + "model.json")).json();
    const bytes = new Uint8Array(await (await fetch(dir + meta.file)).arrayBuffer());
    const session = await ort.InferenceSession.create(bytes, {executionProviders: ["wasm"]});
    return {ort, meta, session};
  })();
  return COURSE.models[name];
}

function cacheNames(meta) {
  const names = [];
  for (let i = 0; i < meta.n_layer; i++) for (const kind of ["key", "value"]) names.push(`${kind}_${i}`);
  return names;
}

// One forward pass of `ids` (the new tokens) after the cache `past` (null: none yet).
// Returns the ORT output tensors by name, and `past` for the next call.
async function forwardPage(m, ids, past, extra = []) {
  const {ort, meta, session} = m;
  const feeds = {input_ids: new ort.Tensor("int64", BigInt64Array.from(ids, (i) => BigInt(i)), [1, ids.length])};
  for (const n of cacheNames(meta)) {
    feeds["past_" + n] = past ? past["past_" + n]
      : new ort.Tensor("float32", new Float32Array(0), [1, meta.n_head, 0, meta.d_head]);
  }
  const fetches = ["logits", ...cacheNames(meta).map((n) => "present_" + n), ...extra];
  const out = await session.run(feeds, fetches);
  const next = {};
  for (const n of cacheNames(meta)) next["past_" + n] = out["present_" + n];
  return {out, past: next};
}

function lastRow(t) {  // (1, T, V) -> the last position's (V,)
  const [, T, V] = t.dims;
  return t.data.subarray((T - 1) * V, T * V);
}

function argmaxOf(x) {  // the first index of the largest value, as np.argmax
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

// A small seeded generator (mulberry32): the page's draws repeat for a seed (they are not NumPy's).
function seededRandom(seed) {
  let a = (seed >>> 0) || 0x9e3779b9;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// engine.generate.sample for one row: inverse-CDF draw, a token of probability 0 never picked.
function drawFrom(p, u) {
  let total = 0;
  for (const x of p) total += x;
  let cum = 0, n = 0;
  for (const x of p) { cum += x; if (cum <= u * total) n++; }
  return Math.min(n, p.length - 1);
}

// engine.generate.generate: `maxNew` tokens after `ids`, greedy at temperature 0, else drawn under
// next_token_probs' rules. onStep(tokensSoFar) is called after each token.
async function generatePage(m, ids, maxNew, {temperature = 0, topK = null, topP = null, seed = 0, onStep} = {}) {
  const rand = seededRandom(seed);
  let {out, past} = await forwardPage(m, ids, null);
  const tokens = [];
  for (let step = 0; step < maxNew; step++) {
    const logits = lastRow(out.logits);
    const next = temperature === 0 ? argmaxOf(logits)
      : drawFrom(nextTokenProbs(logits, temperature, topK, topP), rand());
    tokens.push(next);
    if (onStep) onStep(tokens);
    if (step + 1 < maxNew) ({out, past} = await forwardPage(m, [next], past));
  }
  return tokens;
}
