"""The hand-written backward pass against independent references.

1. Central finite differences in float64 on a tiny model: every parameter tensor, every layout.
2. PyTorch autograd through transformers' GPT2LMHeadModel on the same weights (dense layout).
3. PyTorch autograd through a small masked reference written here (banded, strided, fixed, mixed).
"""
import numpy as np
import pytest

from engine import GPT, GPTConfig, attention_mask, to_hf_state_dict
from engine.model import tree_flatten

LAYOUTS = ["dense", "banded", "strided", "fixed", ("dense", "banded"), ("strided", "fixed")]


def tiny(attention, T=12):
    return GPTConfig(n_layer=2, n_head=2, d_model=8, n_ctx=T, vocab_size=19, window=3, stride=3, fixed_c=1,
                     attention=attention)


def batch(cfg, B=2, T=None, seed=0, ignore=True):
    rng = np.random.default_rng(seed)
    T = T or cfg.n_ctx
    x = rng.integers(0, cfg.vocab_size, (B, T))
    y = rng.integers(0, cfg.vocab_size, (B, T))
    if ignore:
        y[0, 1] = -1  # an ignored target must not contribute
    return x, y


def randomize(model, seed=1):
    """Non-trivial biases and LayerNorm parameters, so their gradients are tested too."""
    rng = np.random.default_rng(seed)
    for k, v in tree_flatten(model.params).items():
        v[...] = rng.standard_normal(v.shape) * (0.3 if v.ndim > 1 else 0.2) + (1.0 if k.endswith(".g") else 0.0)


@pytest.mark.parametrize("attention", LAYOUTS, ids=str)
def test_finite_differences_every_tensor(attention):
    cfg = tiny(attention)
    m = GPT(cfg, dtype="float64", seed=3)
    randomize(m)
    x, y = batch(cfg)
    loss, grads = m.loss_and_grads(x, y)
    assert loss == pytest.approx(m.loss(x, y), rel=1e-12)
    flat, gflat = tree_flatten(m.params), tree_flatten(grads)
    assert set(flat) == set(gflat)
    rng = np.random.default_rng(7)
    h = 1e-6
    for name, p in flat.items():
        g = gflat[name]
        assert g.shape == p.shape, name
        # a handful of entries per tensor (all of them for the small ones)
        idx = list(np.ndindex(p.shape))
        pick = [idx[i] for i in rng.choice(len(idx), size=min(6, len(idx)), replace=False)]
        for i in pick:
            old = p[i]
            p[i] = old + h
            lp = m.loss(x, y)
            p[i] = old - h
            lm = m.loss(x, y)
            p[i] = old
            fd = (lp - lm) / (2 * h)
            assert abs(fd - g[i]) <= 1e-6 * max(1.0, abs(fd)) + 1e-8, (name, i, fd, g[i])


def test_position_gradient_beyond_T_is_zero():
    cfg = tiny("dense", T=12)
    m = GPT(cfg, dtype="float64")
    x, y = batch(cfg, T=5)
    _, grads = m.loss_and_grads(x, y)
    assert np.all(grads["wpe"][5:] == 0) and np.any(grads["wpe"][:5] != 0)


def _torch():
    return pytest.importorskip("torch")


def test_matches_hf_gpt2_autograd():
    torch = _torch()
    transformers = pytest.importorskip("transformers")
    from engine.hf import hf_config_dict

    cfg = GPTConfig(n_layer=2, n_head=4, d_model=16, n_ctx=16, vocab_size=37, attention="dense")
    m = GPT(cfg, dtype="float64", seed=5)
    randomize(m, seed=2)
    x, y = batch(cfg, B=3, seed=4)
    loss, grads = m.loss_and_grads(x, y)

    hcfg = transformers.GPT2Config(**{k: v for k, v in hf_config_dict(cfg).items() if not k.startswith("engine_")})
    ref = transformers.GPT2LMHeadModel(hcfg).double().eval()
    sd = {k: torch.from_numpy(v.copy()) for k, v in to_hf_state_dict(m.params).items()}
    missing, unexpected = ref.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.endswith("attn.bias") or k.endswith("masked_bias") or k == "lm_head.weight"
                                  for k in missing)
    ref.tie_weights()
    logits = ref(torch.from_numpy(x)).logits
    tl = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab_size), torch.from_numpy(y).reshape(-1),
                                           ignore_index=-1)
    tl.backward()
    assert loss == pytest.approx(tl.item(), rel=1e-10)
    named = dict(ref.named_parameters())
    mine = to_hf_state_dict(grads)
    for k, g in mine.items():
        tg = named[k].grad.numpy()
        err = np.abs(g - tg).max() / max(np.abs(tg).max(), 1e-12)
        assert err <= 1e-6, (k, err)


def torch_reference_loss(torch, params, cfg, x, y):
    """A plain GPT in torch with an explicit (T, T) mask per layer: an independent reference."""
    F = torch.nn.functional
    T = x.shape[1]
    h = params["wte"][x] + params["wpe"][:T]
    H, D = cfg.n_head, cfg.d_model // cfg.n_head

    def ln(v, p):
        return F.layer_norm(v, (cfg.d_model,), p["g"], p["b"], cfg.layer_norm_epsilon)

    for blk, layout in zip(params["h"], cfg.layer_layouts()):
        mask = torch.from_numpy(attention_mask(layout, T, cfg.window, cfg.stride, cfg.fixed_c))
        a = ln(h, blk["ln_1"]) @ blk["attn"]["c_attn"]["w"] + blk["attn"]["c_attn"]["b"]
        q, k, v = (t.reshape(t.shape[0], T, H, D).transpose(1, 2) for t in a.split(cfg.d_model, dim=-1))
        s = (q @ k.transpose(-1, -2)) / D ** 0.5
        s = s.masked_fill(~mask, float("-inf"))
        o = (s.softmax(-1) @ v).transpose(1, 2).reshape(h.shape)
        h = h + o @ blk["attn"]["c_proj"]["w"] + blk["attn"]["c_proj"]["b"]
        f = F.gelu(ln(h, blk["ln_2"]) @ blk["mlp"]["c_fc"]["w"] + blk["mlp"]["c_fc"]["b"], approximate="tanh")
        h = h + f @ blk["mlp"]["c_proj"]["w"] + blk["mlp"]["c_proj"]["b"]
    logits = ln(h, params["ln_f"]) @ params["wte"].T
    return F.cross_entropy(logits.reshape(-1, cfg.vocab_size), y.reshape(-1), ignore_index=-1)


@pytest.mark.parametrize("attention", ["banded", "strided", "fixed", ("dense", "banded"), ("fixed", "strided")],
                         ids=str)
def test_sparse_layouts_match_torch_autograd(attention):
    torch = _torch()
    cfg = GPTConfig(n_layer=2, n_head=2, d_model=12, n_ctx=20, vocab_size=23, window=5, stride=4, fixed_c=2,
                    attention=attention)
    m = GPT(cfg, dtype="float64", seed=9)
    randomize(m, seed=3)
    x, y = batch(cfg, B=2, seed=5)
    loss, grads = m.loss_and_grads(x, y)

    def to_t(v):
        if isinstance(v, dict):
            return {k: to_t(u) for k, u in v.items()}
        if isinstance(v, list):
            return [to_t(u) for u in v]
        return torch.tensor(v, requires_grad=True)

    tp = to_t(m.params)
    tl = torch_reference_loss(torch, tp, cfg, torch.from_numpy(x), torch.from_numpy(y))
    tl.backward()
    assert loss == pytest.approx(tl.item(), rel=1e-10)
    tflat = tree_flatten(tp)
    for k, g in tree_flatten(grads).items():
        tg = tflat[k].grad.numpy()
        err = np.abs(g - tg).max() / max(np.abs(tg).max(), 1e-12)
        assert err <= 1e-6, (k, err)


def test_float32_grads_close_to_float64():
    cfg = tiny("alternating", T=16)
    m64 = GPT(cfg, dtype="float64", seed=1)
    m32 = m64.to(dtype="float32")
    x, y = batch(cfg, T=16)
    _, g64 = m64.loss_and_grads(x, y)
    _, g32 = m32.loss_and_grads(x, y)
    for k, a in tree_flatten(g64).items():
        b = tree_flatten(g32)[k]
        assert b.dtype == np.float32
        assert np.abs(a - b).max() <= 1e-4 * max(np.abs(a).max(), 1e-3), k


@pytest.mark.parametrize("attention", ["dense", ("dense", "banded")], ids=str)
def test_finite_differences_with_dropout(attention):
    """With the masks fixed by their seeds, the loss is a smooth function of the weights: check its gradient."""
    cfg = tiny(attention)
    m = GPT(cfg, dtype="float64", seed=3)
    randomize(m)
    x, y = batch(cfg)
    seeds = [11, 12]
    loss, grads = m.loss_and_grads(x, y, dropout=0.3, dropout_seeds=seeds)
    assert abs(loss - m.loss(x, y)) > 1e-3  # dropout changed the function
    assert m.loss_and_grads(x, y, dropout=0.3, dropout_seeds=seeds)[0] == loss  # same seeds, same masks

    def f():
        return m.loss_and_grads(x, y, dropout=0.3, dropout_seeds=seeds)[0]

    flat, gflat = tree_flatten(m.params), tree_flatten(grads)
    rng = np.random.default_rng(8)
    h = 1e-6
    for name in ["wte", "wpe", "h.0.attn.c_attn.w", "h.0.mlp.c_proj.b", "h.1.ln_2.g", "ln_f.b"]:
        p, g = flat[name], gflat[name]
        idx = list(np.ndindex(p.shape))
        for i in [idx[j] for j in rng.choice(len(idx), size=min(5, len(idx)), replace=False)]:
            old = p[i]
            p[i] = old + h
            lp = f()
            p[i] = old - h
            lm = f()
            p[i] = old
            num = (lp - lm) / (2 * h)
            assert abs(num - g[i]) <= 1e-6 * max(1.0, abs(num)), (name, i, num, g[i])


def test_dropout_masks():
    from engine.layers import Dropout, dropout_forward

    x = np.ones((4, 64, 32), dtype=np.float32)
    y, mask = dropout_forward(x, Dropout(0.25, [1, 2, 3, 4]))
    assert y.dtype == np.float32 and y.shape == x.shape
    dropped = float((y == 0).mean())
    assert 0.22 < dropped < 0.28
    np.testing.assert_allclose(y[y != 0], 1 / 0.75, rtol=1e-6)  # survivors scaled: same expectation
    # a row's mask depends only on its own seed, not on the rest of the batch
    y2, _ = dropout_forward(x[:2], Dropout(0.25, [3, 4]))
    np.testing.assert_array_equal(y2, y[2:])
    assert dropout_forward(x, None)[0] is x
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Dropout(1.0, [0])
