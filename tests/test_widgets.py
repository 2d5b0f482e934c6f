"""The book's widgets without a kernel: set a control's value, check what the widget shows.

The pure functions are checked against independent computations (brute-force loops,
the GPT-3 paper's published counts, direct probabilities).
"""
import re

import numpy as np
import pytest

pytest.importorskip("ipywidgets")

from engine import GPT, GPTConfig, get_encoding  # noqa: E402
from engine.config import PAPER_PARAMS  # noqa: E402
from engine import widgets as wg  # noqa: E402


@pytest.fixture(scope="module")
def enc():
    return get_encoding("r50k_base")


@pytest.fixture(scope="module")
def model():
    # tiny, but with GPT-3's vocabulary so that the r50k tokenizer's ids fit
    cfg = GPTConfig.preset("course-tiny", vocab_size=50257, n_ctx=64)
    return GPT(cfg, seed=1)


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


def test_sliding_window_widget_follows_slider():
    w = wg.SlidingWindowExplorer("Second Law of Robotics: A robot must obey the orders", context=3)
    w.position.value = 4
    assert "target <code>A</code>" in w.output.value
    assert "of&middot;Robotics:" in w.output.value.replace(" ", "&middot;")  # the 3 words before
    w.context.value = 1
    assert "input <code>Robotics:</code>" in w.output.value


def test_tokenize_report(enc):
    text = "Second Law of Robotics: A robot must obey"
    r = wg.tokenize_report(text, enc)
    assert r["ids"] == enc.encode(text)
    assert "".join(r["pieces"]) == text
    assert r["n_tokens"] == len(r["ids"]) and r["n_words"] == 8 and r["n_chars"] == len(text)
    assert r["html"].count("<span") == r["n_tokens"]


def test_tokenizer_widget_updates(enc):
    w = wg.TokenizerPlayground(enc, text="hello")
    assert f"{enc.encode('hello')}" in w.output.value
    w.text.value = "Hello world, hello!"
    ids = enc.encode("Hello world, hello!")
    assert f"{len(ids)} tokens" in w.output.value and str(ids) in w.output.value


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


def test_parameter_calculator_slider_changes_output():
    w = wg.ParameterCalculator()
    assert "174,604,259,328" in w.output.value
    w.n_layer.value = 48
    n = GPTConfig(n_layer=48, n_head=96, d_model=12288, n_ctx=2048).n_params()
    assert f"{n:,}" in w.output.value


def test_attention_summary_counts():
    T, win = 20, 5
    s = wg.attention_summary("banded", T, window=win)
    brute = sum(1 for i in range(T) for j in range(T) if j <= i and i - j < win)
    assert s["kept"] == brute and s["dense"] == T * (T + 1) // 2 and s["per_query_max"] == win
    assert wg.attention_summary("dense", T)["fraction"] == 1.0
    with pytest.raises(ValueError):
        wg.attention_summary("diagonal", T)


def test_attention_widget_follows_controls():
    w = wg.AttentionExplorer(kind="dense", T=16)
    assert "136 of 136" in w.output.value and "<img" in w.output.value
    w.kind.value = "banded"
    w.window.value = 4
    kept = int(wg.attention_summary("banded", 16, window=4)["kept"])
    assert f"{kept} of 136" in w.output.value


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
    raw = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose([r[1] for r in rows], raw[top], rtol=1e-9)


def test_sampling_widget(model, enc):
    w = wg.SamplingExplorer(model, enc, prompt="ROMEO:")
    assert f"{enc.n_vocab:,} of {enc.n_vocab:,} tokens can be drawn" in w.output.value
    w.top_k.value = 3
    assert f"3 of {enc.n_vocab:,} tokens" in w.output.value
    w.top_k.value = 0
    w.temperature.value = 0.0  # greedy: a single token left
    assert f"1 of {enc.n_vocab:,} tokens" in w.output.value


def test_generation_matches_engine(model, enc):
    p, new = wg.generate_text(model, enc, "ROMEO:", max_new_tokens=5, temperature=0.0)
    ids = enc.encode("ROMEO:")
    ref = model.generate(np.asarray(ids), 5, temperature=0.0)
    assert p == "ROMEO:" and new == enc.decode([int(t) for t in ref[len(ids):]])
    w = wg.GenerationPlayground(model, enc, prompt="ROMEO:", max_new_tokens=5, temperature=0.0)
    assert new.replace("<", "&lt;")[:3] in w.output.value.replace("&#x27;", "'")
    w.prompt.value = ""
    assert "prompt is empty" in w.output.value  # a clear message instead of a traceback


def test_logit_lens_last_row_is_the_prediction(model, enc):
    ids = enc.encode("What light through yonder window")
    rows = wg.logit_lens_table(model, enc, ids, k=2)
    assert len(rows) == model.cfg.n_layer + 1
    logits = np.asarray(model.forward(np.asarray(ids)))[-1]
    best = int(np.argmax(logits))
    assert rows[-1][0][0] == enc.decode_single_token_bytes(best).decode("utf-8", errors="replace")
    assert rows[-1][0][1] >= rows[-1][1][1]


def test_xray_widget_sliders(model, enc):
    w = wg.XRayViewer(model, enc, prompt="What light")
    before = w.output.value
    assert before.count("<tr>") == model.cfg.n_layer + 2  # header + embedding + each layer
    w.layer.value = 1
    assert "layer 1 (banded)" not in before and re.search(r"<img", w.output.value)
    assert w.output.value != before
