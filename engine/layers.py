"""Chapter 5, Layers: the pieces of a decoder block, each a forward/backward pair.

As in llm.c, every ``*_forward`` returns its output and a cache of what its
backward needs; every ``*_backward`` takes the gradient of the output and that
cache, mirrors the forward line by line, and returns the gradients of the inputs
and of the parameters. Shapes: B batch, T positions, C = d_model channels,
H heads, D = C / H head size, V vocabulary.
"""
from __future__ import annotations

import math

import numpy as np

from .attention import attention_backward, attention_forward
from . import kernels
from .backend import array_module

GELU_C = math.sqrt(2.0 / math.pi)


# ---------------------------------------------------------------------- LayerNorm
def layernorm_forward(x, p, eps: float = 1e-5):
    """Normalise each position's C numbers to mean 0, variance 1, then scale by g and shift by b.

    x: (B, T, C); p: {"g": (C,), "b": (C,)} -> (B, T, C)
    """
    y, xhat, rstd = kernels.layernorm(x, p["g"], p["b"], eps)  # the formula above, fewer passes
    return y, (xhat, rstd, p["g"])


def layernorm_backward(dy, cache):
    xhat, rstd, g = cache
    red = tuple(range(dy.ndim - 1))
    dg = (dy * xhat).sum(axis=red)
    db = dy.sum(axis=red)
    dxhat = dy * g
    dx = rstd * (dxhat - dxhat.mean(axis=-1, keepdims=True) - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
    return dx, {"g": dg, "b": db}


# ---------------------------------------------------------------------- Linear
def linear_forward(x, p):
    """x @ w + b. x: (..., C_in); p: {"w": (C_in, C_out), "b": (C_out,)} -> (..., C_out)"""
    w = p["w"]
    # one 2-D product over all positions (B*T rows): a single GEMM on every backend
    y = kernels.linear(x.reshape(-1, x.shape[-1]), w, p["b"])  # x @ w + b, rows split across cores
    return y.reshape(*x.shape[:-1], w.shape[-1]), (x, w)


def unembed(x, wte):
    """Logits with the tied embedding: x @ wte.T as one 2-D product. x: (..., C); wte: (V, C) -> (..., V)"""
    return kernels.linear(x.reshape(-1, x.shape[-1]), wte.T).reshape(*x.shape[:-1], wte.shape[0])


def linear_backward(dy, cache):
    x, w = cache
    x2 = x.reshape(-1, x.shape[-1])
    dy2 = dy.reshape(-1, dy.shape[-1])
    return dy @ w.T, {"w": x2.T @ dy2, "b": dy2.sum(axis=0)}


# ---------------------------------------------------------------------- GELU
def gelu_forward(x):
    """GELU, tanh form as in GPT-2: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). Any shape.

    ``kernels.gelu`` computes it with two buffers and no temporaries (one fused kernel on a GPU).
    """
    out, t = kernels.gelu(x)
    return out, (x, t)


def gelu_backward(dy, cache):
    x, t = cache
    dinner = GELU_C * (1.0 + 3 * 0.044715 * x * x)
    return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dinner)


# ---------------------------------------------------------------------- heads
def split_heads(x, n_head):
    """(B, T, C) -> (B, H, T, D)"""
    B, T, C = x.shape
    return x.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)


def split_qkv(qkv, n_head):
    """(B, T, 3C) -> q, k, v, each (B, H, T, D): views into qkv, no copy."""
    B, T, C3 = qkv.shape
    return qkv.reshape(B, T, 3, n_head, C3 // (3 * n_head)).transpose(2, 0, 3, 1, 4)


def merge_heads(x):
    """(B, H, T, D) -> (B, T, C)"""
    B, H, T, D = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * D)


# ---------------------------------------------------------------------- attention sub-block
def self_attention_forward(x, p, n_head, layout="dense", window=256, stride=32, c=8, for_backward=True):
    """Multi-head causal self-attention: project to q, k, v, attend per head, merge, project.

    x: (B, T, C); p: {"c_attn": {w (C, 3C), b}, "c_proj": {w (C, C), b}} -> (B, T, C).
    ``for_backward=False``: inference, the attention keeps no probabilities for a backward pass.
    """
    qkv, c_attn = linear_forward(x, p["c_attn"])
    q, k, v = split_qkv(qkv, n_head)
    a, c_att = attention_forward(q, k, v, layout, window, stride, c, for_backward)
    y, c_proj = linear_forward(merge_heads(a), p["c_proj"])
    return y, (c_attn, c_att, c_proj, n_head)


def self_attention_backward(dy, cache):
    c_attn, c_att, c_proj, n_head = cache
    xp = array_module(dy)
    da, g_proj = linear_backward(dy, c_proj)
    dq, dk, dv = attention_backward(split_heads(da, n_head), c_att)
    dqkv = xp.concatenate([merge_heads(dq), merge_heads(dk), merge_heads(dv)], axis=-1)
    dx, g_attn = linear_backward(dqkv, c_attn)
    return dx, {"c_attn": g_attn, "c_proj": g_proj}


# ---------------------------------------------------------------------- MLP sub-block
def mlp_forward(x, p):
    """Position-wise feed-forward: expand to d_ff, GELU, project back. x: (B, T, C) -> (B, T, C)"""
    h, c_fc = linear_forward(x, p["c_fc"])
    a, c_gelu = gelu_forward(h)
    y, c_proj = linear_forward(a, p["c_proj"])
    return y, (c_fc, c_gelu, c_proj)


def mlp_backward(dy, cache):
    c_fc, c_gelu, c_proj = cache
    da, g_proj = linear_backward(dy, c_proj)
    dh = gelu_backward(da, c_gelu)
    dx, g_fc = linear_backward(dh, c_fc)
    return dx, {"c_fc": g_fc, "c_proj": g_proj}


# ---------------------------------------------------------------------- dropout
class Dropout:
    """Inverted dropout for training: zero each number with probability ``p``, scale the rest by 1/(1-p).

    Every sequence of the batch has its own random stream (``seeds``: one integer per row), so the
    masks do not depend on how a batch is split across workers or micro-batches. Masks are drawn
    with NumPy and moved to the array's backend. As in GPT-2, the course applies it to the
    embedding output and to the two branches that write into the residual stream.
    """

    def __init__(self, p: float, seeds):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)
        self.gens = [np.random.default_rng(int(s)) for s in np.asarray(seeds).reshape(-1)]

    def mask(self, x):
        """A keep mask scaled by 1/(1-p), shaped and typed like x: (B, T, C)."""
        if len(self.gens) != x.shape[0]:
            raise ValueError(f"Dropout has {len(self.gens)} seeds for a batch of {x.shape[0]} rows")
        keep = np.stack([g.random(x.shape[1:], dtype=np.float32) for g in self.gens]) >= self.p
        m = keep.astype(np.dtype(x.dtype)) * np.dtype(x.dtype).type(1.0 / (1.0 - self.p))
        return array_module(x).asarray(m)


def dropout_forward(x, drop):
    """x * mask (a fresh mask from ``drop``); identity when ``drop`` is None. Any (B, ...) shape."""
    if drop is None or drop.p == 0.0:
        return x, None
    m = drop.mask(x)
    return x * m, m


def dropout_backward(dy, mask):
    return dy if mask is None else dy * mask


# ---------------------------------------------------------------------- decoder block
def block_forward(x, p, n_head, layout="dense", window=256, stride=32, c=8, eps=1e-5, drop=None,
                  for_backward=True):
    """One pre-LayerNorm decoder block: x + attn(ln_1(x)), then + mlp(ln_2(x)). (B, T, C) -> (B, T, C)

    ``drop``: a ``Dropout`` while training (applied to each branch before it is added), else None.
    ``for_backward=False``: inference; the returned cache cannot be used by ``block_backward``.
    """
    h, c_ln1 = layernorm_forward(x, p["ln_1"], eps)
    a, c_attn = self_attention_forward(h, p["attn"], n_head, layout, window, stride, c, for_backward)
    a, m_attn = dropout_forward(a, drop)
    x = x + a
    h, c_ln2 = layernorm_forward(x, p["ln_2"], eps)
    m, c_mlp = mlp_forward(h, p["mlp"])
    m, m_mlp = dropout_forward(m, drop)
    return x + m, (c_ln1, c_attn, m_attn, c_ln2, c_mlp, m_mlp)


def block_backward(dy, cache):
    c_ln1, c_attn, m_attn, c_ln2, c_mlp, m_mlp = cache
    dh, g_mlp = mlp_backward(dropout_backward(dy, m_mlp), c_mlp)
    dx_ln2, g_ln2 = layernorm_backward(dh, c_ln2)
    dx = dy + dx_ln2
    dh, g_attn = self_attention_backward(dropout_backward(dx, m_attn), c_attn)
    dx_ln1, g_ln1 = layernorm_backward(dh, c_ln1)
    return dx + dx_ln1, {"ln_1": g_ln1, "attn": g_attn, "ln_2": g_ln2, "mlp": g_mlp}


# ---------------------------------------------------------------------- embeddings
def embedding_forward(ids, wte, wpe, t0: int = 0):
    """Token embedding plus position embedding. ids: (B, T) int -> (B, T, C)"""
    T = ids.shape[1]
    return wte[ids] + wpe[t0:t0 + T], (ids, wte.shape, t0)


def embedding_backward(dx, cache):
    ids, wte_shape, t0 = cache
    xp = array_module(dx)
    C = dx.shape[-1]
    dwte = xp.zeros(wte_shape, dtype=dx.dtype)
    xp.add.at(dwte, ids.reshape(-1), dx.reshape(-1, C))  # repeated ids accumulate
    return dwte, dx.sum(axis=0)  # dwpe for positions t0 .. t0+T-1


# ---------------------------------------------------------------------- loss
def cross_entropy_forward(logits, targets):
    """Mean negative log-likelihood of ``targets`` under softmax(logits).

    logits: (B, T, V); targets: (B, T) int, where -1 marks a position that does not count.
    Returns (loss (scalar), cache).
    """
    xp = array_module(logits)
    z = logits - logits.max(axis=-1, keepdims=True)
    logsumexp = xp.log(xp.exp(z).sum(axis=-1, keepdims=True))
    logp = z - logsumexp
    mask = targets >= 0
    n = int(mask.sum())
    if n == 0:
        raise ValueError("cross_entropy: every target is -1 (masked); nothing to score")
    safe = xp.where(mask, targets, 0)
    picked = xp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
    loss = -(picked * mask).sum() / n
    return loss, (logp, safe, mask, n)


def cross_entropy_backward(dloss, cache):
    logp, safe, mask, n = cache
    xp = array_module(logp)
    dlogits = xp.exp(logp)  # softmax
    B, T, V = dlogits.shape
    rows = xp.arange(B * T)
    flat = dlogits.reshape(-1, V)
    flat[rows, safe.reshape(-1)] -= 1.0
    dlogits *= (mask[..., None] * (dloss / n)).astype(dlogits.dtype)
    return dlogits
