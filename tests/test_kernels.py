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

from engine import kernels as K  # noqa: E402
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


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-6)])
def test_gelu_grad_kernel_is_the_derivative(shape, dtype, tol):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    _, t = K.gelu(x)
    got = K.gelu_grad(dy, x, t)
    assert got.dtype == dtype and got.shape == x.shape
    plain = dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * (layers.GELU_C * (1 + 3 * 0.044715 * x * x)))
    np.testing.assert_allclose(got, plain, rtol=tol, atol=tol)
    x64, h = x.astype(np.float64), 1e-6  # central differences of the plain GELU, in double
    fd = (layers.gelu(x64 + h) - layers.gelu(x64 - h)) / (2 * h)
    np.testing.assert_allclose(got, dy * fd, rtol=1e-4 if dtype == np.float32 else 1e-7, atol=1e-5)
    try:
        K.set_num_threads(3)
        np.testing.assert_array_equal(K.gelu_grad(dy, x, t), got)  # the same bits on three threads
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


def test_mean_last_is_mean():
    x = np.random.default_rng(5).standard_normal((4, 9, 33)).astype(np.float32)
    np.testing.assert_array_equal(K.mean_last(x)[..., 0], np.add.reduce(x, axis=-1) / np.float32(33))
    np.testing.assert_allclose(K.mean_last(x), x.mean(axis=-1, keepdims=True), rtol=1e-6)
