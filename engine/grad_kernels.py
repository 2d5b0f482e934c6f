"""The backward passes' speed tricks: the gradients of GELU, LayerNorm, softmax and the loss in as
few passes over memory as possible, cut across threads.

Each computes exactly the formula written in the backward it serves (``layers.gelu_backward``,
``layers.layernorm_backward``, ``attention._softmax_backward``, ``losses.cross_entropy_backward``),
which ``tests/test_kernels.py`` checks it against, on random inputs and against central
differences. As in ``kernels``: NumPy code with ``out=`` and in-place operations, pieces run by
``threads.parallel``; on CuPy the plain expression (CuPy runs each operator as one kernel).
"""
from __future__ import annotations

import numpy as np

from .backend import array_module
from .kernels import GELU_A, GELU_C, _is_cupy, parallel


def gelu_grad(dy, x, t):
    """dy * GELU'(x), given t = tanh(u) from ``gelu``: the formula of ``layers.gelu_backward``,
    0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 a x^2), with one scratch buffer per piece and
    the pieces cut across threads. dy, x, t: the same shape."""
    xp = array_module(x)
    if _is_cupy(xp):  # the plain expression, as before (CuPy runs one kernel per operator)
        return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * (GELU_C * (1.0 + 3 * GELU_A * x * x)))
    dt = x.dtype.type
    out = xp.empty_like(dy)

    def piece(dy, x, t, out):
        w = xp.multiply(x, x)
        w *= dt(3 * GELU_A)
        w += dt(1.0)
        w *= dt(0.5 * GELU_C)
        w *= x  # 0.5 x sqrt(2/pi) (1 + 3 a x^2)
        xp.multiply(t, t, out=out)
        xp.subtract(dt(1.0), out, out=out)
        out *= w
        out += dt(0.5)
        xp.multiply(t, dt(0.5), out=w)
        out += w
        out *= dy

    parallel(piece, dy, x, t, out)
    return out


def softmax_minus(logp, scale, *targets):
    """The gradient of a cross-entropy with respect to the logits: (exp(logp) - q) * scale.

    logp: (..., V) log-probabilities; scale: (..., 1); ``targets``: pairs ``idx, w`` of (..., k) token
    ids (distinct within a row) and their weights, which q puts on those ids (pairs add up, so
    an id may appear in two pairs). Rows are cut across threads; each piece exponentiates,
    subtracts and scales its rows while they are in cache. -> (..., V)"""
    xp = array_module(logp)
    if _is_cupy(xp):  # CuPy: the whole array at once, fancy indexing on the flat rows
        out = xp.exp(logp)
        V = out.shape[-1]
        flat = out.reshape(-1, V)
        for idx, w in zip(targets[::2], targets[1::2]):
            k = idx.shape[-1]
            flat[xp.repeat(xp.arange(flat.shape[0]), k), idx.reshape(-1)] -= w.reshape(-1)
        out *= scale
        return out
    out = xp.empty_like(logp)

    def piece(logp, scale, out, *targets):
        xp.exp(logp, out=out)
        for idx, w in zip(targets[::2], targets[1::2]):
            picked = xp.take_along_axis(out, idx, axis=-1)
            picked -= w
            xp.put_along_axis(out, idx, picked, axis=-1)
        out *= scale

    parallel(piece, logp, scale, out, *targets)
    return out


def softmax_grad_(dp, p):
    """A row softmax's backward, in place: dp <- p (dp - sum(dp p)) over the last axis (the formula of
    ``attention._softmax_backward``), the rows cut across threads. dp, p: (..., T) (dp may be a
    strided view); returns dp."""
    xp = array_module(dp)
    if _is_cupy(xp):
        dp -= (dp * p).sum(axis=-1, keepdims=True)
        dp *= p
        return dp

    def piece(dp, p):
        dp -= xp.multiply(dp, p).sum(axis=-1, keepdims=True)
        dp *= p

    parallel(piece, dp, p)
    return dp


def layernorm_grad(dy, xhat, rstd, g):
    """LayerNorm's backward (the formula of ``layers.layernorm_backward``):
    dx = rstd (dy g - mean(dy g) - xhat mean(dy g xhat)), dg = sum(dy xhat), db = sum(dy) over rows.

    The rows are cut across threads, and the two row sums of products with g are ``einsum``
    contractions (no product array, and each row summed the same way whatever the cut); dg and db
    are then sums of the rows as products with a vector of ones, which the BLAS runs 3-4x faster
    than NumPy's column sum. dy, xhat: (..., C); rstd: (..., 1); g: (C,) -> (dx, dg (C,), db (C,))."""
    xp = array_module(dy)
    C = dy.shape[-1]
    if _is_cupy(xp) or dy.dtype.itemsize < 4:  # float16: the plain formula (einsum would sum in float16)
        red = tuple(range(dy.ndim - 1))
        dxhat = dy * g
        dx = rstd * (dxhat - dxhat.mean(axis=-1, keepdims=True)
                     - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
        return dx, (dy * xhat).sum(axis=red), dy.sum(axis=red)
    dt = dy.dtype.type
    dx, w = xp.empty_like(dy), xp.empty_like(dy)  # w: dy * xhat, kept for dg

    def piece(dy, xhat, rstd, dx, w):
        xp.multiply(dy, xhat, out=w)
        b = np.einsum("...c,c->...", w, g)[..., None]  # sum(dy g xhat): (..., 1)
        b *= dt(1.0 / C)
        a = np.einsum("...c,c->...", dy, g)[..., None]  # sum(dy g)
        a *= dt(1.0 / C)
        xp.multiply(dy, g, out=dx)
        dx -= a
        dx -= xhat * b
        dx *= rstd

    parallel(piece, dy, xhat, rstd, dx, w)
    return dx, column_sums(w), column_sums(dy)


def column_sums(x):
    """x: (..., C) -> (C,): the sum over every leading axis, as ones @ x on NumPy (the BLAS's
    matrix-vector product streams the rows 3-4x faster than ``x.sum(axis=0)``)."""
    xp = array_module(x)
    x2 = x.reshape(-1, x.shape[-1])
    if _is_cupy(xp) or x.dtype.itemsize < 4:
        return x2.sum(axis=0)
    return _ones(x2.shape[0], x.dtype) @ x2


_ONES: dict = {}


def _ones(n: int, dtype):
    v = _ONES.get((n, np.dtype(dtype)))
    if v is None:
        if len(_ONES) > 32:
            _ONES.clear()
        v = _ONES[(n, np.dtype(dtype))] = np.ones(n, dtype=dtype)
    return v
