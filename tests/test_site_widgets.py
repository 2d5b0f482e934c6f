"""Every control of every widget on every chapter page, in the static book (no kernel), in Chromium.

Each widget is found on its page with its saved state (the page's widget-state script); every control
it has is moved, and what the page then shows is compared with what the engine computes for the same
inputs, here in Python: windows, tiktoken ids for both vocabularies, GPTConfig's counts, attention
masks, next_token_probs, greedy generation and the logit lens of the course model that the page runs
with onnxruntime-web. A control that the test does not know how to check fails the test, as does any
request leaving the site and any console error.
"""
from __future__ import annotations

import base64
import json
import math
import re

import numpy as np
import pytest

from test_book import CHAPTERS, SITE, _open, browser, site  # noqa: F401 - fixtures

pytestmark = pytest.mark.browser

PROMPTS = ["ROMEO:\nWhat light through yonder window breaks?", "KING HENRY:\nOnce more unto the breach"]


def _unshow(s: str) -> str:  # the page shows spaces and newlines visibly
    return s.replace("\u00b7", " ").replace("\u21b5", "\n")


def widget_states(path) -> dict:
    html = path.read_text()
    m = re.search(r'<script type="application/vnd.jupyter.widget-state\+json">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))["state"] if m else {}


def found_widgets(page) -> list[tuple[str, str]]:
    """(kind, model_id) of every course widget the page rendered, in page order."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('.course-widget')).map((w, i) => {
        w.dataset.testIndex = i;
        const view = w.closest('.cell_output').querySelector('script[type="application/vnd.jupyter.widget-view+json"]');
        const kind = Array.from(w.classList).find((c) => c.startsWith('cw-'));
        return [kind, JSON.parse(view.textContent).model_id];
    })""")


def _set(loc, value):
    """Move a control as a reader would: a range or number set and 'input'/'change' fired, a select chosen,
    a text typed (and Enter pressed, or the box left)."""
    tag = loc.evaluate("e => e.tagName + ':' + (e.type || '')")
    if tag.startswith("SELECT"):
        loc.select_option(str(value))
    elif tag.startswith("TEXTAREA"):  # typed, then left (a prompt is sent when the reader leaves the box)
        loc.fill(value)
        loc.dispatch_event("change")
    elif tag == "INPUT:text":
        loc.fill(value)
        loc.press("Enter")
    else:
        loc.fill(str(value))
        loc.dispatch_event("change")


# ---------------------------------------------------------------------- one checker per widget kind
def check_sliding_window(page, w, state):
    from engine.widgets import sliding_window_examples

    tokens = state["tokens"]
    n = len(tokens) - 1
    for ctx in sorted({1, 2, n // 2, n}):
        _set(w.locator('[data-control="context"]'), ctx)
        ex = sliding_window_examples(tokens, ctx)
        for t in sorted({1, 2, n // 2 + 1, n}):
            _set(w.locator('[data-control="position"]'), t)
            c, y = ex[t - 1]
            assert _unshow(w.locator(".cw-example-input").inner_text()) == " ".join(c)
            assert _unshow(w.locator(".cw-example-target").inner_text()) == y
            assert w.locator("span.cw-context").count() == len(c)
    return {"context", "position"}


def check_tokenizer(page, w, state):
    from engine import get_encoding
    from engine.loading import asset_dir
    from engine.tokenizer import load_encoding
    from engine.widgets.tokenizer import site_encoding_name

    encs = {site_encoding_name(e): e for e in (get_encoding("r50k_base"), load_encoding(asset_dir()))}
    assert set(state["specs"]) <= set(encs), state["specs"].keys()
    texts = ["Second Law of Robotics: A robot must obey the orders", "naïve café, 中文 and 😀 emoji!\n\n  spaces",
             "<|endoftext|>ROMEO: wherefore art thou"]
    for name in state["specs"]:
        _set(w.locator('[data-control="encoding"]'), name)
        for text in texts:
            _set(w.locator('[data-control="text"]'), text)
            ids = encs[name].encode(text, allowed_special="all")
            page.wait_for_function("([i, n]) => document.querySelector(`[data-test-index='${i}'] .cw-counts`)"
                                   ".dataset.tokens == n && true", arg=[w.get_attribute("data-test-index"), len(ids)],
                                   timeout=20000)
            shown = [int(x) for x in w.locator(".cw-tok").evaluate_all("es => es.map(e => e.dataset.id)")]
            assert shown == ids, (name, text)
            assert f"{len(ids)} tokens" in w.locator(".cw-counts").inner_text()
    return {"encoding", "text"}


def check_parameters(page, w, state):
    from engine.config import GPTConfig, PRESETS

    def shown(key):
        return float(w.locator(f'td[data-key="{key}"]').get_attribute("data-value"))

    for name in state["presets"]:
        _set(w.locator('[data-control="preset"]'), name)
        cfg = PRESETS[name]
        assert shown("n_params") == cfg.n_params() and shown("per_layer") == cfg.params_per_layer()
        assert shown("forward_per_token") == pytest.approx(cfg.flops_per_token()["forward"], rel=1e-12)
        assert shown("training_bytes") == cfg.memory_bytes("float16")["training_total"]
    moves = {"n_layer": 7, "d_model": 1024, "n_ctx": 4096, "vocab_size": 32000, "tokens_billions": 500}
    for control, value in moves.items():
        _set(w.locator(f'[data-control="{control}"]'), value)
    cfg = GPTConfig(n_layer=7, n_head=8, d_model=1024, n_ctx=4096, vocab_size=32000, attention=PRESETS[name].attention,
                    window=PRESETS[name].window)
    assert w.locator('[data-control="preset"]').input_value() == "custom"
    assert shown("n_params") == cfg.n_params() and shown("kv_cache_fp16") == cfg.memory_bytes("float16")["kv_cache"]
    assert shown("train_flops") == pytest.approx(6 * cfg.n_params() * 500e9, rel=1e-12)
    assert shown("gpu_years") == pytest.approx(6 * cfg.n_params() * 500e9 / 28e12 / (365.25 * 86400), rel=1e-12)
    return {"preset", *moves}


def check_attention(page, w, state):
    from engine.attention import attention_mask

    for kind in state["layouts"]:
        _set(w.locator('[data-control="kind"]'), kind)
        for T, win, stride, c in [(4, 1, 1, 1), (37, 9, 5, 2), (128, 64, 32, 32), (64, 3, 8, 12)]:
            for control, v in (("T", T), ("window", win), ("stride", stride), ("c", c)):
                _set(w.locator(f'[data-control="{control}"]'), v)
            rows = w.locator("canvas.cw-mask").get_attribute("data-mask").split("/")
            got = np.array([[ch == "1" for ch in r] for r in rows])
            ref = attention_mask(kind, T, window=win, stride=stride, c=min(c, stride))
            np.testing.assert_array_equal(got, ref, err_msg=f"{kind} T={T} w={win} s={stride} c={c}")
            assert int(w.locator(".cw-summary").get_attribute("data-kept")) == int(ref.sum())
    return {"kind", "T", "window", "stride", "c"}


def check_sampling(page, w, state):
    from engine.generate import next_token_probs

    logits = np.frombuffer(base64.b64decode(state["logits_b64"]), dtype=np.float32)
    for t, k, p in [(1.0, 0, 1.0), (0.0, 0, 1.0), (0.7, 5, 1.0), (1.5, 0, 0.5), (2.0, 50, 0.05), (0.3, 1, 0.9)]:
        for control, v in (("temperature", t), ("top_k", k), ("top_p", p)):
            _set(w.locator(f'[data-control="{control}"]'), v)
        ref = next_token_probs(logits, t, k or None, p)
        rows = w.locator("tr[data-id]").evaluate_all("rs => rs.map(r => [+r.dataset.id, +r.dataset.p])")
        assert [i for i, _ in rows] == state["top_ids"]
        np.testing.assert_allclose([q for _, q in rows], ref[state["top_ids"]], atol=1e-6, rtol=0)
        assert int(w.locator(".cw-summary").get_attribute("data-kept")) == int((ref > 0).sum())
    return {"temperature", "top_k", "top_p"}


def _page_model(state):
    """The model the widget runs in the page, as the engine (the course model) or, for a model made in the
    chapter (chapter 8's fine-tuned one), as the published graph run by onnxruntime in Python (whose
    logits tests/test_onnx.py ties to the engine's)."""
    from engine.pretrained import load_pretrained
    from engine.widgets import site as site_files

    model, enc = load_pretrained()
    if site_files.model_name(model) == state["model_name"]:
        return "engine", model, enc
    ort = pytest.importorskip("onnxruntime")
    folder = SITE / "_static" / "course" / "models" / state["model_name"]
    return "onnx", ort.InferenceSession(str(folder / "model.onnx")), enc


def _greedy(kind, m, ids, n):
    from engine.config import GPTConfig
    from engine.onnx import greedy

    if kind == "engine":
        return [int(t) for t in np.asarray(m.generate(np.asarray(ids), n, temperature=0.0))[len(ids):]]
    meta = json.loads((SITE / "_static/course/models").glob("*/model.json").__next__().read_text())
    cfg = GPTConfig(n_layer=meta["n_layer"], n_head=meta["n_head"], d_model=meta["d_model"], n_ctx=meta["n_ctx"],
                    vocab_size=meta["vocab_size"])
    return [int(t) for t in greedy(m, ids, n, cfg)[len(ids):]]


def _wait_status(page, w, word):
    page.wait_for_function("([i, s]) => (document.querySelector(`[data-test-index='${i}'] .cw-status`) || {})"
                           ".textContent?.includes(s)", arg=[w.get_attribute("data-test-index"), word], timeout=90000)


def check_generation(page, w, state):
    kind, m, enc = _page_model(state)
    _set(w.locator('[data-control="temperature"]'), 0)
    _set(w.locator('[data-control="max_new_tokens"]'), 32)
    for prompt in PROMPTS:
        _set(w.locator('[data-control="prompt"]'), prompt)
        _wait_status(page, w, "generated")
        ids = enc.encode(prompt, allowed_special="all")
        got = [int(t) for t in w.locator(".cw-body").get_attribute("data-tokens").split(",")]
        assert got == _greedy(kind, m, ids, 32), prompt
        assert w.locator(".cw-new").inner_text() == enc.decode(got)
    # sampling: the engine's rules on the page's own seeded draws: repeatable for a seed, new for another
    _set(w.locator('[data-control="temperature"]'), 1.2)
    _wait_status(page, w, "generated")
    first = w.locator(".cw-body").get_attribute("data-tokens")
    _set(w.locator('[data-control="seed"]'), 7)
    _wait_status(page, w, "generated")
    seven = w.locator(".cw-body").get_attribute("data-tokens")
    _set(w.locator('[data-control="seed"]'), 0)
    _wait_status(page, w, "generated")
    assert w.locator(".cw-body").get_attribute("data-tokens") == first != seven
    _set(w.locator('[data-control="max_new_tokens"]'), 5)
    _wait_status(page, w, "5 tokens generated")
    return {"prompt", "temperature", "max_new_tokens", "seed"}


def check_xray(page, w, state):
    from engine.widgets import logit_lens_table, xray

    kind, m, enc = _page_model(state)
    assert kind == "engine"
    for prompt in PROMPTS:
        _set(w.locator('[data-control="prompt"]'), prompt)
        _wait_status(page, w, "computed")
        ids = enc.encode(prompt)
        xr = xray(m, ids)
        ref = logit_lens_table(m, enc, ids, -1, state["k"], xr=xr)
        got = w.locator("tr[data-stage]").evaluate_all("rs => rs.map(r => r.dataset.top.split('\u241f'))")
        assert [row[0] for row in got] == [row[0][0] for row in ref], prompt  # the top guess at every stage
        for layer in (0, m.cfg.n_layer - 1):
            for head in (0, m.cfg.n_head - 1):
                _set(w.locator('[data-control="layer"]'), layer)
                _set(w.locator('[data-control="head"]'), head)
                row = [float(x) for x in w.locator("canvas.cw-attn").get_attribute("data-last-row").split(",")]
                np.testing.assert_allclose(row, np.asarray(xr.attention[layer])[head, -1], atol=2e-3)
    return {"prompt", "layer", "head"}


def check_animation(page, w, state):
    # the player's controls (tests/test_book_animations.py checks every frame's content against the engine)
    n = len(state["frames"])
    w.scroll_into_view_if_needed()  # it starts playing once seen: wait for that, then pause it
    page.wait_for_function("(i) => document.querySelector(`[data-test-index='${i}']`).dataset.playing === 'true'",
                           arg=w.get_attribute("data-test-index"), timeout=10000)
    w.locator('button[data-action="play"]').click()
    assert w.get_attribute("data-playing") == "false"
    for k in (n - 1, 0, n // 2):
        _set(w.locator('[data-control="index"]'), k)
        assert int(w.get_attribute("data-frame")) == k
        assert w.locator('[data-key="caption"]').get_attribute("data-value") == state["frames"][k]["caption"]
    return {"index"}


CHECKS = {"cw-animation": check_animation, "cw-sliding-window": check_sliding_window, "cw-tokenizer": check_tokenizer,
          "cw-parameters": check_parameters, "cw-attention": check_attention, "cw-sampling": check_sampling,
          "cw-generation": check_generation, "cw-xray": check_xray}


def drive_every_widget(browser, url, html_path):  # noqa: F811
    page, problems = _open(browser, url)
    try:
        states = widget_states(html_path)
        n_views = html_path.read_text().count('<script type="application/vnd.jupyter.widget-view+json">')
        page.wait_for_function(f"() => document.querySelectorAll('.course-widget').length >= {n_views}", timeout=30000)
        found = found_widgets(page)
        assert len(found) == n_views
        for i, (kind, model_id) in enumerate(found):
            w = page.locator(f"[data-test-index='{i}']")
            assert kind in CHECKS, f"no check for widget {kind}"
            controls = set(w.locator("[data-control]").evaluate_all("es => es.map(e => e.dataset.control)"))
            driven = CHECKS[kind](page, w, states[model_id]["state"])
            assert controls == driven, f"{kind}: controls {controls - driven} not checked"
            assert not w.locator(".cw-error").count(), w.locator(".cw-error").all_inner_texts()
        page.wait_for_timeout(200)
        assert not problems, problems
        return found
    finally:
        page.close()


@pytest.mark.parametrize("name", CHAPTERS)
def test_every_control_of_every_widget(site, browser, name):  # noqa: F811
    found = drive_every_widget(browser, f"{site}/book/{name}.html", SITE / "book" / f"{name}.html")
    assert found, f"{name} has no widget"
