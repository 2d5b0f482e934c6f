"""The training loop: it learns, it can memorise, it stops on NaN with a useful message."""
import math

import numpy as np
import pytest

from engine import GPT, GPTConfig
from engine.bpe import train_bpe
from engine.data import book_texts, encode_texts, join_texts, load_corpus
from engine.model import tree_flatten
from engine.optim import AdamW
from engine.train import (Trainer, TrainConfig, TrainingDiverged, eval_windows, evaluate, loss_by_position,
                          target_bytes, token_losses)


@pytest.fixture(scope="module")
def book():
    """The course's own pages (no network), tokenized by a 512-token BPE trained on them."""
    train, val = load_corpus("book")
    enc = train_bpe(join_texts(train).replace("<|endoftext|>", "\n"), 512)
    return enc, encode_texts(enc, train), encode_texts(enc, val)


def tiny_cfg(**kw):
    return GPTConfig.preset("course-tiny", **kw)


def test_loss_falls_on_real_text(book):
    enc, tr, va = book
    model = GPT(tiny_cfg(), seed=0)
    before = evaluate(model, va, enc, max_windows=64)
    assert before["loss"] == pytest.approx(math.log(512), abs=0.3)  # a random model is near uniform
    tc = TrainConfig(batch_size=8, max_steps=250, lr=3e-3, warmup=20, eval_interval=0, ckpt_interval=0)
    Trainer(model, tr, va, tc).run(progress=False)
    after = evaluate(model, va, enc, max_windows=64)
    assert after["loss"] < before["loss"] - 0.8, (before, after)
    assert 0 < after["bpb"] < before["bpb"]


def test_overfits_a_single_batch():
    cfg = tiny_cfg()
    model = GPT(cfg, seed=1)
    rng = np.random.default_rng(0)
    x = rng.integers(0, cfg.vocab_size, (4, cfg.n_ctx))
    y = np.roll(x, -1, axis=1)
    opt = AdamW(tree_flatten(model.params), lr=1e-2, weight_decay=0.0)
    losses = []
    for _ in range(300):
        loss, g = model.loss_and_grads(x, y)
        opt.step(tree_flatten(g))
        losses.append(loss)
    assert losses[0] > 5.5 and losses[-1] < 0.05, losses[::50]


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_workers_and_grad_accum_give_the_same_step(book, dropout):
    _, tr, va = book
    results = []
    for workers, accum, bs in [(1, 1, 8), (2, 1, 8), (3, 1, 8), (1, 2, 4)]:
        model = GPT(tiny_cfg(), seed=2, dtype="float64")  # float64: Adam's m/sqrt(v) amplifies rounding
        tc = TrainConfig(batch_size=bs, grad_accum=accum, workers=workers, max_steps=3, warmup=1, eval_interval=0,
                         ckpt_interval=0, dropout=dropout)
        t = Trainer(model, tr, None, tc)
        if accum == 2:  # same 8 sequences, drawn as two batches of 4
            t.batches.batch_size = 8
            x, y = t.batches.next()
            halves = iter([(x[:4], y[:4]), (x[4:], y[4:])])
            t.batches.next = lambda: next(halves)
            t.train_step()
        else:
            t.train_step()
        results.append((t.history["loss"][0], tree_flatten(model.params)))
    if dropout:  # the masks really were drawn: the loss differs from the same step without dropout
        model = GPT(tiny_cfg(), seed=2, dtype="float64")
        plain = Trainer(model, tr, None, TrainConfig(batch_size=8, max_steps=3, warmup=1, eval_interval=0,
                                                     ckpt_interval=0))
        plain.train_step()
        assert abs(plain.history["loss"][0] - results[0][0]) > 1e-5  # float64: rounding is ~1e-15
    ref_loss, ref = results[0]
    for loss, params in results[1:]:
        assert loss == pytest.approx(ref_loss, rel=1e-12)
        for k in ref:
            np.testing.assert_allclose(params[k], ref[k], rtol=1e-9, atol=1e-12)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow is the point
def test_nan_stops_with_location(book):
    _, tr, va = book
    model = GPT(tiny_cfg(), seed=0)
    rng = np.random.default_rng(0)
    for name in ("c_fc", "c_proj"):  # overflows float32 inside block 1
        w = model.params["h"][1]["mlp"][name]["w"]
        w[...] = rng.standard_normal(w.shape) * 1e20
    t = Trainer(model, tr, va, TrainConfig(batch_size=2, max_steps=5, eval_interval=0, ckpt_interval=0))
    with pytest.raises(TrainingDiverged, match=r"step 0.*block 1 \(h\.1\)"):
        t.run(progress=False)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_gradient_overflow_is_caught_before_the_update(book):
    _, tr, va = book
    model = GPT(tiny_cfg(), seed=0)
    real = model.loss_and_grads

    def overflowing(x, y):  # a finite loss whose backward overflowed in one tensor
        loss, grads = real(x, y)
        grads["h"][0]["mlp"]["c_fc"]["w"][0, 0] = np.inf
        return loss, grads

    model.loss_and_grads = overflowing
    before = {k: v.copy() for k, v in tree_flatten(model.params).items()}
    t = Trainer(model, tr, va, TrainConfig(batch_size=2, max_steps=5, eval_interval=0, ckpt_interval=0))
    with pytest.raises(TrainingDiverged, match=r"step 0.*gradients of .*h\.0\."):
        t.run(progress=False)
    for k, v in tree_flatten(model.params).items():
        np.testing.assert_array_equal(v, before[k])  # nothing was updated


def test_bits_per_byte_definition():
    from engine.tokenizer import get_encoding

    enc = get_encoding("gpt2")
    ids = np.array(enc.encode("hello world<|endoftext|>", allowed_special="all"))
    nb = target_bytes(enc, ids)
    assert nb.tolist() == [5, 6, 0]
    assert target_bytes(enc, np.array([-1])).tolist() == [0]


def _reference_nll(model, window, target):
    """-log p(target | window) from the model's logits, by hand in float64 (one window, one target)."""
    logits = np.asarray(model.forward(np.asarray(window)[None]))[0, -1].astype(np.float64)
    m = logits.max()
    return float(m + np.log(np.exp(logits - m).sum()) - logits[target])


@pytest.mark.parametrize("stride", [None, 16, 5, 1])
def test_strided_evaluation_scores_every_token_once_with_its_context(stride):
    cfg = tiny_cfg(n_ctx=16, vocab_size=50)
    model = GPT(cfg, seed=3, dtype="float64")
    ids = np.random.default_rng(4).integers(0, 50, 70)
    x, y = eval_windows(ids, cfg.n_ctx, stride)
    s = stride or cfg.n_ctx
    scored = np.flatnonzero(y.ravel() >= 0)
    # the absolute position of each scored target: no token twice, none skipped up to the last one
    pos = (np.arange(len(x))[:, None] * s + np.arange(1, cfg.n_ctx + 1)[None, :]).ravel()[scored]
    assert sorted(pos) == list(range(1, pos.max() + 1))
    # each target is scored with the context the docstring promises, and the loss is their mean
    want = []
    for p in sorted(pos):
        start = 0 if p <= cfg.n_ctx else (p - cfg.n_ctx - 1) // s * s + s  # the first window holding p
        assert p - start - 1 >= (0 if start == 0 else cfg.n_ctx - s)  # tokens of context before p's input
        want.append(_reference_nll(model, ids[start:p], ids[p]))
    r = evaluate(model, ids, stride=stride)
    assert r["tokens"] == len(want)
    assert r["loss"] == pytest.approx(np.mean(want), rel=1e-10)


def test_strided_evaluation_rejects_a_stride_it_cannot_use():
    with pytest.raises(ValueError, match="stride"):
        eval_windows(np.arange(40), 16, 17)
    with pytest.raises(ValueError, match="stride"):
        eval_windows(np.arange(40), 16, 0)


def test_loss_by_position_is_the_evaluation_loss_spread_over_positions(book):
    enc, _, va = book
    model = GPT(tiny_cfg(), seed=5)
    r = loss_by_position(model, va, enc, max_windows=12)
    assert r["loss"].shape == r["tokens"].shape == (model.cfg.n_ctx,)
    ev = evaluate(model, va, enc, max_windows=12)
    assert r["tokens"].sum() == ev["tokens"]
    assert float((r["loss"] * r["tokens"]).sum() / r["tokens"].sum()) == pytest.approx(ev["loss"], rel=1e-5)
    # position t of the first window is the loss of token t + 1 given tokens 0 .. t
    x, y = eval_windows(va, model.cfg.n_ctx)
    nll = token_losses(model, x[:1], y[:1])[0]
    for t in (0, 7, model.cfg.n_ctx - 1):
        assert nll[t] == pytest.approx(_reference_nll(model, va[:t + 1], va[t + 1]), rel=1e-6)
    masked = token_losses(model, x[:1], np.where(np.arange(x.shape[1]) < 3, -1, y[:1]))
    assert np.isnan(masked[0, :3]).all() and np.isfinite(masked[0, 3:]).all()


def test_book_texts_nonempty():
    assert book_texts()
