"""The training loop: it learns, it can memorise, it stops on NaN with a useful message."""
import math

import numpy as np
import pytest

from engine import GPT, GPTConfig
from engine.bpe import train_bpe
from engine.data import book_texts, encode_texts, join_texts, load_corpus
from engine.model import tree_flatten
from engine.optim import AdamW
from engine.train import Trainer, TrainConfig, TrainingDiverged, evaluate, target_bytes


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


def test_book_texts_nonempty():
    assert book_texts()
