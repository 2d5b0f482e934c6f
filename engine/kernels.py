"""Speed tricks behind the layers: GELU, LayerNorm and softmax with as few passes over memory as possible.

Each function is the same formula as the readable version in ``layers.py`` /
``attention.py``. On NumPy it is written with ``out=`` and in-place operations
so that no temporary arrays are made; on CuPy it runs as one fused GPU kernel
(``cupy.ElementwiseKernel`` / ``cupy.ReductionKernel``) where NumPy-style code
would launch one kernel, and read and write the whole array, per operator.
The choice is made here, from the array's module, so the model code has no
``if cupy:`` branches. Half-precision inputs are computed in float32 inside
the kernels; float64 in double.

On NumPy, large passes are also cut into pieces along a leading axis and run on
``get_num_threads()`` threads (NumPy releases the GIL inside its loops and the
BLAS): the element-wise passes, the rows of the linear layers and the heads of
attention. While pieces that call the BLAS run, the BLAS is set to one thread,
so the engine, not the BLAS, decides how the cores are shared; a multi-threaded
BLAS left to itself keeps its worker threads spinning after every call, and they
would take a core from whatever runs next.
"""
from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np

from .backend import array_module

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


# ---------------------------------------------------------------------- threads for element-wise passes
_NUM_THREADS: int | None = None
_DEFAULT_THREADS: int | None = None
_POOL = None
_POOL_LOCK = threading.Lock()
MIN_PARALLEL = 1 << 17  # elements: below this, starting threads costs more than it saves


def get_num_threads() -> int:
    """Threads for NumPy element-wise passes: ``set_num_threads``, else $ENGINE_NUM_THREADS, else the
    BLAS variables ($OPENBLAS_NUM_THREADS, $OMP_NUM_THREADS, $MKL_NUM_THREADS), else the usable cores
    (the variables are read on first use)."""
    global _DEFAULT_THREADS
    if _NUM_THREADS is not None:
        return _NUM_THREADS
    if _DEFAULT_THREADS is None:  # read once: this runs for every LayerNorm, GELU and softmax
        _DEFAULT_THREADS = _threads_from_environment()
    return _DEFAULT_THREADS


def _threads_from_environment() -> int:
    for var in ("ENGINE_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        v = os.environ.get(var, "").strip()
        if v.isdigit() and int(v) > 0:
            return int(v)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_num_threads(n: int | None) -> None:
    """Use ``n`` threads for element-wise passes (None: back to the default of ``get_num_threads``)."""
    global _NUM_THREADS
    if n is not None and (not isinstance(n, int) or n < 1):
        raise ValueError(f"the number of threads must be a positive integer, got {n!r}")
    _NUM_THREADS = n


def _pool(n: int):
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < n:
            _POOL = ThreadPoolExecutor(n, thread_name_prefix="engine-kernels")
        return _POOL


_BUSY = False  # the main thread is inside ``parallel``: a nested call runs inline
_BLAS = None  # threadpoolctl controllers of the BLAS libraries loaded (found on first use)


def _blas_controllers() -> list:
    global _BLAS
    if _BLAS is None:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
        except Exception:  # no threadpoolctl, or a BLAS it cannot drive: pieces stay serial
            _BLAS = []
    return _BLAS


def parallel(fn, *arrays, blas: bool = False, axes: int | None = None) -> None:
    """Run ``fn(*pieces)`` on pieces of ``arrays`` cut along one leading axis (never the last), in threads.

    The arrays share their leading shape; ``fn`` writes its results into them (or into views of
    arrays it closes over, cut the same way). Every element is computed by the same code whatever
    the cut, so the result is identical to ``fn(*arrays)``. Runs inline when small, single-threaded,
    not on NumPy, nested in another ``parallel``, or called from a thread other than the main one
    (the trainer's workers already fill the cores).

    ``axes``: cut only along one of the first ``axes`` axes (2: batch or head, when the other axes
    must stay whole). ``blas=True``: ``fn`` makes many small matrix products (attention, head by
    head), which a multi-threaded BLAS runs poorly (it splits each small matrix and synchronises its
    threads every call); the BLAS is then set to one thread while the pieces run, so the cores go
    to the pieces instead.
    """
    global _BUSY
    a = arrays[0]
    if a.size < MIN_PARALLEL or not isinstance(a, np.ndarray):  # generation: one token at a time
        fn(*arrays)
        return
    n = get_num_threads()
    axis = next((i for i, d in enumerate(a.shape[:-1][:axes]) if d >= n), None)
    if (n <= 1 or axis is None or _BUSY or (blas and not _blas_controllers())
            or threading.current_thread() is not threading.main_thread()):
        fn(*arrays)
        return
    edges = np.linspace(0, a.shape[axis], n + 1).astype(int)
    pieces = [tuple(x[(slice(None),) * axis + (slice(lo, hi),)] for x in arrays)
              for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]
    saved = [(c, c.num_threads) for c in _blas_controllers()] if blas else []
    _BUSY = True
    try:
        for c, _ in saved:
            c.set_num_threads(1)
        futures = [_pool(n).submit(fn, *piece) for piece in pieces[1:]]
        try:
            fn(*pieces[0])
        finally:
            wait(futures)  # every piece has stopped before the BLAS gets its threads back
        for f in futures:
            f.result()  # re-raises a piece's exception
    finally:
        for c, k in saved:
            c.set_num_threads(k)
        _BUSY = False


# ---------------------------------------------------------------------- memory
MMAP_THRESHOLD = 32 << 20  # bytes: glibc's own ceiling for the threshold it adapts by itself
TRIM_THRESHOLD = 1 << 30  # bytes of free memory kept at the top of the heap before it is returned
_MALLOC_TUNED = None


def reuse_freed_memory(env: str | None = None) -> bool:
    """Have glibc's malloc keep the memory freed arrays leave behind for the next arrays. Returns whether it did.

    A forward or a backward pass allocates each layer's outputs afresh (a few MB each). By default
    glibc hands blocks that large back to the operating system as soon as they are freed (a
    separate mapping per block, or a heap it trims), so the next layer, and the next step, take
    new pages: a page fault and a page of zeroing every 4 KiB, on every pass. Serving blocks up to
    32 MB from the heap (``M_MMAP_THRESHOLD``) and keeping up to 1 GiB of freed memory in it
    (``M_TRIM_THRESHOLD``) turns that into reuse: on two cores a training step of the course model
    on one thread took 0.86-0.92 s instead of 1.18-1.35 s (medians of 10, same machine, minutes
    apart). The price: memory a pass has freed stays with the process (for reuse) instead of going
    back to the system.

    ``import engine`` calls this once. $ENGINE_MALLOC=system (or ``env="system"``) leaves malloc
    alone. Elsewhere than glibc (macOS, Windows, musl) it does nothing and returns False.
    """
    global _MALLOC_TUNED
    env = os.environ.get("ENGINE_MALLOC", "") if env is None else env
    if env.strip().lower() == "system":
        return False
    if _MALLOC_TUNED is None:
        _MALLOC_TUNED = False
        try:
            import ctypes
            import platform

            if platform.libc_ver()[0] == "glibc":
                libc = ctypes.CDLL("libc.so.6")
                m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
                mmap_set = libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD)
                trim_set = libc.mallopt(m_trim_threshold, TRIM_THRESHOLD)
                _MALLOC_TUNED = bool(mmap_set and trim_set)
        except (OSError, AttributeError):  # no libc.so.6 or no mallopt in it
            pass
    return _MALLOC_TUNED


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

    On NumPy the rows are cut across ``get_num_threads()`` threads, each running the BLAS on one
    thread, and the bias is added by the thread that computed the rows (while they are in cache).
    Letting the BLAS thread one big product instead costs more than it looks: after each call its
    worker threads spin for a while, and take a core from the element-wise passes and the attention
    that come next. Rows do not depend on each other, so the cut does not change the arithmetic.
    """
    xp = array_module(x)
    y = xp.empty((x.shape[0], w.shape[1]), dtype=xp.result_type(x, w))

    def rows(x, y):
        xp.matmul(x, w, out=y)
        if b is not None:
            y += b

    parallel(rows, x, y, blas=True)
    return y


def causal_block(xp, T: int) -> int:
    """Query-block size for causal attention: small tiles on the CPU (half the work, cache-sized
    scores); one tile on a GPU, where every extra tile is more kernel launches."""
    return T if _is_cupy(xp) else min(T, 128)


# ---------------------------------------------------------------------- GELU
def gelu(x):
    """GELU, tanh form: returns (0.5 x (1 + t), t) with t = tanh(sqrt(2/pi) (x + 0.044715 x^3)). Any shape."""
    xp = array_module(x)
    if _is_cupy(xp):
        return _cupy_kernel("gelu", x.dtype)(x)
    dt = x.dtype.type
    out, t = xp.empty_like(x), xp.empty_like(x)

    # 0.5 x (1 + tanh(u)) = x / (1 + exp(-2u)): NumPy's exp is vectorised and about twice as fast
    # as its tanh here, so go through exp and recover t = tanh(u) = 2 / (1 + exp(-2u)) - 1.
    def piece(x, out, t):
        xp.multiply(x, x, out=t)
        t *= dt(GELU_A)
        t += dt(1.0)
        t *= x  # x + a x^3
        t *= dt(-2.0 * GELU_C)  # -2u
        with np.errstate(over="ignore"):  # exp -> inf for very negative x: GELU -> -0, t -> -1, both right
            xp.exp(t, out=t)
        t += dt(1.0)
        xp.divide(x, t, out=out)
        xp.divide(dt(2.0), t, out=t)
        t -= dt(1.0)

    parallel(piece, x, out, t)
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
