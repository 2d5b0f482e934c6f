"""AdamW and the learning-rate schedule against torch.optim.AdamW and the formula."""
import math

import numpy as np
import pytest

from engine.optim import AdamW, clip_grad_norm_, decays, global_norm, lr_at


def make(seed=0):
    rng = np.random.default_rng(seed)
    params = {"w": rng.standard_normal((5, 4)), "emb": rng.standard_normal((7, 4)),
              "b": rng.standard_normal(4), "ln.g": 1 + rng.standard_normal(4) * 0.1}
    return params, rng


@pytest.mark.parametrize("scale", [0.1, 10.0])  # below and above the clipping threshold
def test_steps_match_torch_adamw(scale):
    torch = pytest.importorskip("torch")
    params, rng = make()
    lr, wd = 3e-3, 0.1
    tparams = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    groups = [{"params": [tparams[k] for k in params if decays(k, params[k].shape)], "weight_decay": wd},
              {"params": [tparams[k] for k in params if not decays(k, params[k].shape)], "weight_decay": 0.0}]
    topt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)
    opt = AdamW(params, lr=lr, weight_decay=wd, grad_clip=1.0)
    for step in range(5):
        grads = {k: rng.standard_normal(v.shape) * scale for k, v in params.items()}
        for k, t in tparams.items():
            t.grad = torch.tensor(grads[k].copy())
        tnorm = torch.nn.utils.clip_grad_norm_(list(tparams.values()), 1.0).item()
        topt.step()
        norm = opt.step({k: g.copy() for k, g in grads.items()})
        assert norm == pytest.approx(tnorm, rel=1e-9)
        for k in params:
            np.testing.assert_allclose(params[k], tparams[k].detach().numpy(), rtol=1e-6, atol=1e-9)


def test_weight_decay_only_on_matrices():
    params, _ = make()
    before = {k: v.copy() for k, v in params.items()}
    opt = AdamW(params, lr=0.1, weight_decay=0.5)
    opt.step({k: np.zeros_like(v) for k, v in params.items()})
    np.testing.assert_allclose(params["w"], before["w"] * (1 - 0.1 * 0.5))
    np.testing.assert_allclose(params["emb"], before["emb"] * (1 - 0.1 * 0.5))
    np.testing.assert_array_equal(params["b"], before["b"])
    np.testing.assert_array_equal(params["ln.g"], before["ln.g"])


def test_update_is_in_place_and_state_preallocated():
    params, rng = make()
    ids = {k: id(v) for k, v in params.items()}
    opt = AdamW(params)
    m_ids = {k: id(v) for k, v in opt.m.items()}
    for _ in range(3):
        opt.step({k: rng.standard_normal(v.shape) for k, v in params.items()})
    assert {k: id(v) for k, v in params.items()} == ids
    assert {k: id(v) for k, v in opt.m.items()} == m_ids


def test_frozen_parameters_do_not_move():
    params, rng = make()
    frozen = params["w"].copy()
    opt = AdamW(params, trainable={"b", "emb"})
    opt.step({k: rng.standard_normal(v.shape) for k, v in params.items()})
    np.testing.assert_array_equal(params["w"], frozen)
    assert "w" not in opt.m
    with pytest.raises(ValueError, match="not in the model"):
        AdamW(params, trainable={"nope"})


def test_state_dict_round_trip():
    params, rng = make()
    grads = [{k: rng.standard_normal(v.shape) for k, v in params.items()} for _ in range(4)]
    p1 = {k: v.copy() for k, v in params.items()}
    o1 = AdamW(p1)
    for g in grads:
        o1.step({k: v.copy() for k, v in g.items()})
    p2 = {k: v.copy() for k, v in params.items()}
    o2 = AdamW(p2)
    for g in grads[:2]:
        o2.step({k: v.copy() for k, v in g.items()})
    sd = {k: (v.copy() if hasattr(v, "copy") else v) for k, v in o2.state_dict().items()}
    p3 = {k: v.copy() for k, v in p2.items()}
    o3 = AdamW(p3)
    o3.load_state_dict(sd)
    for g in grads[2:]:
        o3.step({k: v.copy() for k, v in g.items()})
    for k in params:
        np.testing.assert_array_equal(p3[k], p1[k])


def test_clip_grad_norm():
    rng = np.random.default_rng(1)
    gs = [rng.standard_normal((3, 3)), rng.standard_normal(5)]
    n = math.sqrt(sum((g ** 2).sum() for g in gs))
    assert global_norm(gs) == pytest.approx(n)
    before = [g.copy() for g in gs]
    assert clip_grad_norm_(gs, 0.5) == pytest.approx(n)
    assert global_norm(gs) == pytest.approx(0.5, rel=1e-5)
    np.testing.assert_allclose(gs[0] / before[0], 0.5 / (n + 1e-6))
    small = [g * 1e-3 for g in before]
    keep = [g.copy() for g in small]
    clip_grad_norm_(small, 1.0)
    np.testing.assert_array_equal(small[0], keep[0])


@pytest.mark.parametrize("warmup,total,ratio", [(10, 100, 0.1), (1, 7, 0.0), (50, 60, 0.25)])
def test_schedule_formula(warmup, total, ratio):
    peak = 6e-4
    for s in range(total + 5):
        if s < warmup:
            want = peak * (s + 1) / warmup
        elif s >= total:
            want = peak * ratio
        else:
            frac = (s - warmup) / (total - warmup)
            want = peak * ratio + (peak - peak * ratio) * (1 + math.cos(math.pi * frac)) / 2
        assert lr_at(s, peak, warmup, total, ratio) == pytest.approx(want, rel=1e-12)
    assert lr_at(warmup - 1, peak, warmup, total, ratio) == pytest.approx(peak)
    lrs = [lr_at(s, peak, warmup, total, ratio) for s in range(warmup, total)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # monotone decay after warm-up
