#!/bin/sh
# Self-host the widget JavaScript for the static book (no CDN): unpack the npm tarballs of
# @jupyter-widgets/html-manager (embed-amd.js and its chunks/fonts) and requirejs into book/_wm/wm.
set -e
cd "$(dirname "$0")"
rm -rf pack wm.tmp && mkdir -p pack wm.tmp
(cd pack && npm pack --silent @jupyter-widgets/html-manager@1.0.6 requirejs@2.3.8 >/dev/null)
for t in pack/*.tgz; do mkdir -p "${t%.tgz}" && tar xzf "$t" -C "${t%.tgz}"; done
cp pack/jupyter-widgets-html-manager-1.0.6/package/dist/* wm.tmp/
rm -f wm.tmp/*.map
cp pack/requirejs-2.3.8/package/require.js wm.tmp/require.js
# require.js resolves the widget modules' names (and so their fonts) against this folder
cat > wm.tmp/paths.js <<'JS'
(function () {
  var s = document.querySelector('script[src*="wm/require.js"]');
  var base = s.src.replace(/\/require\.js(\?.*)?$/, "");
  require.config({paths: {"@jupyter-widgets/html-manager/dist": base, "@jupyter-widgets": base}});
})();
JS
rm -rf wm pack && mv wm.tmp wm
echo "widget JavaScript installed in $(pwd)/wm"
