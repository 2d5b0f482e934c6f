"""The book's widgets: their pure functions, their Python side in a kernel, and their front end.

The pure functions are checked against independent computations (brute-force loops, the GPT-3
paper's published counts, direct probabilities). The front-end functions that compute (sliding
window, tokenizer, parameter counts, masks, sampling rules) run in Node.js on the very module the page
loads and are compared with the engine on presets and random inputs (tests/js_harness.py). The pages
themselves are driven in Chromium by tests/test_book.py.
"""
import json
import os

import numpy as np
import pytest

pytest.importorskip("anywidget")

from engine import GPT, GPTConfig, get_encoding  # noqa: E402
from engine.attention import attention_mask  # noqa: E402
from engine.config import PAPER_PARAMS, PRESETS  # noqa: E402
from engine.generate import next_token_probs  # noqa: E402
from engine.loading import asset_dir  # noqa: E402
from engine.tokenizer import load_encoding  # noqa: E402
from engine import widgets as wg  # noqa: E402
from engine.widgets import site  # noqa: E402
from js_harness import call_js  # noqa: E402

SEED = "Second Law of Robotics: A robot must obey the orders given it by human beings"


@pytest.fixture(scope="module")
def enc():
    return get_encoding("r50k_base")


@pytest.fixture(scope="module")
def model():
    # tiny, but with GPT-3's vocabulary so that the r50k tokenizer's ids fit
    cfg = GPTConfig.preset("course-tiny", vocab_size=50257, n_ctx=64)
    return GPT(cfg, seed=1)


def _random_texts(n, seed=0):
    """Texts a reader might type and some they might not: letters, digits, accents, CJK, emoji,
    combining marks, runs of spaces and newlines, the special token."""
    rng = np.random.default_rng(seed)
    alphabet = list("abcXYZ019 .,;:!?'\"-\n\t  ") + ["é", "ñ", "ß", "ж", "中", "文", "😀", "👍🏽", "\u0301", "\u00a0",
                                                "<|endoftext|>", "  ", "\n\n", "'s", "'ll", "İ", "ﬁ", "\u200b"]
    return ["".join(rng.choice(alphabet, size=rng.integers(0, 40))) for _ in range(n)]


# ---------------------------------------------------------------------- chapter 2: sliding window
def test_sliding_window_matches_brute_force():
    words = "Second Law of Robotics: A robot must obey".split()
    for ctx in (1, 3, 100):
        ex = wg.sliding_window_examples(words, ctx)
        assert len(ex) == len(words) - 1
        for t, (c, y) in enumerate(ex, start=1):
            assert y == words[t]
            assert c == words[max(0, t - ctx):t] and len(c) == min(ctx, t)
    with pytest.raises(ValueError):
        wg.sliding_window_examples(words, 0)


def test_sliding_window_page_matches_engine():
    words = SEED.split()
    ctxs = list(range(1, len(words) + 2))
    got = call_js(["sliding_window"], [("slidingWindowExamples", [words, c]) for c in ctxs])
    for c, g in zip(ctxs, got):
        assert [tuple(e) for e in g] == [(list(a), b) for a, b in wg.sliding_window_examples(words, c)]


def test_sliding_window_widget_state():
    w = wg.SlidingWindowExplorer(SEED, context=3)
    assert w.tokens == SEED.split() and w.context == 3 and w.position == 1
    w.context = 1
    assert w.examples()[3] == (["Robotics:"], "A")
    with pytest.raises(ValueError, match="two tokens"):
        wg.SlidingWindowExplorer("one")


# ---------------------------------------------------------------------- chapter 3: tokens
def test_tokenize_report(enc):
    text = "Second Law of Robotics: A robot must obey"
    r = wg.tokenize_report(text, enc)
    assert r["ids"] == enc.encode(text)
    assert "".join(r["pieces"]) == text
    assert r["n_tokens"] == len(r["ids"]) and r["n_words"] == 8 and r["n_chars"] == len(text)


def test_tokenizer_widget_follows_text_and_vocabulary(enc):
    w = wg.TokenizerPlayground(enc, text="hello")
    assert w.ids == enc.encode("hello") and w.encoding == "r50k_base"
    w.text = "Hello world, hello!"  # what the page sends in a live kernel
    assert w.ids == enc.encode("Hello world, hello!")
    course = [k for k in w.specs if k != "r50k_base"]
    assert len(course) == 1 and w.specs[course[0]]["label"] == "course model"
    w.encoding = course[0]
    assert w.ids == load_encoding(asset_dir()).encode("Hello world, hello!")
    w.encoding = "nope"
    assert "unknown encoding" in w.error


@pytest.mark.parametrize("which", ["r50k_base", "course"])
def test_page_tokenizer_gives_tiktokens_ids(which):
    enc = get_encoding("r50k_base") if which == "r50k_base" else load_encoding(asset_dir())
    texts = [SEED, "", " ", "ROMEO:\nWhat light through yonder window breaks?", *_random_texts(150)]
    got = call_js(["tiktoken", "tokenizer"], [("tokenizeWith", ["$enc", t]) for t in texts] +
                  [("countWords", [t]) for t in texts], tiktoken=(enc, site.ranks_text(enc)))
    for t, g in zip(texts, got[:len(texts)]):
        r = wg.tokenize_report(t, enc)
        assert g["ids"] == r["ids"], t
        assert g["pieces"] == r["pieces"], t
    for t, n in zip(texts, got[len(texts):]):
        assert n == len(t.split()), t


# ---------------------------------------------------------------------- chapter 4: parameters
@pytest.mark.parametrize("name", list(PAPER_PARAMS))
def test_parameter_report_reproduces_paper(name):
    cfg = GPTConfig.preset(name)
    r = wg.parameter_report(cfg.n_layer, cfg.d_model, cfg.n_ctx)
    # Table D.1 of the GPT-3 paper, within 1% (its counts are rounded)
    assert abs(r["n_params"] / PAPER_PARAMS[name] - 1) < 0.01
    # independent count: the shapes the engine would allocate
    assert r["n_params"] == sum(int(np.prod(s)) for s in cfg.param_shapes().values())


def test_parameter_report_gpt3_cost():
    r = wg.parameter_report(96, 12288, 2048)
    assert abs(r["train_flops"] / 3.14e23 - 1) < 0.01  # Table D.1
    assert 350 < r["gpu_years"] < 360  # 3.14e23 / 28e12 s, the public V100 estimate (~355)
    assert r["weights_fp16"] == 2 * r["n_params"]


def _shapes():
    rng = np.random.default_rng(3)
    shapes = [dict(v) for v in wg.parameters.presets().values()]
    for _ in range(60):
        n_ctx = int(rng.choice([128, 256, 1000, 2048, 8192]))
        shapes.append(dict(n_layer=int(rng.integers(1, 129)), d_model=64 * int(rng.integers(1, 257)), n_head=1,
                           n_ctx=n_ctx, vocab_size=int(rng.integers(256, 262145)),
                           attention=str(rng.choice(["dense", "banded", "alternating"])),
                           window=int(rng.integers(1, n_ctx + 1))))
    return shapes


def test_page_parameter_counts_equal_engine_config():
    shapes = _shapes()
    tokens = [300e9, 1e9, 2e12]
    got = call_js(["parameters"], [("parameterReport", [s, tokens[i % 3]]) for i, s in enumerate(shapes)])
    assert len(shapes) > len(PRESETS)
    for i, (s, g) in enumerate(zip(shapes, got)):
        cfg = GPTConfig(n_layer=s["n_layer"], n_head=s["n_head"], d_model=s["d_model"], n_ctx=s["n_ctx"],
                        vocab_size=s["vocab_size"], attention=s["attention"], window=s["window"])
        mem = cfg.memory_bytes("float16")
        assert g["n_params"] == cfg.n_params() and g["per_layer"] == cfg.params_per_layer()
        assert g["training_bytes"] == mem["training_total"] and g["kv_cache_fp16"] == mem["kv_cache"]
        assert g["weights_fp32"] == cfg.memory_bytes("float32")["weights"]
        assert g["forward_per_token"] == pytest.approx(cfg.flops_per_token()["forward"], rel=1e-12)
        r = wg.parameter_report(s["n_layer"], s["d_model"], s["n_ctx"], s["vocab_size"], s["n_head"],
                                tokens=tokens[i % 3], attention=s["attention"], window=s["window"])
        assert g["train_flops"] == pytest.approx(r["train_flops"], rel=1e-12)
        assert g["gpu_years"] == pytest.approx(r["gpu_years"], rel=1e-12)


def test_page_human_units_match_engine():
    from engine.units import human

    values = [0, 999, 1000, 125_226_240, 174_604_259_328, 3.5e12, 2.8e15]
    got = call_js(["parameters"], [("humanWords", [v]) for v in values] + [("humanWords", [v, "B"]) for v in values])
    assert got == [human(v, words=True) for v in values] + [human(v, "B", words=True) for v in values]


def test_parameter_calculator_state():
    w = wg.ParameterCalculator()
    assert w.preset == "gpt3-175b" and w.report()["n_params"] == PRESETS["gpt3-175b"].n_params()
    w.n_layer = 48
    assert w.report()["n_params"] == GPTConfig(n_layer=48, n_head=96, d_model=12288, n_ctx=2048).n_params()
    assert wg.ParameterCalculator(preset="gpt3-small").n_layer == 12
    with pytest.raises(ValueError, match="unknown preset"):
        wg.ParameterCalculator(preset="gpt5")


# ---------------------------------------------------------------------- chapter 6: attention
def test_attention_summary_counts():
    T, win = 20, 5
    s = wg.attention_summary("banded", T, window=win)
    brute = sum(1 for i in range(T) for j in range(T) if j <= i and i - j < win)
    assert s["kept"] == brute and s["dense"] == T * (T + 1) // 2 and s["per_query_max"] == win
    assert wg.attention_summary("dense", T)["fraction"] == 1.0
    with pytest.raises(ValueError):
        wg.attention_summary("diagonal", T)
    with pytest.raises(ValueError):
        wg.AttentionExplorer(kind="diagonal")


def test_page_masks_equal_attention_mask():
    rng = np.random.default_rng(5)
    cases = [("dense", 4, 1, 1, 1), ("fixed", 32, 8, 4, 9)]
    for _ in range(60):
        cases.append((str(rng.choice(["dense", "banded", "strided", "fixed"])), int(rng.integers(4, 129)),
                      int(rng.integers(1, 65)), int(rng.integers(1, 33)), int(rng.integers(1, 33))))
    got = call_js(["attention_explorer"], [("attentionSummary", list(c)) for c in cases])
    for (kind, T, w, s, c), g in zip(cases, got):
        ref = wg.attention_summary(kind, T, w, s, c)
        m = np.array([[g["mask"][i][str(j)] if isinstance(g["mask"][i], dict) else g["mask"][i][j]
                       for j in range(T)] for i in range(T)], dtype=bool)
        np.testing.assert_array_equal(m, attention_mask(kind, T, window=w, stride=s, c=min(c, s)))
        assert (g["kept"], g["dense"], g["per_query_max"]) == (ref["kept"], ref["dense"], ref["per_query_max"])


# ---------------------------------------------------------------------- chapter 7: sampling
def test_sampling_table_temperature_and_top_k(enc):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=enc.n_vocab) * 3
    rows, kept = wg.sampling_table(logits, enc, temperature=0.5, top_k=5, n=8)
    assert kept == 5
    top = np.argsort(-logits)[:8]
    z = logits[top[:5]] / 0.5
    ref = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    np.testing.assert_allclose([r[2] for r in rows[:5]], ref, rtol=1e-9)
    assert all(r[2] == 0 for r in rows[5:])


def test_page_sampling_rules_equal_next_token_probs():
    rng = np.random.default_rng(7)
    cases = []
    for i in range(80):
        V = int(rng.choice([5, 50, 4096]))
        logits = (rng.normal(size=V) * rng.choice([0.5, 3, 10])).astype(np.float32)
        if i % 4 == 0:  # ties, at the top-k threshold and elsewhere
            logits = np.round(logits).astype(np.float32)
        t = float(rng.choice([0.0, 0.1, 0.7, 1.0, 1.7, 2.0]))
        k = [None, 1, 3, 50][i % 4]
        p = [None, 0.05, 0.5, 0.9, 1.0][i % 5]
        cases.append((logits, t, k, p))
    got = call_js(["probs", "sampling"], [("nextTokenProbs", [lg.tolist(), t, k, p]) for lg, t, k, p in cases])
    for (lg, t, k, p), g in zip(cases, got):
        np.testing.assert_allclose(g, next_token_probs(lg, t, k, p), atol=1e-6, rtol=0)
        assert (np.asarray(g) > 0).sum() == (next_token_probs(lg, t, k, p) > 0).sum()


def test_page_draw_is_the_engines_inverse_cdf():
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(20))
    p[[3, 7]] = 0
    us = [0.0, 1e-9, 0.5, 0.999999, *rng.random(30).tolist()]
    got = call_js(["probs", "tiktoken", "model", "generation"], [("drawFrom", [p.tolist(), u]) for u in us])
    cum = np.cumsum(p)
    assert got == [min(int((cum <= u * cum[-1]).sum()), len(p) - 1) for u in us]
    assert not {3, 7} & set(got)


def test_sampling_widget_state(model, enc):
    w = wg.SamplingExplorer(model, enc, prompt="ROMEO:")
    assert len(w.top_ids) == 10 and w.top_pieces[0] == enc.decode([w.top_ids[0]])
    saved = np.frombuffer(__import__("base64").b64decode(w.logits_b64), dtype=np.float32)
    np.testing.assert_array_equal(saved, w.logits)
    w.top_k, w.temperature = 3, 0.5
    assert (w.probs() > 0).sum() == 3


# ---------------------------------------------------------------------- chapters 1, 5, 7: the model
def test_generation_matches_engine(model, enc):
    p, new = wg.generate_text(model, enc, "ROMEO:", max_new_tokens=5, temperature=0.0)
    ids = enc.encode("ROMEO:")
    ref = model.generate(np.asarray(ids), 5, temperature=0.0)
    assert p == "ROMEO:" and new == enc.decode([int(t) for t in ref[len(ids):]])
    w = wg.GenerationPlayground(model, enc, prompt="ROMEO:", max_new_tokens=5, temperature=0.0)
    assert w.continuation == new and w.shown_prompt == "ROMEO:" and w.model_name == ""  # no book build
    w.prompt = "JULIET:"  # what the page sends in a live kernel
    assert w.continuation == wg.generate_text(model, enc, "JULIET:", 5, 0.0)[1]
    w.prompt = ""
    assert "prompt is empty" in w.error  # a clear message instead of a traceback


def test_logit_lens_last_row_is_the_prediction(model, enc):
    ids = enc.encode("What light through yonder window")
    rows = wg.logit_lens_table(model, enc, ids, k=2)
    assert len(rows) == model.cfg.n_layer + 1
    logits = np.asarray(model.forward(np.asarray(ids)))[-1]
    best = int(np.argmax(logits))
    assert rows[-1][0][0] == enc.decode_single_token_bytes(best).decode("utf-8", errors="replace")
    assert rows[-1][0][1] >= rows[-1][1][1]


def test_xray_widget_state(model, enc):
    w = wg.XRayViewer(model, enc, prompt="What light")
    T = len(enc.encode("What light"))
    assert len(w.lens) == model.cfg.n_layer + 1 and len(w.pieces) == T
    att = np.frombuffer(__import__("base64").b64decode(w.attn_b64), dtype=np.float32)
    assert att.size == model.cfg.n_layer * model.cfg.n_head * T * T
    xr = wg.xray(model, enc.encode("What light"))
    np.testing.assert_allclose(att.reshape(model.cfg.n_layer, model.cfg.n_head, T, T)[1], xr.attention[1], atol=1e-7)
    w.prompt = "ROMEO: What light"
    assert len(w.pieces) == len(enc.encode("ROMEO: What light"))


def test_widgets_repr_is_stable(model, enc):
    # nbval compares the text/plain of every output: no addresses, no state
    assert repr(wg.AttentionExplorer()) == repr(wg.AttentionExplorer(T=8)) == (
        "AttentionExplorer: an interactive widget (run this cell, or read the online book, to use it)")


# ---------------------------------------------------------------------- what the static book serves
def test_publish_writes_nothing_outside_a_book_build(monkeypatch, model, enc):
    monkeypatch.delenv(site.ENV, raising=False)
    assert site.publish_encoding(enc, "r50k_base") is None and site.publish_model(model, enc, "r50k_base") is None


def test_publish_encoding_round_trips(monkeypatch, tmp_path):
    monkeypatch.setenv(site.ENV, str(tmp_path))
    enc = load_encoding(asset_dir())
    name = wg.tokenizer.site_encoding_name(enc)
    assert name.startswith("bpe-") and name == wg.tokenizer.site_encoding_name(load_encoding(asset_dir()))
    assert site.publish_encoding(enc, name) == name
    back = load_encoding(tmp_path / "tokenizers" / f"{name}.tiktoken")
    assert back._mergeable_ranks == enc._mergeable_ranks


def test_publish_model_names_by_weights(monkeypatch, tmp_path, enc):
    pytest.importorskip("onnx")
    monkeypatch.setenv(site.ENV, str(tmp_path))
    cfg = GPTConfig.preset("course-tiny", vocab_size=50257, n_ctx=32)
    a, b = GPT(cfg, seed=1), GPT(cfg, seed=2)
    na = site.publish_model(a, enc, "r50k_base")
    assert na == site.model_name(GPT(cfg, seed=1)) != site.model_name(b)
    meta = json.loads((tmp_path / "models" / na / "model.json").read_text())
    assert meta["xray"] and meta["tokenizer"] == "r50k_base" and meta["n_layer"] == cfg.n_layer
    assert (tmp_path / "models" / na / meta["file"]).stat().st_size > 0
    assert os.environ[site.ENV] == str(tmp_path)
