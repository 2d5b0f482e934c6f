"""One-row products, x (1, C_in) @ w (C_in, C_out): all a cached generation step multiplies.

Each only streams its matrix from memory, so a step's speed is the rate at which a kernel reads the
weights. On one thread NumPy has two such kernels, OpenBLAS's matrix-vector product and its own
loop (``vecmat``), and neither is faster on every machine, so ``tune_one_row`` times both on a
model's own matrices and ``kernels.linear`` takes the faster one for each shape. On two or more
threads the BLAS's own threads stream fastest, from matrices laid out for it (``gemv_layout``).
"""
from __future__ import annotations

import math
import time

import numpy as np

from .threads import get_num_threads, parallel


def vecmat_streams_faster(x, w) -> bool:
    """Whether ``kernels.linear`` computes x @ w with ``vecmat``: one row on one thread, NumPy arrays of the
    same float dtype, w contiguous (C- or F-order), and ``tune_one_row`` measured vecmat faster than
    the BLAS for w's shape, layout and dtype on this machine. Unmeasured: the BLAS."""
    return (x.ndim == 2 and x.shape[0] == 1 and isinstance(x, np.ndarray) and isinstance(w, np.ndarray)
            and w.ndim == 2 and x.dtype == w.dtype and x.dtype in (np.float32, np.float64)
            and (w.flags.c_contiguous or w.flags.f_contiguous)
            and get_num_threads() == 1 and ONE_ROW_VECMAT.get(_one_row_key(w), False))


# Which kernel makes a one-row product on one thread, measured per (shape, dtype, layout) of w:
# {key: True for vecmat, False for the BLAS}. Neither wins on every machine (bench/RESULTS.md, issue
# 24): on an AMD EPYC (Zen 4) NumPy's loop read the unembedding's wte.T at 16-22 GB/s against
# OpenBLAS's 12-16; on an Intel Xeon the BLAS read every GPT-2 shape faster (15-25 against 12-21).
ONE_ROW_VECMAT: dict = {}


def blas_row(x, w):
    """x (1, C_in) @ w (C_in, C_out) by the BLAS: ``tune_one_row``'s other candidate."""
    return np.matmul(x, w)


def _one_row_key(w) -> tuple:
    return (w.shape, w.dtype.str, "C" if w.flags.c_contiguous else "F")


def tune_one_row(ws, rounds: int = 3, clock=None) -> dict:
    """Measure which kernel, ``vecmat`` or the BLAS, makes one-row products x (1, C_in) @ w faster here.

    ws: the matrices a generation step multiplies, in the order it does (each (C_in, C_out), NumPy).
    Runs only on one thread (``vecmat_streams_faster``'s other case). Each round times every matrix
    once with each kernel, in that order, so a matrix is read with as much else in between as in a
    real step (not from cache), and each shape's total is summed over its matrices; the faster
    kernel by the best of ``rounds`` is recorded in ``ONE_ROW_VECMAT`` for that shape, layout and
    dtype. Shapes measured before are skipped. About 2 x ``rounds`` steps' time (0.2 s for GPT-2
    124M), once per process. Returns {key: chose vecmat} for the shapes among ws.
    """
    clock = clock or time.perf_counter
    if get_num_threads() != 1:
        return {}
    ws = [w for w in ws if isinstance(w, np.ndarray) and w.ndim == 2 and w.dtype in (np.float32, np.float64)
          and (w.flags.c_contiguous or w.flags.f_contiguous)]
    keys = {_one_row_key(w) for w in ws}
    todo = [w for w in ws if _one_row_key(w) not in ONE_ROW_VECMAT]
    new = {_one_row_key(w) for w in todo}
    xs = {(w.shape[0], w.dtype): np.ones((1, w.shape[0]), w.dtype) for w in todo}
    best = dict.fromkeys([(k, use) for k in new for use in (True, False)], math.inf)  # seconds a round
    for _ in range(rounds):
        for use in (True, False):
            total = dict.fromkeys(new, 0.0)
            for w in todo:
                x = xs[w.shape[0], w.dtype]
                t = clock()
                vecmat(x, w) if use else blas_row(x, w)
                total[_one_row_key(w)] += clock() - t
            for k, t in total.items():
                best[k, use] = min(best[k, use], t)
    for k in new:
        ONE_ROW_VECMAT[k] = best[k, True] < best[k, False]
    return {k: ONE_ROW_VECMAT[k] for k in keys}


def vecmat(x, w, out=None):
    """One row times a matrix with NumPy's own loop, no BLAS: x (1, C_in) @ w (C_in, C_out) -> (1, C_out).

    For a C-order w it adds the rows of w, each scaled by its element of x; for an F-order w it
    takes one dot product per column of w. Either way w is read once, in the order it is stored.
    The sums agree with ``x @ w`` to float round-off (added in another order), and, unlike the BLAS,
    they do not depend on the thread count.
    """
    return np.einsum("nc,co->no", x, w, out=out, optimize=False)  # optimize=False: no BLAS inside


def gemv_layout(w):
    """w: (C_in, C_out) -> the same matrix, stored the way a product with one row of x reads it fastest.

    A generation step multiplies one row by every weight matrix, so its speed is the rate at which
    the BLAS streams each matrix from memory, and OpenBLAS streams a row-major matrix fastest when
    its rows are the longer side. Measured on the course's 2-core AMD EPYC (bench/RESULTS.md, issue
    24): x @ w for the MLP's (3072, 768) c_proj ran at 9.7 GB/s on one thread and 16.8 on two, the
    same product from a (768, 3072) transposed copy at 14.5 and 24.5; the (768, 3072) c_fc ran
    fastest as it is. So a NumPy matrix with more rows than columns comes back as ``copy.T``: the same
    shape and values (F-contiguous), which ``matmul`` hands to the BLAS as a transposed matrix; any
    other array comes back unchanged, and so does every array on one thread, where ``linear`` runs
    the faster of ``vecmat`` and the BLAS on the matrix as it is (``tune_one_row``). The copy costs
    about as much as reading the matrix 2-3 times, so it pays only over many steps
    (``generate.DECODE_LAYOUT_MIN_STEPS``).
    """
    if (not isinstance(w, np.ndarray) or w.ndim != 2
            or w.shape[0] <= w.shape[1] or not w.flags.c_contiguous
            or get_num_threads() == 1):  # one core: no copy (tune_one_row picks the kernel)
        return w
    out = np.empty(w.shape[::-1], dtype=w.dtype)

    def rows(dst, src):
        dst[...] = src

    parallel(rows, out.T, w)  # the copy, cut by rows across the cores (50 against 120 ms for GPT-2 124M's)
    return out.T
