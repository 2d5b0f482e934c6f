"""Run the widgets' front-end functions in Node.js, to check them against the engine.

``call_js(["probs", "sampling"], [("nextTokenProbs", [logits, 0.7, None, 0.9]), ...])`` loads the
widget module exactly as the page gets it (``engine.widgets.base.esm``) and returns each result as
JSON (typed arrays as lists).
"""
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from engine.widgets.base import esm

NODE = shutil.which("node")
ROOT = Path(__file__).resolve().parent.parent
TIKTOKEN_JS = ROOT / "book" / "_wm" / "wm" / "tiktoken"

RUNNER = """
import * as m from "./widget.mjs";
import {readFileSync} from "fs";
const req = JSON.parse(readFileSync(0, "utf8"));
let ctx = {};
if (req.tiktoken) {   // a tiktoken encoder from the WASM build the site serves, as the page makes it
  const bg = await import(req.tiktoken.js);
  const wasm = await WebAssembly.instantiate(readFileSync(req.tiktoken.wasm), {"./tiktoken_bg.js": bg});
  bg.__wbg_set_wasm(wasm.instance.exports);
  ctx.enc = new bg.Tiktoken(readFileSync(req.tiktoken.ranks, "utf8"), req.tiktoken.special, req.tiktoken.pat);
}
const args = (a) => a.map((x) => (x === "$enc" ? ctx.enc : x));
const out = req.calls.map(([f, a]) => m[f](...args(a)));
process.stdout.write(JSON.stringify(out, (k, v) => (ArrayBuffer.isView(v) ? Array.from(v) : v)));
"""


def call_js(modules, calls, tiktoken=None):
    if NODE is None:
        pytest.skip("Node.js is not installed (apt-get install nodejs)")
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "widget.mjs").write_text(esm(*modules))
        (Path(d) / "run.mjs").write_text(RUNNER)
        req = {"calls": calls}
        if tiktoken is not None:
            enc, ranks_text = tiktoken
            if not (TIKTOKEN_JS / "tiktoken_bg.wasm").exists():
                pytest.skip("tiktoken's WASM build is not installed: make widgets-js")
            (Path(d) / "ranks.tiktoken").write_text(ranks_text)
            req["tiktoken"] = {"js": str(TIKTOKEN_JS / "tiktoken_bg.js"), "wasm": str(TIKTOKEN_JS / "tiktoken_bg.wasm"),
                               "ranks": str(Path(d) / "ranks.tiktoken"), "special": dict(enc._special_tokens),
                               "pat": enc._pat_str}
        p = subprocess.run([NODE, str(Path(d) / "run.mjs")], input=json.dumps(req), capture_output=True,
                           text=True, timeout=120)
        if p.returncode:
            raise AssertionError(f"node failed:\n{p.stderr}")
        return json.loads(p.stdout)
