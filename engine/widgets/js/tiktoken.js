// Tokenising in the page with tiktoken's WASM build (npm `tiktoken`: the same Rust core as the Python
// package) and the ranks files the static book serves (engine/widgets/site.py). Shared by every widget
// of the page (each widget's module is separate, the WASM instance and the encoders are not).
const COURSE = (globalThis.__course = globalThis.__course || {encoders: {}, models: {}});

function tiktokenModule() {
  const base = siteStatic();
  COURSE.tiktoken = COURSE.tiktoken || (async () => {
    const bg = await import(base + "wm/tiktoken/tiktoken_bg.js");
    const bytes = await (await fetch(base + "wm/tiktoken/tiktoken_bg.wasm")).arrayBuffer();
    const wasm = await WebAssembly.instantiate(bytes, {"./tiktoken_bg.js": bg});
    bg.__wbg_set_wasm(wasm.instance.exports);
    return bg;
  })();
  return COURSE.tiktoken;
}

// A tiktoken encoder for the site's vocabulary `name` (spec: engine.widgets.tokenizer.encoding_spec).
function pageTokenizer(name, spec) {
  const base = siteStatic();
  COURSE.encoders[name] = COURSE.encoders[name] || (async () => {
    const bg = await tiktokenModule();
    const response = await fetch(base + `course/tokenizers/${name}.tiktoken`);
    if (!response.ok) throw new Error(`the site has no ranks file for ${name}`);
    return new bg.Tiktoken(await response.text(), spec.special_tokens, spec.pat_str);
  })();
  return COURSE.encoders[name];
}

const UTF8 = new TextDecoder("utf-8");  // replaces partial characters with U+FFFD, as Python's "replace"

// ids and pieces of `text` (engine.widgets.tokenize_report), with a tiktoken encoder.
function tokenizeWith(enc, text) {
  const ids = Array.from(enc.encode(text, "all"));
  return {ids, pieces: ids.map((i) => UTF8.decode(enc.decode_single_token_bytes(i)))};
}

function decodeWith(enc, ids) {
  return UTF8.decode(enc.decode(Uint32Array.from(ids)));
}
