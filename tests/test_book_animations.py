"""The chapters' animations in the built site, in Chromium: they play, pause, step and scrub, and
frame k shows what the engine computes for step k (recomputed here with the engine directly).

Needs the built site, as ``tests/test_book.py`` does (``make book``, or ``COURSE_SITE=path/to/html``).
Each animation exposes what it shows: ``data-frame`` on its root, ``data-value`` on each primitive.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from test_book import _nb, _open, browser, site  # noqa: F401  (pytest fixtures)

ANIMATED = ["01_introduction", "02_training", "03_tokens", "04_parameters", "05_layers", "06_sparse_attention",
            "07_generation", "08_finetuning"]


def _saved_animations(name):
    """{animation name: its number of frames}, from the widget state saved in the chapter."""
    state = _nb(name)["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    return {m["state"]["name"]: len(m["state"]["frames"]) for m in state.values()
            if m.get("model_name") == "AnyModel" and "frames" in m.get("state", {})}


# ---------------------------------------------------------------------- the engine's answers, per chapter
@pytest.fixture(scope="module")
def course():
    from engine import load_pretrained

    return load_pretrained()


def _pieces(enc, ids):
    return [enc.decode_single_token_bytes(int(i)).decode("utf-8", errors="replace") for i in ids]


def expect_generation(course):
    model, enc = course
    ids = enc.encode("ROMEO:\n")
    out = model.generate(np.array(ids), 24, temperature=0.7, top_k=40, seed=1).tolist()
    return {k: {"text": _pieces(enc, out[:len(ids) + k]), "length": str(len(ids) + k)} for k in (0, 1, 7, 24)}


def expect_window(course):
    from engine.widgets import sliding_window_examples

    words = "Second Law of Robotics: A robot must obey the orders given it by human beings".split()
    ex = sliding_window_examples(words, 4)
    return {k: {"example": f"{' '.join(ex[k][0])}  \u2192  {ex[k][1]}", "window": words} for k in (0, 3, 13)}


def expect_training(course):
    return {k: {"step": str(10 * k), "loss": {"training loss": 10 * k}} for k in (0, 1, 15)}


def expect_bpe(course):
    from engine.bpe import bpe_merges, encoding_from_merges

    text = ("the robot must obey the orders the robot is given by the human beings; "
            "the robot must protect the humans and the robot must protect itself")
    sample = " the robot must obey the orders"
    merges = bpe_merges(text, 12)
    out = {}
    for k in (0, 1, 8, 12):
        enc = encoding_from_merges(merges[:k])
        ids = enc.encode(sample)
        out[k] = {"pieces": _pieces(enc, ids), "n_tokens": str(len(ids))}
    return out


def expect_parameters(course):
    from engine import GPTConfig

    cfg = GPTConfig.preset("gpt3-175b")
    sizes = {n: int(np.prod(s)) for n, s in cfg.param_shapes().items()}
    emb = sizes["wte"] + sizes["wpe"]
    layer = sum(v for n, v in sizes.items() if n.startswith("h.0."))
    return {0: {"params": str(emb)}, 6: {"params": str(emb + layer)},
            50: {"params": str(emb + 45 * layer)}, 102: {"params": str(cfg.n_params())}}


def expect_logit_lens(course):
    from engine.widgets import logit_lens_table

    model, enc = course
    ids = enc.encode("ROMEO: But soft, what light through yonder window breaks?")[-model.cfg.n_ctx:]
    rows = logit_lens_table(model, enc, ids, k=5)
    return {s: {"guesses_labels": [t for t, _ in rows[s]]} for s in (0, 1, len(rows) - 1)}


def expect_attention(course):
    from engine import attention_mask

    out = {}
    for T in (1, 8, 9, 32):
        m = attention_mask("banded", T, window=8)
        rows = ["".join(("#" if m[i, j] else ".") if i < T and j <= i else " " for j in range(32)) for i in range(32)]
        out[T - 1] = {"dense_cost": str(T * (T + 1) // 2), "banded_cost": str(int(m.sum())), "banded": "/".join(rows)}
    return out


def expect_kv_cache(course):
    model, enc = course
    ids = enc.encode("KING HENRY:\nOnce more unto the")
    out = model.generate(np.array(ids), 24, temperature=0, use_cache=False).tolist()
    c = model.cfg
    return {s - 1: {"text": _pieces(enc, out[:len(ids) + s]),
                    "cache_bytes": str(2 * c.n_layer * (len(ids) + s - 1) * c.d_model * 4)} for s in (1, 2, 24)}


def expect_finetune(course):
    from engine.finetune import answer_tokens_unseen, complete, finetune, train_test_split, training_words
    from engine.lora import init_adapter

    base, enc = course
    train, test = train_test_split(seed=0, more_words=training_words(enc))
    ex = test[12]
    tuned = base.to("numpy")
    first = complete(tuned, enc, ex.prompt(), 24)
    adapter = init_adapter(tuned, rank=8, alpha=16.0, targets=("attn.c_attn.w", "attn.c_proj.w", "mlp.c_fc.w",
                                                              "mlp.c_proj.w"),
                           rows=answer_tokens_unseen(base, enc, train), seed=0)
    finetune(tuned, enc, train, steps=200, lr=5e-3, batch_size=16, warmup=10, seed=0, adapter=adapter)  # as chapter 8
    last = complete(tuned, enc, ex.prompt(), 24)
    return {0: {"answer": [first.strip() or "(nothing)"], "step": "0"},
            25: {"answer": [last.strip() or "(nothing)"], "step": "200"}}


EXPECT = {"generation": expect_generation, "window": expect_window, "training": expect_training, "bpe": expect_bpe,
          "parameters": expect_parameters, "logit-lens": expect_logit_lens, "attention-cost": expect_attention,
          "kv-cache": expect_kv_cache, "finetune": expect_finetune}


# ---------------------------------------------------------------------- driving the player
def _root(page, anim):
    return page.locator(f'.cw-animation[data-animation="{anim}"]')


def _frame(root) -> int:
    return int(root.get_attribute("data-frame"))


def _scrub(root, k):
    root.locator('input[data-control="index"]').evaluate(
        "(el, k) => { el.value = k; el.dispatchEvent(new Event('input', {bubbles: true})); }", k)


def _shown(root, key):
    if key.endswith("_labels"):  # the labels of a bars primitive
        return [b[0] for b in json.loads(root.locator(f'[data-key="{key[:-7]}"]').get_attribute("data-value"))]
    value = root.locator(f'[data-key="{key}"]').get_attribute("data-value")
    return json.loads(value) if value[:1] in "[{" else value  # tokens, bars, series: JSON


@pytest.mark.browser
@pytest.mark.parametrize("name", ANIMATED)
def test_animations_play_pause_step_and_show_the_engines_frames(site, browser, course, name):  # noqa: F811
    saved = _saved_animations(name)
    assert saved, f"{name} has no animation"
    page, problems = _open(browser, f"{site}/book/{name}.html")
    try:
        page.wait_for_function(f"() => document.querySelectorAll('.cw-animation[data-frames]').length >= {len(saved)}",
                               timeout=30000)
        for anim, n in saved.items():
            root = _root(page, anim)
            assert int(root.get_attribute("data-frames")) == n
            assert root.get_attribute("data-reduced-motion") == "false"
            root.scroll_into_view_if_needed()
            # it plays by itself once seen; pause stops it
            page.wait_for_function("(a) => document.querySelector(`.cw-animation[data-animation=\"${a}\"]`)"
                                   ".dataset.playing === 'true'", arg=anim, timeout=10000)
            play = root.locator('button[data-action="play"]')
            play.click()
            assert root.get_attribute("data-playing") == "false"
            paused_at = _frame(root)
            page.wait_for_timeout(1500)  # more than one frame at every animation's fps
            assert _frame(root) == paused_at and root.get_attribute("data-playing") == "false"
            # step and scrub
            _scrub(root, 0)
            assert _frame(root) == 0
            root.locator('button[data-action="next"]').click()
            assert _frame(root) == 1
            root.locator('button[data-action="prev"]').click()
            assert _frame(root) == 0
            root.locator('button[data-action="prev"]').click()
            assert _frame(root) == 0  # no frame before the first
            # frame k shows the engine's data for step k
            for k, values in EXPECT[anim](course).items():
                _scrub(root, k)
                assert _frame(root) == k
                assert "[object" not in root.inner_text()
                for row in root.locator('[data-kind="tokens"]').all():  # one drawn token per piece
                    assert row.locator(".cw-tok").count() == len(json.loads(row.get_attribute("data-value")))
                assert root.locator(".cw-where").inner_text() == f"frame {k + 1} of {n}"
                for key, want in values.items():
                    assert _shown(root, key) == want, (anim, k, key)
            # play again: it moves on from where it is
            _scrub(root, 0)
            play.click()
            page.wait_for_function("(a) => +document.querySelector(`.cw-animation[data-animation=\"${a}\"]`)"
                                   ".dataset.frame > 0", arg=anim, timeout=10000)
            play.click()
            assert root.get_attribute("data-playing") == "false"
        assert not problems, problems
    finally:
        page.close()


@pytest.mark.browser
@pytest.mark.parametrize("name", ANIMATED)
def test_no_autoplay_with_reduced_motion(site, browser, name):  # noqa: F811
    saved = _saved_animations(name)
    page, problems = _open(browser, f"{site}/book/{name}.html", reduced_motion="reduce")
    try:
        page.wait_for_function(f"() => document.querySelectorAll('.cw-animation[data-frames]').length >= {len(saved)}",
                               timeout=30000)
        for anim in saved:
            root = _root(page, anim)
            root.scroll_into_view_if_needed()
            assert root.get_attribute("data-reduced-motion") == "true"
        page.wait_for_timeout(1500)
        for anim in saved:
            root = _root(page, anim)
            assert root.get_attribute("data-playing") == "false" and _frame(root) == 0, anim
        # the reader can still play it
        root = _root(page, next(iter(saved)))
        root.locator('button[data-action="play"]').click()
        page.wait_for_function("(a) => +document.querySelector(`.cw-animation[data-animation=\"${a}\"]`)"
                               ".dataset.frame > 0", arg=next(iter(saved)), timeout=10000)
        assert not problems, problems
    finally:
        page.close()
