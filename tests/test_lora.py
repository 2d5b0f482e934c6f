"""LoRA: the unmerged layer against finite differences, the model-level gradients of A and B against
finite differences of the loss, merging (identical logits), frozen weights, the adapter file."""
import numpy as np
import pytest

from engine import GPT, GPTConfig
from engine.lora import (adapter_grads, init_adapter, load_adapter, lora_backward, lora_forward, merge,
                         merged_params, save_adapter, unseen_tokens, weight_change)
from engine.model import tree_flatten, tree_unflatten


def tiny(dtype="float64"):
    cfg = GPTConfig.preset("course-tiny", vocab_size=50, n_ctx=16, d_model=16, n_head=2, n_layer=2)
    return GPT(cfg, seed=1, dtype=dtype, backend="numpy")


def test_lora_layer_matches_merged_weight_and_finite_differences():
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 3, 5)), rng.standard_normal((5, 4)), rng.standard_normal(4)
    a, bm, s = rng.standard_normal((5, 2)), rng.standard_normal((2, 4)), 1.7
    y, cache = lora_forward(x, w, b, a, bm, s)
    np.testing.assert_allclose(y, x @ (w + s * a @ bm) + b, rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx, da, db = lora_backward(dy, cache)
    f = lambda x_, a_, b_: float((lora_forward(x_, w, b, a_, b_, s)[0] * dy).sum())  # noqa: E731
    eps = 1e-6
    for arr, grad, which in ((x, dx, 0), (a, da, 1), (bm, db, 2)):
        for idx in [(0,) * arr.ndim, tuple(d - 1 for d in arr.shape), tuple(d // 2 for d in arr.shape)]:
            args_p, args_m = [x.copy(), a.copy(), bm.copy()], [x.copy(), a.copy(), bm.copy()]
            args_p[which][idx] += eps
            args_m[which][idx] -= eps
            fd = (f(*args_p) - f(*args_m)) / (2 * eps)
            assert abs(fd - grad[idx]) < 1e-6 * max(1.0, abs(fd)), (which, idx, fd, grad[idx])


def test_adapter_gradients_match_finite_differences_of_the_model_loss():
    model = tiny()
    ad = init_adapter(model, rank=3, alpha=6.0, targets=("attn.c_attn.w", "mlp.c_proj.w"), seed=0, rows=[3, 7, 7, 1])
    assert ad.rows == [1, 3, 7]
    rng = np.random.default_rng(2)
    for k in ad.params:  # B = 0 would make dA exactly zero: give both factors random values
        ad.params[k] = rng.standard_normal(ad.params[k].shape) * 0.3
    ids = rng.integers(0, 50, (2, 7))
    tgt = rng.integers(0, 50, (2, 7))
    tgt[:, :3] = -1  # only the "answer" is scored
    base = tree_flatten(model.params)

    def loss():
        m = GPT(model.cfg, dtype="float64", backend="numpy",
                params=tree_unflatten(merged_params(base, ad), model.cfg.n_layer))
        return m, m.loss(ids, tgt)

    m, _ = loss()
    _, grads = m.loss_and_grads(ids, tgt)
    g = adapter_grads(tree_flatten(grads), ad)
    assert set(g) == set(ad.params)
    eps = 1e-6
    for k in ["h.0.attn.c_attn.w.A", "h.1.mlp.c_proj.w.B", "h.1.attn.c_attn.w.B", "wte.rows"]:
        for idx in [(0, 0), (1, 2), tuple(d - 1 for d in ad.params[k].shape)]:
            old = ad.params[k][idx]
            ad.params[k][idx] = old + eps
            lp = loss()[1]
            ad.params[k][idx] = old - eps
            lm = loss()[1]
            ad.params[k][idx] = old
            fd = (lp - lm) / (2 * eps)
            assert abs(fd - g[k][idx]) < 1e-6 + 1e-5 * abs(fd), (k, idx, fd, g[k][idx])


def test_a_fresh_adapter_changes_nothing_and_merge_leaves_the_model_alone():
    model = tiny()
    ad = init_adapter(model, rank=2)
    ids = np.arange(10)[None]
    np.testing.assert_array_equal(merge(model, ad)(ids), model(ids))  # B = 0
    # random, not constant: a change that adds the same number to every channel is undone by LayerNorm
    ad.params["h.0.attn.c_proj.w.B"][:] = np.random.default_rng(0).standard_normal((2, 16))
    before = {k: v.copy() for k, v in tree_flatten(model.params).items()}
    merged = merge(model, ad)
    for k, v in tree_flatten(model.params).items():
        np.testing.assert_array_equal(v, before[k])
    assert not np.allclose(merged(ids), model(ids))
    assert set(weight_change(ad)) == set(ad.targets) and weight_change(ad)["h.0.attn.c_proj.w"] > 0
    w = tree_flatten(model.params)["h.0.attn.c_proj.w"]
    assert np.isclose(weight_change(ad, tree_flatten(model.params))["h.0.attn.c_proj.w"],
                      np.linalg.norm(ad.delta("h.0.attn.c_proj.w")) / np.linalg.norm(w))
    with pytest.raises(ValueError, match="targets must be among"):
        init_adapter(model, targets=("wte",))
    with pytest.raises(ValueError, match="rank"):
        init_adapter(model, rank=0)
    with pytest.raises(ValueError, match="token ids"):
        init_adapter(model, rows=[50])


def test_unseen_tokens_share_one_embedding():
    model = tiny()
    wte = model.params["wte"]
    wte[[0, 4, 9]] = 3.0 * np.linspace(1, 2, 16)  # three rows pushed the same way, as pretraining does
    assert unseen_tokens(model) == [0, 4, 9]


def test_finetuning_an_adapter_freezes_the_model_and_the_saved_adapter_merges_to_identical_logits(tmp_path):
    from engine.bpe import train_bpe
    from engine.finetune import TEMPLATES, finetune, make_dataset

    data = make_dataset(["name", "city"], TEMPLATES[:2])
    enc = train_bpe("".join(e.line() for e in data) * 2, 300)
    cfg = GPTConfig.preset("course-tiny", vocab_size=enc.n_vocab, n_ctx=64, d_model=32, n_head=2, n_layer=2)
    model = GPT(cfg, seed=0, backend="numpy")
    base = {k: v.copy() for k, v in tree_flatten(model.params).items()}
    ad = init_adapter(model, rank=4, targets=("attn.c_attn.w", "mlp.c_proj.w"), rows=[5, 9])
    losses = finetune(model, enc, data, steps=40, lr=5e-2, batch_size=4, warmup=2, adapter=ad)
    assert np.mean(losses[-5:]) < losses[0] - 0.3  # it learns (slowly: the embeddings of a random model are frozen)
    tuned = tree_flatten(model.params)
    for k, v in base.items():
        if k in ad.targets:  # the adapted weights: the base plus the adapter's change, nothing else
            np.testing.assert_array_equal(tuned[k], v + ad.delta(k).astype(v.dtype))
        elif k == "wte":  # two rows trained, the others as they were
            np.testing.assert_array_equal(np.delete(tuned[k], [5, 9], 0), np.delete(v, [5, 9], 0))
            assert not np.array_equal(tuned[k][[5, 9]], v[[5, 9]])
        else:
            np.testing.assert_array_equal(tuned[k], v)
    fresh = GPT(cfg, seed=0, backend="numpy")
    loaded = load_adapter(save_adapter(tmp_path / "ad", ad), fresh)
    assert loaded.rank == 4 and loaded.targets == ad.targets and loaded.rows == [5, 9]
    ids = [enc.encode_ordinary(data[0].line())]
    np.testing.assert_array_equal(merge(fresh, loaded)(np.asarray(ids)), model(np.asarray(ids)))
    with pytest.raises(ValueError, match="not both"):
        finetune(model, enc, data, steps=1, adapter=ad, trainable=["ln_f."])
    small = GPT(GPTConfig.preset("course-tiny", vocab_size=enc.n_vocab, n_ctx=64, d_model=16, n_head=2, n_layer=2))
    with pytest.raises(ValueError, match="the model's weight is"):
        load_adapter(tmp_path / "ad", small)
