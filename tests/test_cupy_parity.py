"""CuPy vs NumPy: the same model on the GPU gives the same logits, gradients and generations.

Skipped when CuPy or a CUDA device is absent (the one legitimate skip in the suite); run by
bench/gpu.sh on a GPU machine. Also runnable without pytest: ``python tests/test_cupy_parity.py``.
Float64 on both sides must agree to ~1e-12 (same formulas, different BLAS and kernels); the
fused float16/float32 kernels of engine/kernels.py are checked against float64 NumPy.
"""
from __future__ import annotations

import numpy as np

from engine import GPT, GPTConfig
from engine.backend import _cupy_usable, to_numpy
from engine.model import tree_flatten

try:
    import pytest
except ImportError:  # the GPU machine may lack pytest: see __main__ below
    pytest = None

HAVE_GPU = _cupy_usable()
if pytest is not None:
    pytestmark = pytest.mark.skipif(not HAVE_GPU, reason="needs CuPy and a CUDA GPU")

LAYOUTS = ["dense", "banded", "strided", "fixed", "alternating"]


def _cfg(layout, n_ctx=24):
    return GPTConfig(n_layer=2, n_head=2, d_model=16, n_ctx=n_ctx, vocab_size=53, window=5, stride=4,
                     fixed_c=2, attention=layout)


def _pair(layout, dtype="float64", seed=3):
    cpu = GPT(_cfg(layout), seed=seed, dtype=dtype, backend="numpy")
    rng = np.random.default_rng(seed)
    for v in tree_flatten(cpu.params).values():  # make biases and gains non-trivial
        v += rng.normal(0, 0.05, v.shape).astype(v.dtype)
    return cpu, cpu.to("cupy", dtype)


def _rel(a, b):
    a, b = to_numpy(a).astype(np.float64), to_numpy(b).astype(np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def test_logits_match_every_layout():
    ids = np.random.default_rng(0).integers(0, 53, (2, 21))
    for layout in LAYOUTS:
        cpu, gpu = _pair(layout)
        assert gpu.backend == "cupy"
        assert _rel(gpu.forward(ids), cpu.forward(ids)) < 1e-12, layout


def test_gradients_match_every_layout():
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 53, (2, 19))
    tg = rng.integers(0, 53, (2, 19))
    tg[0, 4] = -1
    for layout in LAYOUTS:
        cpu, gpu = _pair(layout)
        lc, gc = cpu.loss_and_grads(ids, tg)
        lg, gg = gpu.loss_and_grads(ids, tg)
        assert abs(lc - lg) < 1e-12 * abs(lc), layout
        fc, fg = tree_flatten(gc), tree_flatten(gg)
        assert fc.keys() == fg.keys()
        for k in fc:
            assert _rel(fg[k], fc[k]) < 1e-10, (layout, k)


def test_generation_matches_and_cache_is_exact():
    prompt = np.random.default_rng(2).integers(0, 53, (2, 5))
    for layout in LAYOUTS:
        cpu, gpu = _pair(layout)
        want = cpu.generate(prompt, 12, temperature=0)
        assert np.array_equal(gpu.generate(prompt, 12, temperature=0), want), layout
        assert np.array_equal(gpu.generate(prompt, 12, temperature=0, use_cache=False), want), layout
        # sampling draws from NumPy's generator on the host: same seed, same tokens
        a = gpu.generate(prompt, 8, temperature=0.9, top_k=10, seed=7)
        b = cpu.generate(prompt, 8, temperature=0.9, top_k=10, seed=7)
        assert np.array_equal(a, b), layout


def test_float32_and_float16_models_close_to_float64():
    ids = np.random.default_rng(4).integers(0, 53, (1, 24))
    for layout in ["dense", "alternating"]:
        cpu, _ = _pair(layout)
        ref = cpu.forward(ids)
        for dtype, tol in [("float32", 1e-5), ("float16", 3e-2)]:
            g = cpu.to("cupy", dtype)
            assert _rel(g.forward(ids), ref) < tol, (layout, dtype)


def test_fused_kernels_match_numpy():
    import cupy as cp

    from engine import kernels

    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 7, 40)) * 2.0
    g, b = rng.standard_normal(40), rng.standard_normal(40)
    y_ref, t_ref = kernels.gelu(x)
    yl_ref, xhat_ref, rstd_ref = kernels.layernorm(x + 3.0, g, b, 1e-5)
    for dtype, tol in [("float64", 1e-13), ("float32", 2e-6), ("float16", 4e-3)]:
        xd = cp.asarray(x, dtype=dtype)
        y, t = kernels.gelu(xd)
        assert y.dtype == xd.dtype and t.dtype == xd.dtype
        assert _rel(y, y_ref) < tol and _rel(t, t_ref) < tol, dtype
        yl, xhat, rstd = kernels.layernorm(cp.asarray(x + 3.0, dtype=dtype), cp.asarray(g, dtype=dtype),
                                           cp.asarray(b, dtype=dtype), 1e-5)
        assert yl.dtype == xd.dtype and rstd.shape == (3, 7, 1)
        assert _rel(yl, yl_ref) < 10 * tol and _rel(xhat, xhat_ref) < 10 * tol, dtype
        assert _rel(rstd, rstd_ref) < 10 * tol, dtype
        s = cp.asarray(x, dtype=dtype)
        view = s[:, 2:6, 5:]  # a strided view, as the causal attention tiles use
        kernels.softmax_(view)
        assert _rel(view, kernels.softmax_(x[:, 2:6, 5:].copy())) < tol, dtype
        assert bool((s[:, :2] == cp.asarray(x[:, :2], dtype=dtype)).all())  # untouched outside the view
        a, m = cp.asarray(x[:, :, :8], dtype=dtype), cp.asarray(x[:, :8, :], dtype=dtype)
        assert _rel(kernels.bmm(a, m), x[:, :, :8] @ x[:, :8, :]) < 10 * tol, dtype


if __name__ == "__main__":  # minimal runner for machines without pytest
    import sys
    import traceback

    if not HAVE_GPU:
        print("SKIPPED: needs CuPy and a CUDA GPU")
        sys.exit(0)
    failed = 0
    for name, fn in list(globals().items()):
        if name.startswith("test_") and callable(fn):
            try:
                fn()
                print(f"PASSED {name}")
            except Exception:
                failed += 1
                print(f"FAILED {name}")
                traceback.print_exc()
    print(f"{failed} failed")
    sys.exit(1 if failed else 0)
