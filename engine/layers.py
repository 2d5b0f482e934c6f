"""Chapter 5, Layers: the pieces of a decoder block, each a forward/backward pair.

As in llm.c, every ``*_forward`` returns its output and a cache of what its
backward needs (a NamedTuple, its fields named and shaped below); every
``*_backward`` takes the gradient of the output and that cache, mirrors the
forward line by line, and returns the gradients of the inputs and of the
parameters. Shapes: B batch, T positions, C = d_model channels, H heads,
D = C / H head size, V vocabulary.

The plain formulas come first (``layernorm``, ``gelu``, ``softmax``,
``log_softmax``): what the book prints. The forward passes call their fused
twins in ``kernels`` (fewer passes over memory, the same numbers up to rounding;
``tests/test_kernels.py`` compares each pair), as llm.c keeps
``matmul_forward_naive`` next to ``matmul_forward``.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from . import grad_kernels, kernels
from .attention import attention_backward, attention_forward, attention_probs, cached_attention
from .backend import array_module

GELU_C = math.sqrt(2.0 / math.pi)


# ---------------------------------------------------------------------- the plain formulas
def layernorm(x, g, b, eps: float = 1e-5):
    """(x - mean) / sqrt(var + eps) * g + b over the last axis. x: (..., C); g, b: (C,) -> (..., C)"""
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * g + b


def gelu(x):
    """GELU, tanh form as in GPT-2: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). Any shape."""
    xp = array_module(x)
    return 0.5 * x * (1.0 + xp.tanh(GELU_C * (x + 0.044715 * x ** 3)))


def softmax(x, temperature: float = 1.0):
    """exp(x / T) normalised over the last axis, shifted by the row max first (no overflow). Any (..., V)."""
    xp = array_module(x)
    e = xp.exp((x - x.max(axis=-1, keepdims=True)) / temperature)
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(x):
    """log softmax(x) over the last axis: x - max - log(sum(exp(x - max))). Any (..., V)."""
    xp = array_module(x)
    z = x - x.max(axis=-1, keepdims=True)
    return z - xp.log(xp.exp(z).sum(axis=-1, keepdims=True))


# ---------------------------------------------------------------------- caches
class LayerNormCache(NamedTuple):
    xhat: object   # (B, T, C) normalised input
    rstd: object   # (B, T, 1) 1 / standard deviation
    g: object      # (C,) gain


class LinearCache(NamedTuple):
    x: object      # (..., C_in) input
    w: object      # (C_in, C_out) weight


class GeluCache(NamedTuple):
    x: object      # input, any shape
    t: object      # tanh(sqrt(2/pi) (x + 0.044715 x^3)), same shape


class AttentionLayerCache(NamedTuple):
    c_attn: LinearCache   # the q, k, v projection
    att: object           # attention.AttentionCache (None at inference)
    c_proj: LinearCache   # the output projection
    n_head: int


class MLPCache(NamedTuple):
    c_fc: LinearCache
    gelu: GeluCache
    c_proj: LinearCache


class BlockCache(NamedTuple):
    ln_1: LayerNormCache
    attn: AttentionLayerCache
    drop_attn: object     # (B, T, C) dropout mask of the attention branch, or None
    ln_2: LayerNormCache
    mlp: MLPCache
    drop_mlp: object      # (B, T, C) dropout mask of the MLP branch, or None


class EmbeddingCache(NamedTuple):
    ids: object           # (B, T) token ids
    wte_shape: tuple      # (V, C)
    t0: int               # position of the first token


class BlockShape(NamedTuple):
    """What one block needs to know of the model: heads, its attention layout, LayerNorm epsilon."""
    n_head: int
    layout: str = "dense"
    window: int = 256
    stride: int = 32
    c: int = 8
    eps: float = 1e-5

    @classmethod
    def of(cls, cfg, layer: int = 0) -> "BlockShape":
        """Layer ``layer`` of a ``GPTConfig``."""
        return cls(cfg.n_head, cfg.layer_layouts()[layer], cfg.window, cfg.stride, cfg.fixed_c,
                   cfg.layer_norm_epsilon)


def _shape(cfg, layer) -> tuple[BlockShape, int]:
    """(BlockShape, layer index) from ``(cfg, layer)``: a ``GPTConfig`` and a layer, or a ``BlockShape``."""
    if isinstance(cfg, BlockShape):
        return cfg, layer
    if not hasattr(cfg, "layer_layouts"):
        raise TypeError(f"blocks take (x, params, cfg, layer) with cfg a GPTConfig or a BlockShape(n_head, layout, "
                        f"...), got {type(cfg).__name__} {cfg!r}")
    return BlockShape.of(cfg, layer), layer


# ---------------------------------------------------------------------- LayerNorm
def layernorm_forward(x, p, eps: float = 1e-5):
    """Normalise each position's C numbers to mean 0, variance 1, then scale by g and shift by b (``layernorm``).

    x: (B, T, C); p: {"g": (C,), "b": (C,)} -> (B, T, C)
    """
    y, xhat, rstd = kernels.layernorm(x, p["g"], p["b"], eps)  # ``layernorm`` above, in fewer passes
    return y, LayerNormCache(xhat, rstd, p["g"])


def layernorm_backward(dy, cache: LayerNormCache):
    """dy: (B, T, C) -> dx (B, T, C), {"g": (C,), "b": (C,)}. With dxhat = dy * g:
    dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dg = sum(dy * xhat), db = sum(dy)
    (``grad_kernels.layernorm_grad`` computes exactly this, in fewer passes, across cores)."""
    xhat, rstd, g = cache
    dx, dg, db = grad_kernels.layernorm_grad(dy, xhat, rstd, g)
    return dx, {"g": dg, "b": db}


# ---------------------------------------------------------------------- Linear
def linear_forward(x, p):
    """x @ w + b. x: (..., C_in); p: {"w": (C_in, C_out), "b": (C_out,)} -> (..., C_out)"""
    w = p["w"]
    # one 2-D product over all positions (B*T rows): a single GEMM on every backend
    y = kernels.linear(x.reshape(-1, x.shape[-1]), w, p["b"])  # x @ w + b, rows split across cores
    return y.reshape(*x.shape[:-1], w.shape[-1]), LinearCache(x, w)


def unembed(x, wte):
    """Logits with the tied embedding: x @ wte.T as one 2-D product. x: (..., C); wte: (V, C) -> (..., V)"""
    return kernels.linear(x.reshape(-1, x.shape[-1]), wte.T).reshape(*x.shape[:-1], wte.shape[0])


def linear_backward(dy, cache: LinearCache):
    x, w = cache
    x2 = x.reshape(-1, x.shape[-1])
    dy2 = dy.reshape(-1, dy.shape[-1])
    dx = kernels.linear(dy2, w.T)  # dy @ w.T, rows across cores
    return dx.reshape(*dy.shape[:-1], w.shape[0]), {"w": kernels.linear(x2.T, dy2),  # x2.T @ dy2
                                                    "b": grad_kernels.column_sums(dy2)}  # dy2.sum(axis=0)


# ---------------------------------------------------------------------- GELU
def gelu_forward(x, for_backward: bool = True):
    """``gelu`` above, keeping t = tanh(...) for the backward pass (unless ``for_backward=False``). Any shape.

    ``kernels.gelu`` computes it with two buffers and no temporaries (one fused kernel on a GPU).
    """
    out, t = kernels.gelu(x, keep_tanh=for_backward)
    return out, GeluCache(x, t)


def gelu_backward(dy, cache: GeluCache):
    """dy * GELU'(x) = dy * (0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)), the
    derivative of ``gelu`` with t = tanh(u) kept from the forward pass (``grad_kernels.gelu_grad``
    computes exactly this, in fewer passes, across cores). Any shape."""
    x, t = cache
    return grad_kernels.gelu_grad(dy, x, t)


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
def self_attention_forward(x, p, cfg, layer=0, *, for_backward=True, kv=None, record=None):
    """Multi-head causal self-attention: project to q, k, v, attend per head, merge, project.

    x: (B, T, C); p: {"c_attn": {w (C, 3C), b}, "c_proj": {w (C, C), b}} -> (B, T, C).
    ``cfg, layer``: a ``GPTConfig`` and this layer's index (its attention layout), or a ``BlockShape``
    (``BlockShape(n_head)``: dense). ``for_backward=False``: inference, the attention
    keeps no probabilities for a backward pass. ``kv``: a ``generate.KVCache``; the new keys and
    values are written at positions kv.length .. and the queries attend to every cached key.
    ``record``: an ``XRayRecord`` that collects this layer's attention weights (B, H, T, T).
    """
    s, layer = _shape(cfg, layer)
    qkv, c_attn = linear_forward(x, p["c_attn"])
    q, k, v = split_qkv(qkv, s.n_head)
    if record is not None and record.attention is not None:
        record.attention.append(attention_probs(q, k, s.layout, s.window, s.stride, s.c))
    if kv is None:
        a, c_att = attention_forward(q, k, v, s.layout, s.window, s.stride, s.c, for_backward)
    else:  # generation: keep the new keys and values, attend over everything cached
        t0, Tn = kv.length, q.shape[-2]
        kv.k[layer, :, :, t0:t0 + Tn] = k
        kv.v[layer, :, :, t0:t0 + Tn] = v
        if t0 == 0:  # prefill: the layout's own (sparse where it can be) attention
            a, c_att = attention_forward(q, k, v, s.layout, s.window, s.stride, s.c, for_backward=False)
        else:
            a, c_att = cached_attention(q, kv.k[layer], kv.v[layer], t0, s.layout, s.window, s.stride, s.c), None
    y, c_proj = linear_forward(merge_heads(a), p["c_proj"])
    return y, AttentionLayerCache(c_attn, c_att, c_proj, s.n_head)


def self_attention_backward(dy, cache: AttentionLayerCache):
    xp = array_module(dy)
    da, g_proj = linear_backward(dy, cache.c_proj)
    dq, dk, dv = attention_backward(split_heads(da, cache.n_head), cache.att)
    dqkv = xp.concatenate([merge_heads(dq), merge_heads(dk), merge_heads(dv)], axis=-1)
    dx, g_attn = linear_backward(dqkv, cache.c_attn)
    return dx, {"c_attn": g_attn, "c_proj": g_proj}


# ---------------------------------------------------------------------- MLP sub-block
def mlp_forward(x, p, for_backward: bool = True):
    """Position-wise feed-forward: expand to d_ff, GELU, project back. x: (B, T, C) -> (B, T, C)

    ``for_backward=False``: inference; the returned cache cannot be used by ``mlp_backward``."""
    h, c_fc = linear_forward(x, p["c_fc"])
    a, c_gelu = gelu_forward(h, for_backward)
    y, c_proj = linear_forward(a, p["c_proj"])
    return y, MLPCache(c_fc, c_gelu, c_proj)


def mlp_backward(dy, cache: MLPCache):
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
def block_forward(x, p, cfg, layer=0, *, drop=None, for_backward=True, kv=None, record=None):
    """One pre-LayerNorm decoder block: x + attn(ln_1(x)), then + mlp(ln_2(x)). (B, T, C) -> (B, T, C)

    ``cfg, layer``: a ``GPTConfig`` and this block's index, or a ``BlockShape``.
    ``drop``: a ``Dropout`` while training (applied to each branch before it is added), else None.
    ``for_backward=False``: inference; the returned cache cannot be used by ``block_backward``.
    ``kv``, ``record``: see ``self_attention_forward``.
    """
    s, layer = _shape(cfg, layer)
    h, c_ln1 = layernorm_forward(x, p["ln_1"], s.eps)
    a, c_attn = self_attention_forward(h, p["attn"], s, layer, for_backward=for_backward, kv=kv, record=record)
    a, m_attn = dropout_forward(a, drop)
    x = x + a
    h, c_ln2 = layernorm_forward(x, p["ln_2"], s.eps)
    m, c_mlp = mlp_forward(h, p["mlp"], for_backward)
    m, m_mlp = dropout_forward(m, drop)
    return x + m, BlockCache(c_ln1, c_attn, m_attn, c_ln2, c_mlp, m_mlp)


def block_backward(dy, cache: BlockCache):
    dh, g_mlp = mlp_backward(dropout_backward(dy, cache.drop_mlp), cache.mlp)
    dx_ln2, g_ln2 = layernorm_backward(dh, cache.ln_2)
    dx = dy + dx_ln2
    dh, g_attn = self_attention_backward(dropout_backward(dx, cache.drop_attn), cache.attn)
    dx_ln1, g_ln1 = layernorm_backward(dh, cache.ln_1)
    return dx + dx_ln1, {"ln_1": g_ln1, "attn": g_attn, "ln_2": g_ln2, "mlp": g_mlp}


# ---------------------------------------------------------------------- embeddings
def embedding_forward(ids, wte, wpe, t0: int = 0):
    """Token embedding plus position embedding. ids: (B, T) int -> (B, T, C)"""
    T = ids.shape[1]
    return wte[ids] + wpe[t0:t0 + T], EmbeddingCache(ids, wte.shape, t0)


def embedding_backward(dx, cache: EmbeddingCache):
    ids, wte_shape, t0 = cache
    xp = array_module(dx)
    C = dx.shape[-1]
    dwte = xp.zeros(wte_shape, dtype=dx.dtype)
    xp.add.at(dwte, ids.reshape(-1), dx.reshape(-1, C))  # repeated ids accumulate
    return dwte, dx.sum(axis=0)  # dwpe for positions t0 .. t0+T-1
