#!/bin/sh
# Self-host the widget JavaScript for the static book (no CDN): unpack the npm tarballs of
# @jupyter-widgets/html-manager (embed-amd.js and its chunks/fonts), requirejs and MathJax 3 into book/_wm/wm.
set -e
cd "$(dirname "$0")"
rm -rf pack wm.tmp && mkdir -p pack wm.tmp
(cd pack && npm pack --silent @jupyter-widgets/html-manager@1.0.6 requirejs@2.3.8 mathjax@3.2.2 anywidget@0.11.0 tiktoken@1.0.22 onnxruntime-web@1.20.1 >/dev/null)
for t in pack/*.tgz; do mkdir -p "${t%.tgz}" && tar xzf "$t" -C "${t%.tgz}"; done
cp pack/jupyter-widgets-html-manager-1.0.6/package/dist/* wm.tmp/
rm -f wm.tmp/*.map
# anywidget's front end (an AMD module on @jupyter-widgets/base, which embed-amd.js defines): the same
# version as the Python package (pyproject.toml), so that widgets written as ES modules render here too
mkdir -p wm.tmp/anywidget && cp pack/anywidget-0.11.0/package/dist/index.js wm.tmp/anywidget/index.js
# tiktoken's WASM build (the same Rust core as the Python package; its "lite" variant carries no
# vocabulary: the site serves the ranks files) and onnxruntime-web's WASM runtime, for the widgets that
# tokenise and run the course model in the page
mkdir -p wm.tmp/tiktoken wm.tmp/ort
cp pack/tiktoken-1.0.22/package/lite/tiktoken_bg.js pack/tiktoken-1.0.22/package/lite/tiktoken_bg.wasm wm.tmp/tiktoken/
cp pack/tiktoken-1.0.22/package/LICENSE* wm.tmp/tiktoken/ 2>/dev/null || true
(cd pack/onnxruntime-web-1.20.1/package/dist && cp ort.wasm.min.mjs ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm ../../../../wm.tmp/ort/)
cp pack/onnxruntime-web-1.20.1/package/LICENSE* wm.tmp/ort/ 2>/dev/null || true
cp pack/requirejs-2.3.8/package/require.js wm.tmp/require.js
# MathJax 3 (the book's equations), its fonts and the parts it loads lazily
mkdir -p wm.tmp/mathjax
(cd pack/mathjax-3.2.2/package/es5 && cp -r tex-mml-chtml.js input output ui a11y adaptors sre ../../../../wm.tmp/mathjax/)
# Set-up run between require.js and embed-amd.js: require.js resolves the widget modules' names (and
# so their fonts) against this folder; and html-manager 1.x typesets widget labels through MathJax 2's
# MathJax.Hub.Queue, which MathJax 3 (what Sphinx loads) lacks, so give it that one entry point.
cat > wm.tmp/setup.js <<'JS'
(function () {
  var s = document.querySelector('script[src*="wm/require.js"]');
  var base = s.src.replace(/\/require\.js(\?.*)?$/, "");
  require.config({paths: {"@jupyter-widgets/html-manager/dist": base, "@jupyter-widgets": base,
                          "anywidget": base + "/anywidget/index"}});
  function hub(M) {
    if (M && !M.Hub) {
      M.Hub = {Queue: function (job) {
        if (M.typesetPromise && job && job[2]) { M.typesetPromise([job[2]]).catch(function () {}); }
      }};
    }
  }
  var cfg = window.MathJax;
  if (cfg && !cfg.version) {            // MathJax 3's configuration object, before MathJax itself loads
    hub(cfg);
    cfg.startup = cfg.startup || {};
    var ready = cfg.startup.ready;
    cfg.startup.ready = function () {
      if (ready) { ready(); } else { window.MathJax.startup.defaultReady(); }
      hub(window.MathJax);
    };
  } else {
    hub(cfg);
  }
})();
JS
rm -rf wm pack && mv wm.tmp wm
echo "widget JavaScript installed in $(pwd)/wm"
