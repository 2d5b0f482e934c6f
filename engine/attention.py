"""Chapter 6, Sparse attention: which earlier tokens each token may look at, and what that costs.

Four layouts, all causal (a token never sees the future):

* ``dense``: token i sees every j <= i. Cost grows as T^2.
* ``banded`` (GPT-3's "locally banded"): token i sees the last ``window`` positions,
  itself included: i - window < j <= i. Cost grows as T x window.
* ``strided`` (Sparse Transformer, Child et al. 2019): the last ``stride`` positions,
  plus every position a multiple of ``stride`` back: (i - j) mod stride == 0.
* ``fixed`` (Sparse Transformer): every position in i's own block of ``stride``, plus
  the last ``c`` positions ("summary" cells) of every earlier block.

``attention_mask`` draws a layout as a boolean (T, T) matrix for the book. The
attention functions below never build that matrix for the sparse layouts: they
compute only the scores the mask keeps, so banded costs O(T x window) and the
Sparse Transformer's patterns O(T x sqrt(T)) when stride ~ sqrt(T).

Shapes: q, k, v are (B, H, T, D): batch, heads, positions, head size.
Every ``*_forward`` returns ``(out, cache)``; the matching ``*_backward`` takes
``(dout, cache)`` and returns the gradients of its inputs.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from . import grad_kernels, kernels
from .backend import array_module, as_strided

LAYOUTS = ("dense", "banded", "strided", "fixed")


# ---------------------------------------------------------------------- caches
class DenseCache(NamedTuple):
    q: object       # (B, H, Tq, D)
    k: object       # (B, H, Tk, D)
    v: object       # (B, H, Tk, D)
    p: object       # (B, H, Tq, Tk) attention weights (zero where masked)
    scale: float    # 1 / sqrt(D)


class BandedCache(NamedTuple):
    qb: object      # (B, H, nb, b, D) queries in blocks of b
    kw: object      # (B, H, nb, S, D) each block's window of keys (overlapping views)
    vw: object      # (B, H, nb, S, D) the same for values
    p: object       # (B, H, nb, b, S) attention weights
    scale: float
    T: int          # positions
    window: int
    b: int          # query block size
    nb: int         # number of blocks
    P: int          # window - 1: left padding of the keys
    S: int          # b + P: keys per block


class GatheredCache(NamedTuple):
    q: object       # (B, H, T, D)
    kg: object      # (B, H, T, K, D) keys gathered per query
    vg: object      # (B, H, T, K, D)
    p: object       # (B, H, T, K) attention weights over the gathered keys
    scale: float
    idx: object     # (T, K) key positions (sparse_index)


class AttentionCache(NamedTuple):
    layout: str     # which backward to run
    inner: object   # DenseCache, BandedCache, GatheredCache, an AttentionCache (banded as dense), or None


# ---------------------------------------------------------------------- masks
def keep(layout: str, i, j, window: int = 256, stride: int = 32, c: int = 8):
    """Elementwise: may query position ``i`` attend to key position ``j``? (broadcasts)."""
    causal = j <= i
    if layout == "dense":
        return causal
    if layout == "banded":
        return causal & (i - j < window)
    if layout == "strided":
        return causal & ((i - j < stride) | ((i - j) % stride == 0))
    if layout == "fixed":
        return causal & ((j // stride == i // stride) | (j % stride >= stride - c))
    raise ValueError(f"unknown attention layout {layout!r}; choose from {LAYOUTS}")


def attention_mask(layout: str, T: int, window: int = 256, stride: int = 32, c: int = 8) -> np.ndarray:
    """The layout as a boolean matrix: ``mask[i, j]`` is True where query i sees key j. Shape (T, T)."""
    if T < 1:
        raise ValueError(f"T must be at least 1, got {T}")
    i = np.arange(T)[:, None]
    j = np.arange(T)[None, :]
    return np.asarray(keep(layout, i, j, window, stride, c))


def _softmax_(s, xp):
    """Row softmax over the last axis, in place (s is a fresh scores array, or a view of one).

    s - max, exp, / sum: ``kernels.softmax_`` (fused on a GPU)."""
    return kernels.softmax_(s)


def _softmax_backward(dp, p):
    """Gradient of a row softmax: p * (dp - sum(dp * p)), written over dp (a fresh array at every caller):
    ``grad_kernels.softmax_grad_``, the rows cut across cores."""
    return grad_kernels.softmax_grad_(dp, p)


_BIAS_CACHE: dict = {}


def _bias(key, xp, dtype, build):
    """Additive 0 / -inf bias, built once per (layout, size, dtype, backend) and reused."""
    k = (key, xp.__name__, np.dtype(dtype).str)
    b = _BIAS_CACHE.get(k)
    if b is None:
        m = build()
        b = xp.asarray(np.where(m, 0.0, -np.inf).astype(dtype))
        if len(_BIAS_CACHE) > 64:
            _BIAS_CACHE.clear()
        _BIAS_CACHE[k] = b
    return b


# ---------------------------------------------------------------------- dense
def masked_attention_forward(q, k, v, bias):
    """Attention with an explicit additive bias (Tq, Tk) of 0 / -inf (None: every key visible).

    Returns (out, cache)."""
    xp = array_module(q)
    scale = 1.0 / math.sqrt(q.shape[-1])
    s = kernels.bmm(q * q.dtype.type(scale), k.swapaxes(-1, -2))  # (B, H, Tq, Tk)
    if bias is not None:
        s += bias
    p = _softmax_(s, xp)
    out = kernels.bmm(p, v)
    return out, DenseCache(q, k, v, p, scale)


def masked_attention_backward(dout, cache):
    """Gradients (dq, dk, dv) of ``masked_attention_forward``: dout (B, H, Tq, D) -> q's, k's, v's shapes."""
    q, k, v, p, scale = cache
    xp = array_module(dout)
    if not (q.shape[:2] == k.shape[:2] == v.shape[:2] == p.shape[:2] == dout.shape[:2]):  # broadcast heads
        dv = xp.matmul(p.swapaxes(-1, -2), dout)
        dp = xp.matmul(dout, v.swapaxes(-1, -2))
        ds = _softmax_backward(dp, p)
        return xp.matmul(ds, k) * scale, xp.matmul(ds.swapaxes(-1, -2), q) * scale, dv
    dq, dk, dv = xp.empty_like(q), xp.empty_like(k), xp.empty_like(v)

    def heads(dout, q, k, v, p, dq, dk, dv):  # some (batch, head) pairs; all of them on one thread
        xp.matmul(p.swapaxes(-1, -2), dout, out=dv)
        ds = _softmax_backward(xp.matmul(dout, v.swapaxes(-1, -2)), p)  # (B, H, Tq, Tk)
        xp.matmul(ds, k, out=dq)
        dq *= dq.dtype.type(scale)
        xp.matmul(ds.swapaxes(-1, -2), q, out=dk)
        dk *= dk.dtype.type(scale)

    kernels.parallel(heads, dout, q, k, v, p, dq, dk, dv, blas=True, axes=2)  # pairs across cores
    return dq, dk, dv


def dense_attention_forward(q, k, v, block: int | None = None, for_backward: bool = True):
    """Causal attention over all earlier positions. q, k, v: (B, H, T, D) -> out (B, H, T, D).

    Queries go in blocks of ``block`` rows and block n scores only keys 0 .. its last row:
    the scores above the diagonal, which the causal mask would zero, are never computed,
    roughly halving the work. The probabilities land in a zeroed (B, H, T, T) array, so
    the cache is exactly the full causal softmax that ``masked_attention_backward`` expects.
    With ``for_backward=False`` (inference) nothing is kept: see ``_dense_attention_inference``.
    """
    xp = array_module(q)
    B, H, T, D = q.shape
    scale = 1.0 / math.sqrt(D)
    qs = q * q.dtype.type(scale)
    out = xp.empty_like(q)
    b = min(block, T) if block else kernels.causal_block(xp, T)
    diag = _bias(("dense", b), xp, q.dtype, lambda: attention_mask("dense", b))  # the diagonal tile's mask
    if not for_backward:
        _dense_attention_inference(qs, k, v, out, b, diag)
        return out, None
    p = xp.zeros((B, H, T, T), dtype=q.dtype)

    def heads(qs, k, v, p, out):  # some of the (batch, head) pairs; all of them on one thread
        kT = k.swapaxes(-1, -2)
        for r0 in range(0, T, b):
            r1 = min(T, r0 + b)
            s = p[..., r0:r1, :r1]  # a view: scores are written straight into the cache
            kernels.bmm(qs[..., r0:r1, :], kT[..., :r1], out=s)
            s[..., r0:r1] += diag[:r1 - r0, :r1 - r0]
            _softmax_(s, xp)
            kernels.bmm(s, v[..., :r1, :], out=out[..., r0:r1, :])

    kernels.parallel(heads, qs, k, v, p, out, blas=True, axes=2)  # (batch, head) pairs across cores
    return out, DenseCache(q, k, v, p, scale)


def _dense_attention_inference(qs, k, v, out, b, diag):
    """The same tiles without a backward pass to serve: each thread scores one tile at a time in a
    small contiguous buffer, and leaves the softmax unnormalised until after the product with v,
    dividing the (b, D) output rows instead of the (b, T) probabilities: one pass fewer over the
    scores, and no (B, H, T, T) array. qs: (B, H, T, D) already scaled by 1/sqrt(D); writes ``out``."""
    xp = array_module(qs)
    T = qs.shape[-2]

    def heads(qs, k, v, out):
        lead = qs.shape[:-2]
        buf = xp.empty(math.prod(lead) * b * T, dtype=qs.dtype)
        kT = k.swapaxes(-1, -2)
        for r0 in range(0, T, b):
            r1 = min(T, r0 + b)
            s = buf[:math.prod(lead) * (r1 - r0) * r1].reshape(*lead, r1 - r0, r1)
            kernels.bmm(qs[..., r0:r1, :], kT[..., :r1], out=s)
            s[..., r0:r1] += diag[:r1 - r0, :r1 - r0]
            total = kernels.exp_rows_(s)  # exp(s - row max), and the row sums
            o = out[..., r0:r1, :]
            kernels.bmm(s, v[..., :r1, :], out=o)
            o /= total

    kernels.parallel(heads, qs, k, v, out, blas=True, axes=2)


dense_attention_backward = masked_attention_backward


# ---------------------------------------------------------------------- banded
def _band_geometry(T, window, block):
    b = block or max(1, min(T, window // 4))
    nb = -(-T // b)
    P = window - 1  # keys padded on the left so that block n's keys start at padded index n*b
    return b, nb, P, b + P


def _band_bias(T, window, b, nb, P, S):
    r = np.arange(b)[None, :, None]
    s = np.arange(S)[None, None, :]
    n = np.arange(nb)[:, None, None]
    return (s >= r) & (s <= r + P) & (n * b + s - P >= 0)  # in the band, and a real key


def _windows(xp, x_padded, nb, b, S):
    """View (B, H, P + nb*b, D) as overlapping windows (B, H, nb, S, D), block n starting at n*b."""
    s0, s1, s2, s3 = x_padded.strides
    B, H, _, D = x_padded.shape
    return as_strided(xp, x_padded, (B, H, nb, S, D), (s0, s1, b * s2, s2, s3))


def banded_attention_forward(q, k, v, window: int, block: int | None = None):
    """Locally banded causal attention: query i sees keys i-window+1 .. i.

    Queries are cut into blocks of ``block`` positions; a block needs only the
    ``block + window - 1`` keys that end at its last query, so the work is
    T x (window + block) instead of T^2 / 2. q, k, v: (B, H, T, D) -> (B, H, T, D).
    """
    xp = array_module(q)
    B, H, T, D = q.shape
    if window >= T:  # the band covers everything: plain causal attention
        out, cache = dense_attention_forward(q, k, v)
        return out, AttentionCache("dense", cache)
    b, nb, P, S = _band_geometry(T, window, block)
    Tp = nb * b
    kp = xp.zeros((B, H, P + Tp, D), dtype=k.dtype)
    vp = xp.zeros((B, H, P + Tp, D), dtype=v.dtype)
    kp[:, :, P:P + T] = k
    vp[:, :, P:P + T] = v
    kw = _windows(xp, kp, nb, b, S)
    vw = _windows(xp, vp, nb, b, S)
    if Tp != T:
        qp = xp.zeros((B, H, Tp, D), dtype=q.dtype)
        qp[:, :, :T] = q
    else:
        qp = q
    qb = qp.reshape(B, H, nb, b, D)
    scale = 1.0 / math.sqrt(D)
    s = kernels.bmm(qb * q.dtype.type(scale), kw.swapaxes(-1, -2))  # (B, H, nb, b, S)
    s += _bias(("banded", T, window, b), xp, q.dtype, lambda: _band_bias(T, window, b, nb, P, S))
    p = _softmax_(s, xp)
    out = kernels.bmm(p, vw).reshape(B, H, Tp, D)[:, :, :T]
    return out, AttentionCache("banded", BandedCache(qb, kw, vw, p, scale, T, window, b, nb, P, S))


def banded_attention_backward(dout, cache):
    layout, c = cache
    if layout == "dense":
        return dense_attention_backward(dout, c)
    qb, kw, vw, p, scale, T, window, b, nb, P, S = c
    xp = array_module(dout)
    B, H, _, D = dout.shape
    Tp = nb * b
    if Tp != T:
        dpad = xp.zeros((B, H, Tp, D), dtype=dout.dtype)
        dpad[:, :, :T] = dout
        dout = dpad
    doutb = dout.reshape(B, H, nb, b, D)
    dvw = kernels.matmul(p.swapaxes(-1, -2), doutb)  # (B, H, nb, S, D)
    dp = kernels.matmul(doutb, vw.swapaxes(-1, -2))
    ds = _softmax_backward(dp, p)
    dq = (kernels.matmul(ds, kw) * scale).reshape(B, H, Tp, D)[:, :, :T]
    dkw = kernels.matmul(ds.swapaxes(-1, -2), qb) * scale
    # The windows overlap: add every window's slice back where it came from. Windows
    # are S long and start every b positions, so chunk m of each window lands at
    # n*b + m*b: a loop over the S/b chunks, each a single vectorised add.
    dkp = xp.zeros((B, H, P + Tp + b, D), dtype=dout.dtype)
    dvp = xp.zeros_like(dkp)
    for m in range(-(-S // b)):
        lo, hi = m * b, min(S, (m + 1) * b)
        w = hi - lo
        dk_chunk = dkw[:, :, :, lo:hi]  # (B, H, nb, w, D)
        dv_chunk = dvw[:, :, :, lo:hi]
        if w < b:  # last, partial chunk: pad so that blocks tile contiguously
            pad = xp.zeros((B, H, nb, b - w, D), dtype=dout.dtype)
            dk_chunk = xp.concatenate([dk_chunk, pad], axis=3)
            dv_chunk = xp.concatenate([dv_chunk, pad], axis=3)
        dkp[:, :, lo:lo + Tp] += dk_chunk.reshape(B, H, Tp, D)
        dvp[:, :, lo:lo + Tp] += dv_chunk.reshape(B, H, Tp, D)
    return dq, dkp[:, :, P:P + T], dvp[:, :, P:P + T]


# ---------------------------------------------------------------------- strided / fixed
def sparse_index(layout: str, T: int, stride: int, c: int = 8):
    """Key positions each query attends to in the strided or fixed layout.

    Returns ``idx`` (T, K) int and ``valid`` (T, K) bool: query i attends to
    ``idx[i, valid[i]]``. K is stride + (T - 1) // stride (strided) or
    stride + c * ((T - 1) // stride) (fixed): about 2 sqrt(T) when stride ~ sqrt(T).
    """
    i = np.arange(T)[:, None]
    M = (T - 1) // stride
    if layout == "strided":
        local = i - np.arange(stride)[None, :]  # the last `stride` positions
        far = i - stride * np.arange(1, M + 1)[None, :]  # every stride-th one before them
        idx = np.concatenate([local, far], axis=1)
        valid = idx >= 0
    elif layout == "fixed":
        start = (i // stride) * stride
        local = start + np.arange(stride)[None, :]  # own block, up to i
        blocks = np.arange(M)[:, None] * stride + (stride - c) + np.arange(c)[None, :]  # (M, c)
        summary = np.broadcast_to(blocks.reshape(1, -1), (T, M * c))
        idx = np.concatenate([local, summary], axis=1)
        valid = np.concatenate([local <= i, np.repeat(np.arange(M)[None, :] < i // stride, c, axis=1)], axis=1)
    else:
        raise ValueError(f"sparse_index is for 'strided' and 'fixed', got {layout!r}")
    idx = np.where(valid, idx, 0).astype(np.int64)
    return idx, valid


def gathered_attention_forward(q, k, v, layout: str, stride: int, c: int = 8):
    """Strided or fixed attention, computed only on the kept (query, key) pairs.

    Keys and values are gathered per query: (B, H, T, K, D) with K ~ 2 sqrt(T).
    """
    xp = array_module(q)
    B, H, T, D = q.shape
    idx_np, valid_np = sparse_index(layout, T, stride, c)
    idx = xp.asarray(idx_np)
    bias = _bias((layout, T, stride, c), xp, q.dtype, lambda: valid_np)
    kg = k[:, :, idx]  # (B, H, T, K, D)
    vg = v[:, :, idx]
    scale = 1.0 / math.sqrt(D)
    s = xp.matmul(kg, (q * q.dtype.type(scale))[..., None])[..., 0]  # (B, H, T, K)
    s += bias
    p = _softmax_(s, xp)
    out = xp.matmul(p[..., None, :], vg)[..., 0, :]
    return out, GatheredCache(q, kg, vg, p, scale, idx)


def gathered_attention_backward(dout, cache):
    q, kg, vg, p, scale, idx = cache
    xp = array_module(dout)
    B, H, T, D = q.shape
    dvg = p[..., :, None] * dout[..., None, :]  # (B, H, T, K, D)
    dp = kernels.matmul(vg, dout[..., None])[..., 0]
    ds = _softmax_backward(dp, p)
    dq = kernels.matmul(ds[..., None, :], kg)[..., 0, :] * scale
    dkg = ds[..., :, None] * q[..., None, :] * scale
    # Scatter the per-query copies back onto key positions (invalid slots carry zero).
    dk = xp.zeros_like(q)
    dv = xp.zeros_like(q)
    flat = idx.reshape(-1)
    dk_t = dk.transpose(2, 0, 1, 3)  # (T, B, H, D) view: add.at along the position axis
    dv_t = dv.transpose(2, 0, 1, 3)
    xp.add.at(dk_t, flat, dkg.transpose(2, 3, 0, 1, 4).reshape(-1, B, H, D))
    xp.add.at(dv_t, flat, dvg.transpose(2, 3, 0, 1, 4).reshape(-1, B, H, D))
    return dq, dk, dv


# ---------------------------------------------------------------------- dispatch
def attention_forward(q, k, v, layout: str = "dense", window: int = 256, stride: int = 32, c: int = 8,
                      for_backward: bool = True):
    """Causal self-attention in any layout. q, k, v: (B, H, T, D) -> (out (B, H, T, D), cache).

    ``for_backward=False``: no backward pass will follow (inference), so the dense layout keeps no
    probabilities (its cache is None) and takes a faster path."""
    if layout == "dense":
        out, cache = dense_attention_forward(q, k, v, for_backward=for_backward)
    elif layout == "banded":
        out, cache = banded_attention_forward(q, k, v, window)
    elif layout in ("strided", "fixed"):
        out, cache = gathered_attention_forward(q, k, v, layout, stride, c)
    else:
        raise ValueError(f"unknown attention layout {layout!r}; choose from {LAYOUTS}")
    return out, AttentionCache(layout, cache)


def attention_backward(dout, cache):
    """Gradients (dq, dk, dv) of ``attention_forward``'s output."""
    layout, c = cache
    if layout == "dense":
        return dense_attention_backward(dout, c)
    if layout == "banded":
        return banded_attention_backward(dout, c)
    return gathered_attention_backward(dout, c)


def attention_probs(q, k, layout: str = "dense", window: int = 256, stride: int = 32, c: int = 8):
    """Full (B, H, T, T) attention weights, zero where the layout masks, for pictures (O(T^2))."""
    xp = array_module(q)
    T = q.shape[-2]
    bias = _bias(("full", layout, T, window, stride, c), xp, q.dtype,
                 lambda: attention_mask(layout, T, window, stride, c))
    s = xp.matmul(q * q.dtype.type(1.0 / math.sqrt(q.shape[-1])), k.swapaxes(-1, -2))
    s += bias
    return _softmax_(s, xp)


def cached_attention(q, k_cache, v_cache, t0: int, layout: str = "dense", window: int = 256,
                     stride: int = 32, c: int = 8):
    """Attention of new queries at positions t0 .. t0+Tq-1 over keys already in a KV cache.

    q: (B, H, Tq, D); k_cache, v_cache: (B, H, >= t0+Tq, D), holding keys 0 .. t0+Tq-1.
    Only the key range the layout can reach is read: the last ``window`` keys for banded.
    """
    xp = array_module(q)
    Tq = q.shape[-2]
    hi = t0 + Tq
    lo = max(0, t0 - window + 1) if layout == "banded" else 0
    k = k_cache[:, :, lo:hi]
    v = v_cache[:, :, lo:hi]
    if Tq == 1 and layout in ("dense", "banded"):
        bias = None  # one new query sees every key in lo .. t0: no mask to build or copy to the device
    else:
        m = keep(layout, np.arange(t0, hi)[:, None], np.arange(lo, hi)[None, :], window, stride, c)
        bias = xp.asarray(np.where(m, 0.0, -np.inf).astype(q.dtype))
    out, _ = masked_attention_forward(q, k, v, bias)
    return out
