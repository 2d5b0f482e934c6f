"""Speed tricks behind the layers: GELU, LayerNorm and softmax with as few passes over memory as possible.

Each function is the same formula as its plain twin in ``layers.py`` (``layernorm``, ``gelu``,
``softmax``), which the tests compare it with. On NumPy it is written with ``out=`` and in-place operations
so that no temporary arrays are made; on CuPy it runs as one fused GPU kernel
(``cupy.ElementwiseKernel`` / ``cupy.ReductionKernel``) where NumPy-style code
would launch one kernel, and read and write the whole array, per operator.
The choice is made here, from the array's module, so the model code has no
``if cupy:`` branches. Half-precision inputs are computed in float32 inside
the kernels; float64 in double.

On NumPy, large passes are also cut into pieces along a leading axis and run on
``get_num_threads()`` threads by ``threads.parallel``: the element-wise passes,
the rows of the linear layers and the heads of attention. The thread pool and the
BLAS control live in ``engine/threads.py``, malloc tuning in ``engine/memory.py``.
"""
from __future__ import annotations

import math

import numpy as np

from .backend import array_module
# re-exported: callers (the tests, the benchmarks) still reach them as kernels.*
from . import memory
from .memory import reuse_freed_memory  # noqa: F401
from . import threads
from . import gemv
from .gemv import gemv_layout, tune_one_row, vecmat, vecmat_streams_faster  # noqa: F401
from .threads import (MIN_PARALLEL, blas_on_one_thread, get_num_threads, one_blas_thread, parallel,  # noqa: F401
                      set_num_threads)

GELU_C = math.sqrt(2.0 / math.pi)
GELU_A = 0.044715


def _is_cupy(xp) -> bool:
    return xp.__name__.split(".")[0] == "cupy"


# ---------------------------------------------------------------------- CuPy kernels (built on first use)
_KERNELS: dict = {}


def _ctype(dtype) -> str:
    """The C type the GPU kernels compute in: double for float64, float otherwise (float16, float32)."""
    return "double" if dtype.itemsize == 8 else "float"


def _cupy_kernel(name: str, dtype):
    F = _ctype(dtype)
    key = (name, F)
    k = _KERNELS.get(key)
    if k is not None:
        return k
    import cupy

    if name == "gelu":
        # y = 0.5 x (1 + t), t = tanh(c (x + a x^3)); t is kept for the backward pass.
        k = cupy.ElementwiseKernel(
            "T x", "T y, T t",
            f"{F} v = ({F})x; {F} u = tanh(({F}){GELU_C!r} * (v + ({F}){GELU_A!r} * v * v * v));"
            f" t = (T)u; y = (T)(({F})0.5 * v * (({F})1 + u));",
            f"engine_gelu_{F}")
    elif name == "sqdev":  # sum of squared deviations from m along the reduced axis
        k = cupy.ReductionKernel(
            "T x, S m", "S ss",
            f"(({F})x - ({F})m) * (({F})x - ({F})m)", "a + b", "ss = (S)a", "0",
            f"engine_sqdev_{F}", reduce_type=F)
    elif name == "lnorm":  # xhat = (x - mean) * rstd; y = xhat * g + b, in one pass
        k = cupy.ElementwiseKernel(
            "T x, S m, S r, T g, T b", "T y, T xhat",
            f"{F} h = (({F})x - ({F})m) * ({F})r; xhat = (T)h; y = (T)(h * ({F})g + ({F})b);",
            f"engine_lnorm_{F}")
    elif name == "exp_sub":  # s = exp(s - m), in place
        k = cupy.ElementwiseKernel(
            "T m", "T s", f"s = (T)exp(({F})s - ({F})m);", f"engine_exp_sub_{F}")
    else:
        raise KeyError(name)
    _KERNELS[key] = k
    return k


def _stat_dtype(xp, dtype):
    """Where means and variances live: float32 for half precision, the input's dtype otherwise."""
    return np.dtype("float32") if dtype.itemsize < 4 else dtype


# ---------------------------------------------------------------------- large outputs
def empty(xp, shape, dtype):
    """``xp.empty``; on NumPy, arrays too large for malloc to keep are reused (``memory.empty``)."""
    if xp is not np:
        return xp.empty(shape, dtype=dtype)
    if math.prod(shape) * 8 <= memory.MMAP_THRESHOLD:  # surely small (a generation step's): no pool
        return np.empty(shape, dtype)
    return memory.empty(shape, dtype)


def zeros(xp, shape, dtype):
    """``xp.zeros``, through ``empty`` on NumPy."""
    return memory.zeros(shape, dtype) if xp is np else xp.zeros(shape, dtype=dtype)


# ---------------------------------------------------------------------- batched matrix products
def bmm(a, b, out=None):
    """Batched matrix product a @ b over leading axes, optionally into ``out`` (which may be a view).

    NumPy and float32/float64 CuPy: ``matmul`` itself. CuPy computes a float16 product with
    more than two axes in float32 after converting both operands, off the tensor cores, so
    there we multiply each (T, D) matrix pair with a 2-D ``matmul``, which cuBLAS runs in
    float16 on the tensor cores.
    """
    xp = array_module(a)
    lead = a.shape[:-2]
    if not (_is_cupy(xp) and a.dtype.itemsize == 2 and a.ndim == b.ndim > 2 and lead == b.shape[:-2]
            and math.prod(lead) <= 256):  # beyond that, launches cost more than the float32 detour
        return xp.matmul(a, b, out=out)
    if out is None:
        out = xp.empty(lead + (a.shape[-2], b.shape[-1]), dtype=a.dtype)
    for i in np.ndindex(*lead):
        xp.matmul(a[i], b[i], out=out[i])
    return out


def linear(x, w, b=None):
    """x @ w (+ b), as one 2-D product. x: (N, C_in); w: (C_in, C_out) (may be a transposed view); b: (C_out,).

    On NumPy the product is cut across ``get_num_threads()`` threads, each running the BLAS on one
    thread, and the bias is added by the thread that computed its part (while it is in cache).
    Letting the BLAS thread one big product instead costs more than it looks: after each call its
    worker threads spin for a while, and take a core from the element-wise passes and the attention
    that come next. The cut goes through the larger operand: a BLAS call packs all of the operand it
    does not cut, so each piece rereads it. Cut by rows of x, every piece would read all of wte (154 MB
    for GPT-2, from memory) in the unembedding of a prefill; cut by columns of w, each reads its share
    (1 x 1,024 tokens on two threads: 170 against 181 GFLOP/s). Results agree with ``x @ w`` to
    round-off (a BLAS blocks differently by size, so the last bits can depend on the cut).
    One row on one thread (a generation step on one core) goes to ``vecmat`` where ``tune_one_row``
    measured it faster on this machine (``engine/gemv.py``).
    With ``ENGINE_DECODE_ONE_BLAS_THREAD=1`` a product of fewer than ``threads.FEW_ROWS``
    rows (a generation step) runs on one BLAS thread instead (``threads.one_blas_thread`` says when that helps).
    """
    xp = array_module(x)
    y = empty(xp, (x.shape[0], w.shape[1]), xp.result_type(x, w))  # the logits: 206 MB for 1,024 tokens

    def rows(x, y):
        xp.matmul(x, w, out=y)
        if b is not None:
            y += b

    def columns(wt, yt, bt):  # views of w.T, y.T, b as a column: one piece of w's columns
        xp.matmul(x, wt.T, out=yt.T)
        if b is not None:
            yt += bt

    few = x.shape[0] < threads.FEW_ROWS  # a generation step: the BLAS's own threads stream w better
    if gemv.vecmat_streams_faster(x, w):
        gemv.vecmat(x, w, y)
        if b is not None:
            y += b
    elif threads.DECODE_ONE_BLAS_THREAD and few and isinstance(x, np.ndarray):
        one_blas_thread(rows, x, y)
    elif not few and w.size > x.size and xp is np:  # on a GPU: one product, as it is
        parallel(columns, w.T, y.T, (b if b is not None else w[0]).reshape(-1, 1), blas=True)
    else:
        parallel(rows, x, y, blas=True)
    return y


def matmul(a, b):
    """a @ b for stacks of matrices with the same leading shape: a (..., M, K), b (..., K, N) -> (..., M, N),
    the stack cut across ``get_num_threads()`` threads, each running the BLAS on one thread (as
    ``linear`` cuts rows). Other shapes (broadcasting, 2-D) and CuPy: ``matmul`` itself."""
    xp = array_module(a)
    if a.ndim < 3 or a.shape[:-2] != b.shape[:-2] or not isinstance(a, np.ndarray):
        return xp.matmul(a, b)
    out = empty(xp, a.shape[:-1] + (b.shape[-1],), xp.result_type(a, b))

    def stack(a, b, out):
        xp.matmul(a, b, out=out)

    parallel(stack, a, b, out, blas=True, axes=a.ndim - 2)
    return out


def causal_block(xp, T: int) -> int:
    """Query-block size for causal attention: small tiles on the CPU (half the work, cache-sized
    scores); one tile on a GPU, where every extra tile is more kernel launches."""
    return T if _is_cupy(xp) else min(T, 128)


# ---------------------------------------------------------------------- GELU
def gelu(x, keep_tanh: bool = True):
    """GELU, tanh form: returns (0.5 x (1 + t), t) with t = tanh(sqrt(2/pi) (x + 0.044715 x^3)). Any shape.

    ``keep_tanh=False`` (inference): t is not computed, and None is returned in its place."""
    xp = array_module(x)
    if _is_cupy(xp):
        out, t = _cupy_kernel("gelu", x.dtype)(x)
        return out, (t if keep_tanh else None)
    dt = x.dtype.type
    out = xp.empty_like(x)
    t = xp.empty_like(x) if keep_tanh else None

    # 0.5 x (1 + tanh(u)) = x / (1 + exp(-2u)): NumPy's exp is vectorised and about twice as fast
    # as its tanh here, so go through exp and recover t = tanh(u) = 2 / (1 + exp(-2u)) - 1 if it is
    # wanted. -2u = x (-2c - 2ca x^2): four passes. Without t, the scratch is ``out`` itself.
    def piece(x, out, t=None):
        e = out if t is None else t
        xp.multiply(x, x, out=e)
        e *= dt(-2.0 * GELU_C * GELU_A)
        e += dt(-2.0 * GELU_C)
        e *= x  # -2u
        with np.errstate(over="ignore"):  # exp -> inf for very negative x: GELU -> -0, t -> -1, both right
            xp.exp(e, out=e)
        e += dt(1.0)
        xp.divide(x, e, out=out)
        if t is not None:
            xp.divide(dt(2.0), t, out=t)
            t -= dt(1.0)

    parallel(piece, x, out, *([t] if keep_tanh else []))
    return out, t


# ---------------------------------------------------------------------- LayerNorm
def mean_last(x):
    """``x.mean(axis=-1, keepdims=True)`` on NumPy, without ``mean``'s Python-level wrapper (8 us a
    call against 2 us for the sum itself: two of them were over a third of a one-token LayerNorm).
    The same arithmetic for float32 and float64: a sum, then a division by the count."""
    if x.dtype.itemsize < 4:  # float16: mean accumulates in float32; leave that to NumPy
        return x.mean(axis=-1, keepdims=True)
    s = np.add.reduce(x, axis=-1, keepdims=True)
    s /= x.shape[-1]
    return s


def layernorm(x, g, b, eps: float):
    """LayerNorm over the last axis. x: (..., C); g, b: (C,) -> (y, xhat, rstd (..., 1))."""
    xp = array_module(x)
    if _is_cupy(xp):
        sd = _stat_dtype(xp, x.dtype)
        mean = x.mean(axis=-1, keepdims=True, dtype=sd)
        var = _cupy_kernel("sqdev", x.dtype)(x, mean, axis=-1, keepdims=True) / sd.type(x.shape[-1])
        rstd = 1.0 / xp.sqrt(var + sd.type(eps))
        y, xhat = _cupy_kernel("lnorm", x.dtype)(x, mean, rstd, g, b)
        return y, xhat, rstd.astype(x.dtype, copy=False)
    if x.size < threads.FEW_ROWS * x.shape[-1] and x.dtype.itemsize >= 4:
        return _layernorm_rows(x, g, b, eps)
    xhat, y = xp.empty_like(x), xp.empty_like(x)
    rstd = xp.empty(x.shape[:-1] + (1,), dtype=x.dtype)

    def piece(x, xhat, y, rstd):
        xp.subtract(x, mean_last(x), out=xhat)
        xp.multiply(xhat, xhat, out=y)  # y is scratch for the squares until the end
        rstd[...] = 1.0 / xp.sqrt(mean_last(y) + eps)
        xhat *= rstd
        xp.multiply(xhat, g, out=y)
        y += b

    parallel(piece, x, xhat, y, rstd)
    return y, xhat, rstd


_MEAN_WEIGHTS: dict = {}


def _layernorm_rows(x, g, b, eps: float):
    """``layernorm`` for a few rows (a generation step's 25 calls a token): the means as products
    with a vector of 1/C, in 7 NumPy calls instead of 14 (12 against 21-26 us a call for one GPT-2 row)."""
    C = x.shape[-1]
    inv = _MEAN_WEIGHTS.get((C, x.dtype))
    if inv is None:
        inv = _MEAN_WEIGHTS[(C, x.dtype)] = np.full(C, 1.0 / C, dtype=x.dtype)
    xhat = x - (x @ inv)[..., None]
    rstd = 1.0 / np.sqrt((xhat * xhat) @ inv + eps)[..., None]
    xhat *= rstd
    y = xhat * g
    y += b
    return y, xhat, rstd


# ---------------------------------------------------------------------- softmax
def softmax_(s):
    """Row softmax over the last axis, in place (s may be a strided view). Returns s."""

    def piece(s):
        s /= exp_rows_(s)

    parallel(piece, s)  # inline on CuPy, where exp_rows_ is one fused kernel plus the reductions
    return s


def exp_rows_(s):
    """s <- exp(s - row max) in place (s may be a strided view); returns the row sums (..., 1).

    ``softmax_`` divides s by them; dense inference attention divides its (smaller) output instead.
    Single-threaded: it runs inside a ``parallel`` piece."""
    xp = array_module(s)
    m = s.max(axis=-1, keepdims=True)
    if _is_cupy(xp):
        _cupy_kernel("exp_sub", s.dtype)(m, s)
    else:
        s -= m
        xp.exp(s, out=s)
    return s.sum(axis=-1, keepdims=True, dtype=_stat_dtype(xp, s.dtype))


def log_softmax(x):
    """``layers.log_softmax`` (x - max - log(sum(exp(x - max))) over the last axis) with the rows cut
    across threads, writing z = x - max straight into the result: the loss's (B, T, V) logits are
    the largest array of a training step. Any (..., V)."""
    xp = array_module(x)
    if _is_cupy(xp):
        z = x - x.max(axis=-1, keepdims=True)
        return z - xp.log(xp.exp(z).sum(axis=-1, keepdims=True))
    out = xp.empty_like(x)

    def piece(x, out):
        xp.subtract(x, x.max(axis=-1, keepdims=True), out=out)
        out -= xp.log(xp.exp(out).sum(axis=-1, keepdims=True))

    parallel(piece, x, out)
    return out
