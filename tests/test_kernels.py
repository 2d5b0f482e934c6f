"""engine.memory.reuse_freed_memory: glibc's malloc keeps the memory of freed arrays (checked in fresh processes);
and every fused kernel of engine.kernels against its plain twin in engine.layers."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

PROBE = r"""
import ctypes, json
import numpy as np
import engine
from engine import memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
before = libc.mallinfo2().hblkhd
a = np.ones(8 << 20, dtype=np.uint8)  # 8 MB: above glibc's starting mmap threshold of 128 KiB
mapped = libc.mallinfo2().hblkhd - before
del a
kept = libc.mallinfo2().fordblks  # free bytes held in the heap after the array is gone
print(json.dumps({"tuned": memory._MALLOC_TUNED, "mapped": mapped, "kept": kept}))
"""


def _probe(env_value):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["ENGINE_MALLOC"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    import json

    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_arrays_stay_in_the_heap_for_reuse():
    tuned = _probe("")
    assert tuned["tuned"] is True
    assert tuned["mapped"] == 0  # served from the heap, not a fresh mapping
    assert tuned["kept"] >= 8 << 20  # and kept there once freed, ready for the next array
    plain = _probe("system")
    assert plain["tuned"] is None  # never asked
    assert plain["mapped"] >= 8 << 20  # glibc's default: a mapping of its own, returned on free


def test_opting_out_does_nothing():
    from engine import kernels

    assert kernels.reuse_freed_memory("system") is False
    assert kernels.reuse_freed_memory(" System ") is False


# ---------------------------------------------------------------------- fast kernels against their plain twins
import numpy as np  # noqa: E402

from engine import grad_kernels as GK  # noqa: E402
from engine import kernels as K  # noqa: E402
from engine import gemv as G  # noqa: E402
from engine import layers  # noqa: E402

SHAPES = [(3, 7, 16), (2, 300, 512)]  # the second is above threads.MIN_PARALLEL: cut across threads


@pytest.mark.parametrize("shape", SHAPES + [(1, 1, 768), (2, 3, 48)])  # a few rows: generation's path
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_layernorm_kernel_is_the_plain_formula(shape, dtype, tol):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    g, b = rng.standard_normal(shape[-1]).astype(dtype), rng.standard_normal(shape[-1]).astype(dtype)
    y, xhat, rstd = K.layernorm(x, g, b, 1e-5)
    np.testing.assert_allclose(y, layers.layernorm(x, g, b, 1e-5), rtol=tol, atol=tol)
    np.testing.assert_allclose(xhat * g + b, y, rtol=tol, atol=tol)
    np.testing.assert_allclose(rstd[..., 0], 1 / np.sqrt(x.var(axis=-1) + 1e-5), rtol=tol * 10)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_gelu_kernel_is_the_plain_formula(shape, dtype, tol):
    x = (np.random.default_rng(1).standard_normal(shape) * 4).astype(dtype)
    x.flat[:3] = [-60.0, 0.0, 60.0]  # exp overflows on the far left: GELU -> -0 there
    out, t = K.gelu(x)
    np.testing.assert_allclose(out, layers.gelu(x), rtol=tol, atol=tol)
    np.testing.assert_allclose(t, np.tanh(layers.GELU_C * (x + 0.044715 * x ** 3)), rtol=tol, atol=tol)


@pytest.mark.parametrize("threads", [1, 3])
def test_gelu_without_tanh_gives_the_same_output(threads):
    """Inference's GELU (no t kept): the same bits as the training forward's output, any thread count."""
    x = (np.random.default_rng(2).standard_normal((4, 300, 96)) * 4).astype(np.float32)
    x.flat[:3] = [-60.0, 0.0, 60.0]
    try:
        K.set_num_threads(threads)
        out, t = K.gelu(x, keep_tanh=False)
    finally:
        K.set_num_threads(None)
    assert t is None
    np.testing.assert_array_equal(out, K.gelu(x)[0])
    y, cache = layers.gelu_forward(x, for_backward=False)
    np.testing.assert_array_equal(y, out)
    assert cache.t is None


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-6)])
def test_gelu_grad_kernel_is_the_derivative(shape, dtype, tol):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    _, t = K.gelu(x)
    got = GK.gelu_grad(dy, x, t)
    assert got.dtype == dtype and got.shape == x.shape
    plain = dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * (layers.GELU_C * (1 + 3 * 0.044715 * x * x)))
    np.testing.assert_allclose(got, plain, rtol=tol, atol=tol)
    x64, h = x.astype(np.float64), 1e-6  # central differences of the plain GELU, in double
    fd = (layers.gelu(x64 + h) - layers.gelu(x64 - h)) / (2 * h)
    np.testing.assert_allclose(got, dy * fd, rtol=1e-4 if dtype == np.float32 else 1e-7, atol=1e-5)
    try:
        K.set_num_threads(3)
        np.testing.assert_array_equal(GK.gelu_grad(dy, x, t), got)  # the same bits on three threads
    finally:
        K.set_num_threads(None)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-6)])
def test_softmax_kernel_is_the_plain_formula(shape, dtype, tol):
    s = (np.random.default_rng(2).standard_normal(shape) * 5).astype(dtype)
    want = layers.softmax(s)
    got = K.softmax_(s.copy())
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    e = s.copy()
    total = K.exp_rows_(e)  # the unnormalised half that dense inference attention uses
    np.testing.assert_allclose(e / total, want, rtol=tol, atol=tol)


def test_log_softmax_is_the_log_of_softmax():
    z = np.random.default_rng(3).standard_normal((2, 5, 11)) * 10
    np.testing.assert_allclose(np.exp(layers.log_softmax(z)), layers.softmax(z), rtol=1e-12)


@pytest.mark.parametrize("rows", [5, 600])
def test_linear_and_bmm_kernels_are_matmul(rows):
    rng = np.random.default_rng(4)
    x, w, b = rng.standard_normal((rows, 256)), rng.standard_normal((256, 300)), rng.standard_normal(300)
    np.testing.assert_allclose(K.linear(x, w, b), x @ w + b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(K.linear(x, w.T.copy().T), x @ w, rtol=1e-12, atol=1e-12)  # a transposed view
    a, c = rng.standard_normal((2, 3, rows, 8)), rng.standard_normal((2, 3, 8, 7))
    np.testing.assert_allclose(K.bmm(a, c), a @ c, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vecmat_is_the_product_in_float64(dtype):
    """gemv.vecmat (NumPy's own loop) against a float64 product, for an F-order and a C-order w."""
    rng = np.random.default_rng(11)
    x, w = rng.standard_normal((1, 768)), rng.standard_normal((768, 2000))
    ref = x @ w
    tol = 2e-5 if dtype == np.float32 else 1e-12
    for w_in in (np.asfortranarray(w.astype(dtype)), w.astype(dtype)):
        got = G.vecmat(x.astype(dtype), w_in)
        assert got.shape == (1, 2000) and got.dtype == dtype
        np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * np.abs(ref).max())
    out = np.empty((1, 2000), dtype)
    assert G.vecmat(x.astype(dtype), w.astype(dtype), out=out) is out


def test_linear_takes_vecmat_where_it_was_measured_faster(monkeypatch):
    """One row on one thread goes to vecmat for the shapes and layouts ``tune_one_row`` chose it for
    (here a C-order w and a wide F-order one, the unembedding's wte.T), the same product as in float64
    to round-off; a shape measured slower or never measured, two rows, mixed dtypes or two threads
    stay on the BLAS."""
    rng = np.random.default_rng(12)
    wte = rng.standard_normal((3000, 64)).astype(np.float32)  # (V, C): wte.T is a wide F-order view
    x = rng.standard_normal((1, 64)).astype(np.float32)
    b = rng.standard_normal(3000).astype(np.float32)
    tall = np.asfortranarray(rng.standard_normal((256, 64)).astype(np.float32))
    slow = rng.standard_normal((64, 200)).astype(np.float32)
    monkeypatch.setattr(G, "ONE_ROW_VECMAT", {((64, 3000), "<f4", "F"): True, ((64, 3000), "<f4", "C"): True,
                                              ((64, 200), "<f4", "C"): False})
    calls = []
    real = G.vecmat
    monkeypatch.setattr(G, "vecmat", lambda *a, **kw: (calls.append(a[1].shape), real(*a, **kw))[1])
    x64, w64 = x.astype(np.float64), wte.T.astype(np.float64)
    try:
        K.set_num_threads(1)
        for w in (wte.T, np.ascontiguousarray(wte.T)):
            np.testing.assert_allclose(K.linear(x, w), x64 @ w64, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(K.linear(x, w, b), x64 @ w64 + b, rtol=1e-5, atol=1e-5)
        assert calls == [(64, 3000)] * 4
        calls.clear()
        for args in ((rng.standard_normal((1, 256)).astype(np.float32), tall),  # never measured
                     (x, slow),  # measured slower
                     (np.concatenate([x, x]), wte.T),  # two rows
                     (x.astype(np.float64), wte.T)):  # mixed dtypes
            np.testing.assert_allclose(K.linear(*args), args[0] @ args[1], rtol=1e-5, atol=1e-5)
        assert calls == []
        K.set_num_threads(2)
        np.testing.assert_allclose(K.linear(x, wte.T), x @ wte.T, rtol=1e-5, atol=1e-5)
        assert calls == []
    finally:
        K.set_num_threads(None)


@pytest.mark.parametrize("rows,cols,cut", [(1000, 40, "rows"), (600, 3000, "columns"), (5, 3000, "none")])
def test_linear_cuts_through_its_larger_operand(monkeypatch, rows, cols, cut):
    """kernels.linear on three threads: w cut by columns when it is the larger operand (each piece then
    reads its share of w, not all of it), x by rows otherwise, and a generation step's few rows left to
    the BLAS whole; every way the same product as x @ w + b, for a transposed view of w too."""
    rng = np.random.default_rng(6)
    x, w, b = rng.standard_normal((rows, 160)), rng.standard_normal((160, cols)), rng.standard_normal(cols)
    cuts = []  # per parallel call: the shape of the array it cuts, and how many pieces ran
    real = K.parallel

    def spy(fn, *arrays, **kw):
        pieces = []
        real(lambda *a: (pieces.append(a[0].shape), fn(*a)), *arrays, **kw)
        cuts.append((arrays[0].shape, len(pieces)))

    monkeypatch.setattr(K, "parallel", spy)
    try:
        K.set_num_threads(3)
        got, got_t = K.linear(x, w, b), K.linear(x, np.ascontiguousarray(w.T).T)
    finally:
        K.set_num_threads(None)
    np.testing.assert_allclose(got, x @ w + b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_t, x @ w, rtol=1e-12, atol=1e-12)
    n = 3 * K.threads.PIECES_PER_THREAD
    want = {"rows": ((rows, 160), n), "columns": ((cols, 160), n), "none": ((rows, 160), 1)}[cut]
    assert cuts == [want, want]


def test_mean_last_is_mean():
    x = np.random.default_rng(5).standard_normal((4, 9, 33)).astype(np.float32)
    np.testing.assert_array_equal(K.mean_last(x)[..., 0], np.add.reduce(x, axis=-1) / np.float32(33))
    np.testing.assert_allclose(K.mean_last(x), x.mean(axis=-1, keepdims=True), rtol=1e-6)


# ---------------------------------------------------------------------- the backward kernels (grad_kernels)
def _three_threads(fn):
    """fn() on three element-wise threads (the pieces cut differently), then back to the default."""
    try:
        K.set_num_threads(3)
        return fn()
    finally:
        K.set_num_threads(None)


@pytest.mark.parametrize("shape", SHAPES + [(1, 2, 8)])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5), (np.float16, 5e-3)])
def test_layernorm_grad_kernel_is_the_plain_formula_and_the_derivative(shape, dtype, tol):
    rng = np.random.default_rng(6)
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
    g, b = (1 + rng.standard_normal(shape[-1])).astype(dtype), rng.standard_normal(shape[-1]).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    _, xhat, rstd = K.layernorm(x, g, b, 1e-5)
    dx, dg, db = GK.layernorm_grad(dy, xhat, rstd, g)
    assert dx.shape == x.shape and dg.shape == db.shape == g.shape and dx.dtype == dtype
    f = lambda a: a.astype(np.float64)  # noqa: E731
    dxhat = f(dy) * f(g)
    plain = f(rstd) * (dxhat - dxhat.mean(-1, keepdims=True) - f(xhat) * (dxhat * f(xhat)).mean(-1, keepdims=True))
    scale = 1 if dtype != np.float16 else np.abs(plain).max()
    np.testing.assert_allclose(dx, plain, rtol=tol, atol=tol * scale)
    np.testing.assert_allclose(dg, (f(dy) * f(xhat)).sum(axis=(0, 1)), rtol=tol, atol=tol * shape[0] * shape[1])
    np.testing.assert_allclose(db, f(dy).sum(axis=(0, 1)), rtol=tol, atol=tol * shape[0] * shape[1])
    if dtype == np.float64 and shape[1] < 10:  # central differences of the plain LayerNorm, a few entries
        h = 1e-6
        for i in [(0, 0, 0), (0, shape[1] - 1, shape[2] - 1)]:
            e = np.zeros_like(x)
            e[i] = h
            fd = ((layers.layernorm(x + e, g, b, 1e-5) - layers.layernorm(x - e, g, b, 1e-5)) * dy).sum() / (2 * h)
            assert dx[i] == pytest.approx(fd, rel=1e-6, abs=1e-8)
    if x.size >= K.MIN_PARALLEL:
        again = _three_threads(lambda: GK.layernorm_grad(dy, xhat, rstd, g))
        np.testing.assert_array_equal(again[0], dx)  # rows are independent: the same bits on three threads


@pytest.mark.parametrize("shape", [(2, 3, 7, 9), (2, 6, 128, 256)])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-6)])
def test_softmax_grad_kernel_is_the_plain_formula_and_the_derivative(shape, dtype, tol):
    rng = np.random.default_rng(7)
    z = rng.standard_normal(shape).astype(dtype)
    p = layers.softmax(z).astype(dtype)
    dp = rng.standard_normal(shape).astype(dtype)
    plain = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
    work = dp.copy()
    got = GK.softmax_grad_(work, p)
    assert got is work  # in place
    np.testing.assert_allclose(got, plain, rtol=tol, atol=tol)
    if dtype == np.float64 and shape[-1] < 10:  # against central differences of softmax itself
        h = 1e-6
        e = np.zeros_like(z)
        e[0, 0, 0, 3] = h
        fd = ((layers.softmax(z + e) - layers.softmax(z - e)) * dp).sum() / (2 * h)
        assert got[0, 0, 0, 3] == pytest.approx(fd, rel=1e-6)
    view = dp.copy()[:, 1:]  # a strided view, as the banded layout's windows are
    np.testing.assert_allclose(GK.softmax_grad_(view, p[:, 1:]), plain[:, 1:], rtol=tol, atol=tol)
    if dp.size >= K.MIN_PARALLEL:
        np.testing.assert_array_equal(_three_threads(lambda: GK.softmax_grad_(dp.copy(), p)), got)


@pytest.mark.parametrize("shape", [(2, 5, 11), (4, 64, 1024)])
def test_log_softmax_kernel_is_the_plain_formula_to_the_bit(shape):
    z = (np.random.default_rng(8).standard_normal(shape) * 10).astype(np.float32)
    got = K.log_softmax(z)
    np.testing.assert_array_equal(got, layers.log_softmax(z))  # the same operations, row by row
    np.testing.assert_array_equal(_three_threads(lambda: K.log_softmax(z)), got)


@pytest.mark.parametrize("shape", [(2, 5, 11), (4, 64, 1024)])
def test_softmax_minus_kernel_is_softmax_minus_the_target(shape):
    rng = np.random.default_rng(9)
    logp = layers.log_softmax(rng.standard_normal(shape) * 3)
    B, T, V = shape
    safe = rng.integers(0, V, (B, T, 1))
    hard = rng.uniform(0.5, 1.0, (B, T, 1))
    soft_idx = np.stack([rng.permutation(V)[:3] for _ in range(B * T)]).reshape(B, T, 3)  # distinct in a row
    soft_idx[0, 0, 0] = safe[0, 0, 0]  # an id in both pairs: the two weights add up
    soft_p = rng.uniform(0, 0.1, (B, T, 3))
    scale = rng.uniform(0, 2, (B, T, 1))
    q = np.zeros(shape)
    np.put_along_axis(q, safe, hard, axis=-1)
    for j in range(3):
        q[np.arange(B)[:, None], np.arange(T)[None, :], soft_idx[..., j]] += soft_p[..., j]
    want = (np.exp(logp) - q) * scale
    np.testing.assert_allclose(GK.softmax_minus(logp, scale, safe, hard, soft_idx, soft_p), want, rtol=1e-12,
                               atol=1e-15)
    one = GK.softmax_minus(logp, scale, safe, np.ones((B, T, 1)))  # the plain cross-entropy
    onehot = np.zeros(shape)
    np.put_along_axis(onehot, safe, 1.0, axis=-1)
    np.testing.assert_allclose(one, (np.exp(logp) - onehot) * scale, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(_three_threads(lambda: GK.softmax_minus(logp, scale, safe, np.ones((B, T, 1)))),
                                  one)


@pytest.mark.parametrize("shape", [(3, 5), (2, 300, 512)])
def test_column_sums_are_sums(shape):
    x = np.random.default_rng(10).standard_normal(shape)
    np.testing.assert_allclose(GK.column_sums(x), x.reshape(-1, shape[-1]).sum(axis=0), rtol=1e-12, atol=1e-12)
    x16 = x.astype(np.float16)
    assert GK.column_sums(x16).dtype == np.float16


@pytest.mark.parametrize("lead", [(2, 3), (8, 6), (1, 1)])
def test_stacked_matmul_kernel_is_matmul(lead):
    rng = np.random.default_rng(11)
    a, b = rng.standard_normal(lead + (64, 32)), rng.standard_normal(lead + (32, 48))
    np.testing.assert_allclose(K.matmul(a, b), a @ b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(K.matmul(a.swapaxes(-1, -2).copy().swapaxes(-1, -2), b), a @ b, rtol=1e-12,
                               atol=1e-12)  # strided views
    np.testing.assert_allclose(K.matmul(a, b[:1]), a @ b[:1], rtol=1e-12, atol=1e-12)  # broadcasting: plain
    np.testing.assert_allclose(_three_threads(lambda: K.matmul(a, b)), a @ b, rtol=1e-12, atol=1e-12)


def test_a_training_step_runs_with_the_blas_on_one_thread_and_puts_it_back():
    from threadpoolctl import threadpool_info, threadpool_limits

    from engine import GPT, GPTConfig, threads
    from engine.optim import AdamW
    from engine.params import tree_flatten

    def blas_threads():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    model = GPT(GPTConfig(n_layer=1, n_head=2, d_model=16, n_ctx=8, vocab_size=32), seed=0)
    seen = []
    real = layers.linear_backward

    def spy(dy, cache):
        seen.append(blas_threads())
        return real(dy, cache)

    with threadpool_limits(limits=2, user_api="blas"):
        if not blas_threads() or blas_threads() != [2] * len(blas_threads()):
            pytest.skip("no BLAS whose threads threadpoolctl can set")
        try:
            layers.linear_backward = spy
            ids = np.arange(8)[None] % 32
            loss, grads = model.loss_and_grads(ids, (ids + 1) % 32)
        finally:
            layers.linear_backward = real
        assert seen and all(s == [1] * len(s) for s in seen)  # inside the step: one BLAS thread
        assert blas_threads() == [2] * len(blas_threads())  # and two again after it
        AdamW(tree_flatten(model.params)).step(tree_flatten(grads))
        assert blas_threads() == [2] * len(blas_threads())
        assert not threads._SERIAL


def test_tune_one_row_records_the_faster_kernel_per_shape(monkeypatch):
    """tune_one_row times both kernels on every matrix (a fake clock: vecmat costs 1 for the wide
    shape and 3 for the square one, the BLAS always 2), sums each shape's matrices, keeps the best
    round and records the faster kernel per shape, layout and dtype; shapes already measured are not
    timed again, and on two threads it measures nothing."""
    rng = np.random.default_rng(13)
    wide = [rng.standard_normal((8, 40)).astype(np.float32) for _ in range(3)]
    square = [rng.standard_normal((8, 8)).astype(np.float32) for _ in range(3)]
    wide_f = np.asfortranarray(wide[0])
    now, timed = [0.0], []
    cost = {(8, 40): 1.0, (8, 8): 3.0}

    def fake_vecmat(x, w, out=None):
        timed.append(("vecmat", w.shape))
        assert x.shape == (1, w.shape[0]) and x.dtype == w.dtype
        now[0] += cost[w.shape]
        return x @ w

    def fake_blas(x, w):
        timed.append(("blas", w.shape))
        now[0] += 2.0
        return x @ w

    monkeypatch.setattr(G, "ONE_ROW_VECMAT", {})
    monkeypatch.setattr(G, "vecmat", fake_vecmat)
    monkeypatch.setattr(G, "blas_row", fake_blas)
    clock = lambda: now[0]  # noqa: E731
    try:
        K.set_num_threads(2)
        assert G.tune_one_row(wide + square, clock=clock) == {} and timed == [] and G.ONE_ROW_VECMAT == {}
        K.set_num_threads(1)
        got = G.tune_one_row(wide + square + [wide_f], rounds=2, clock=clock)
        keys = {"wide": ((8, 40), "<f4", "C"), "square": ((8, 8), "<f4", "C"), "wide F": ((8, 40), "<f4", "F")}
        assert got == {keys["wide"]: True, keys["square"]: False, keys["wide F"]: True} == G.ONE_ROW_VECMAT
        # 2 rounds x 2 kernels x 7 matrices, each round in the step's order
        assert len(timed) == 28 and [s for _, s in timed[:7]] == [(8, 40)] * 3 + [(8, 8)] * 3 + [(8, 40)]
        timed.clear()
        G.ONE_ROW_VECMAT[keys["square"]] = True  # a choice on record is kept, not re-measured
        assert G.tune_one_row(square, clock=clock) == {keys["square"]: True} and timed == []
        assert G.tune_one_row([w.astype(np.float16) for w in square], clock=clock) == {}  # not a candidate dtype
    finally:
        K.set_num_threads(None)


def test_tune_one_row_on_the_real_clock_picks_a_kernel_for_each_shape(monkeypatch):
    """Measured for real (the choice depends on the machine), every shape gets a choice, and linear's
    result is x @ w to round-off whichever it is."""
    rng = np.random.default_rng(14)
    ws = [rng.standard_normal((64, 96)).astype(np.float32), rng.standard_normal((96, 64)).T]
    monkeypatch.setattr(G, "ONE_ROW_VECMAT", {})
    try:
        K.set_num_threads(1)
        got = G.tune_one_row(ws, rounds=1)
        assert set(got) == {((64, 96), "<f4", "C"), ((64, 96), "<f8", "F")}
        assert all(isinstance(v, bool) for v in got.values())
        for w in ws:
            x = rng.standard_normal((1, 64)).astype(w.dtype)
            np.testing.assert_allclose(K.linear(x, w), x.astype(np.float64) @ w, rtol=1e-5, atol=1e-5)
    finally:
        K.set_num_threads(None)
